"""How the runtime serves connections: kept alive between requests (gunicorn's gthread
worker), the Unix socket the watchdog offers (``NANOFAAS_RUNTIME_SOCKET``), and ``async def``
handlers on one long-lived event loop."""

from __future__ import annotations

import http.client
import json
import os
import socket
import uuid

import pytest

from test_process import start_runtime


class UnixHTTPConnection(http.client.HTTPConnection):
    """HTTP over a Unix socket: ``address`` is a path or an abstract name (bytes with a NUL)."""

    def __init__(self, address: str | bytes, timeout: float = 10):
        super().__init__("localhost", timeout=timeout)
        self._address = address

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self._address)


def call(conn: http.client.HTTPConnection, body: dict, eid: str) -> tuple[int, dict, str | None]:
    conn.request("POST", "/invoke", body=json.dumps(body), headers={"X-Execution-Id": eid})
    resp = conn.getresponse()
    data = json.loads(resp.read())
    return resp.status, data, resp.getheader("Connection")


def local_port_of(conn: http.client.HTTPConnection) -> int:
    assert conn.sock is not None
    return conn.sock.getsockname()[1]


@pytest.mark.parametrize("threads", ["1", "4"])
def test_gunicorn_keeps_the_connection_alive(runtime, threads):
    proc, port = start_runtime(runtime, "gunicorn", THREADS=threads)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        first = None
        for i in range(5):
            status, body, connection = call(conn, {"input": {"pid": True}}, f"k{i}")
            assert status == 200, body
            assert connection != "close", "the runtime closed the connection after an answer"
            if first is None:
                first = local_port_of(conn)
            # http.client reconnects silently when the server closed: the local port tells.
            assert local_port_of(conn) == first, "a new connection was opened"
        # An error answer keeps it too.
        status, body, connection = call(conn, {"input": "x"}, "")
        assert status == 400 and connection != "close"
        assert local_port_of(conn) == first
    finally:
        conn.close()


@pytest.mark.parametrize("kind", ["abstract", "path"])
def test_gunicorn_serves_the_offered_unix_socket(runtime, tmp_path, kind):
    if kind == "abstract":
        name = f"@nanofaas-test/{uuid.uuid4().hex}"
        address: str | bytes = b"\0" + name[1:].encode()
    else:
        name = str(tmp_path / "rt.sock")
        address = name
    proc, port = start_runtime(runtime, "gunicorn", NANOFAAS_RUNTIME_SOCKET=name)
    listening = proc.wait_for_log("listening")
    assert listening["socket"] == name
    conn = UnixHTTPConnection(address)
    try:
        pids = []
        for i in range(3):
            status, body, connection = call(conn, {"input": {"pid": True}}, f"u{i}")
            assert status == 200, body
            assert connection != "close"
            pids.append(body["pid"])
        assert len(set(pids)) == 1
        conn.request("GET", "/health")
        resp = conn.getresponse()
        assert resp.status == 200 and json.loads(resp.read()) == {"status": "ok"}
    finally:
        conn.close()
    # The port still answers too.
    tcp = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        assert call(tcp, {"input": {"pid": True}}, "t")[0] == 200
    finally:
        tcp.close()
    proc.proc.terminate()
    assert proc.wait(timeout_s=10) == 0
    errors = [e for e in map(_json, proc.lines) if e and e.get("level") == "ERROR"]
    assert not errors, errors
    if kind == "path":
        assert not os.path.exists(name), "the socket file was left behind"
    else:
        with socket.socket(socket.AF_UNIX) as s, pytest.raises(OSError):
            s.connect(address)


def test_an_unusable_offered_socket_falls_back_to_the_port(runtime, tmp_path):
    name = str(tmp_path / "no-such-dir" / "rt.sock")
    proc, port = start_runtime(runtime, "gunicorn", NANOFAAS_RUNTIME_SOCKET=name)
    warning = proc.wait_for_log("cannot listen on NANOFAAS_RUNTIME_SOCKET; serving on the port only")
    assert warning["level"] == "WARNING" and warning["socket"] == name
    assert proc.wait_for_log("listening")["socket"] is None
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        assert call(conn, {"input": {"pid": True}}, "f")[0] == 200
    finally:
        conn.close()


def test_werkzeug_ignores_the_offered_socket(runtime):
    name = f"@nanofaas-test/{uuid.uuid4().hex}"
    proc, port = start_runtime(runtime, "werkzeug", NANOFAAS_RUNTIME_SOCKET=name)
    assert proc.wait_for_log("listening")["socket"] is None
    with socket.socket(socket.AF_UNIX) as s, pytest.raises(OSError):
        s.connect(b"\0" + name[1:].encode())


@pytest.mark.parametrize("backend", ["gunicorn", "werkzeug"])
def test_async_handlers_run_on_one_long_lived_loop(runtime, backend):
    proc, port = start_runtime(runtime, backend, HANDLER_MODULE="async_loop", THREADS="2")
    seen = []
    for i in range(4):
        # A new connection each time: werkzeug serves each on a thread of its own.
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            status, body, _ = call(conn, {"input": None}, f"a{i}")
        finally:
            conn.close()
        assert status == 200, body
        seen.append(body)
    assert len({b["loop"] for b in seen}) == 1, seen
    assert len({b["thread"] for b in seen}) == 1, seen


def _json(line: str):
    try:
        v = json.loads(line)
    except ValueError:
        return None
    return v if isinstance(v, dict) else None
