"""load_handler: the handler is found on HANDLER_PATH, and every way it can be unusable is one
clear message."""

from __future__ import annotations

import shutil

import pytest

from conftest import HANDLERS
from nanofaas_runtime.handler import HandlerLoadError, load_handler


def test_loads_from_handler_path():
    fn = load_handler("handler", "handle", str(HANDLERS))
    assert fn({"input": "abc", "metadata": {}}) == {"echo": "ABC"}


def test_loads_a_module_from_a_package(tmp_path):
    pkg = tmp_path / "nf_pkg_ok"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "fns.py").write_text("def go(request):\n    return request['input'] * 2\n")
    fn = load_handler("nf_pkg_ok.fns", "go", str(tmp_path))
    assert fn({"input": 21}) == 42


def _error(module: str, function: str = "handle", path=HANDLERS) -> str:
    with pytest.raises(HandlerLoadError) as e:
        load_handler(module, function, str(path))
    return str(e.value)


def test_missing_module():
    msg = _error("nf_no_such_handler_module")
    assert "module 'nf_no_such_handler_module' not found" in msg
    assert str(HANDLERS) in msg


def test_missing_dependency_is_not_reported_as_missing_module():
    msg = _error("missing_dependency")
    assert "importing 'missing_dependency' failed" in msg
    assert "nanofaas_test_no_such_dependency" in msg


def test_syntax_error(tmp_path):
    shutil.copy(HANDLERS / "syntax_error.py.txt", tmp_path / "nf_syntax_error.py")
    msg = _error("nf_syntax_error", path=tmp_path)
    assert "syntax error in" in msg and "nf_syntax_error.py, line 1" in msg


def test_module_raising_on_import():
    msg = _error("raises_on_import")
    assert "RuntimeError: database not reachable" in msg


def test_missing_function():
    msg = _error("handler", "nope")
    assert "has no attribute 'nope'" in msg


def test_not_callable():
    msg = _error("not_callable")
    assert "'handle' is a int, not a function" in msg


def test_wrong_arity():
    msg = _error("no_args")
    assert "must accept one positional argument" in msg


@pytest.mark.parametrize(("module", "function"), [("bad-name", "handle"), ("handler", "x.y")])
def test_names_validated(module, function):
    msg = _error(module, function)
    assert "is not a Python" in msg
