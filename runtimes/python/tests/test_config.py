"""Settings.from_env: defaults, precedence of empty values, and clear errors."""

from __future__ import annotations

import os

import pytest

from nanofaas_runtime.config import ConfigError, Settings


def test_defaults():
    s = Settings.from_env({})
    assert (s.handler_module, s.handler_function) == ("handler", "handle")
    assert s.handler_path == os.getcwd()
    assert (s.host, s.port, s.workers) == ("127.0.0.1", 8080, 1)
    assert s.server == "gunicorn"  # installed in the test environment
    assert s.execution_id is None and s.callback_url is None and s.callback_token is None
    assert (s.callback_attempts, s.callback_timeout_s, s.callback_backoff_s) == (3, 2.0, 0.1)
    assert s.worker_timeout_s == 0 and s.graceful_timeout_s == 10
    assert s.max_request_bytes == 6 * 1024 * 1024
    assert s.log_level == "INFO"


def test_values_are_read_and_blank_means_unset(tmp_path):
    s = Settings.from_env(
        {
            "HANDLER_MODULE": "pkg.fn",
            "HANDLER_FUNCTION": "run",
            "HANDLER_PATH": str(tmp_path),
            "EXECUTION_ID": "  ",
            "CALLBACK_URL": "http://cp:8080/v1/internal/executions/",
            "CALLBACK_TOKEN": "t",
            "PORT": "0",
            "HOST": "0.0.0.0",
            "NANOFAAS_PY_SERVER": "Werkzeug",
            "WORKERS": "3",
            "THREADS": "4",
            "CALLBACK_TIMEOUT_MS": "250",
            "LOG_LEVEL": "warn",
        }
    )
    assert (s.handler_module, s.handler_function, s.handler_path) == (
        "pkg.fn",
        "run",
        str(tmp_path),
    )
    assert s.execution_id is None
    assert s.callback_url == "http://cp:8080/v1/internal/executions/"
    assert (s.port, s.host, s.server, s.workers) == (0, "0.0.0.0", "werkzeug", 3)
    assert s.threads == 4
    assert s.callback_timeout_s == 0.25
    assert s.log_level == "WARNING"


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"PORT": "http"}, "PORT='http' is not an integer"),
        ({"PORT": "70000"}, "PORT=70000 is out of range"),
        ({"WORKERS": "0"}, "WORKERS=0 is out of range"),
        ({"THREADS": "0"}, "THREADS=0 is out of range"),
        ({"NANOFAAS_PY_SERVER": "uvicorn"}, "NANOFAAS_PY_SERVER='uvicorn' is not one of"),
        ({"LOG_LEVEL": "loud"}, "LOG_LEVEL='LOUD'"),
        ({"CALLBACK_URL": "cp:8080/cb"}, "must start with http"),
        ({"CALLBACK_URL": "http:///cb"}, "has no host"),
        ({"CALLBACK_URL": "http://cp/cb?x=1"}, "query"),
        ({"CALLBACK_URL": "http://cp:99999/cb"}, "not a valid URL"),
        ({"HANDLER_PATH": "/nonexistent/nanofaas/handlers"}, "is not a directory"),
        ({"EXECUTION_ID": "a\nb"}, "EXECUTION_ID contains control characters"),
        ({"MAX_REQUEST_BYTES": "-1"}, "MAX_REQUEST_BYTES=-1 is out of range"),
    ],
)
def test_bad_values_are_clear_errors(env, needle):
    with pytest.raises(ConfigError) as e:
        Settings.from_env(env)
    assert needle in str(e.value)
