"""ASGI 3 applications behind a real Apache, in embedded mode (the httpd child's own event loop)
and daemon mode: interface detection and override, the HTTP scope, receive()/send() with
streaming, disconnect and error semantics, pathsend, lifespan, real concurrency on the event
loop, and WebSockets. Embedded ASGI on each MPM and the daemon-only rules (request-timeout, a
killed daemon) have tests of their own. The application is tests/apps/asgi_app.py (stdlib
only); raw sockets and harness.http_request are the clients."""

import json
import os
import signal
import socket
import threading
import time

import pytest

import harness


def _start(srv, extra="", **mount):
    script = srv.app("asgi_app.py")
    srv.start(srv.mount("/api", script, **mount) + extra)
    return script


def _wait_file(path, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            try:
                return json.loads(path.read_text())
            except ValueError:
                pass
        time.sleep(0.02)
    raise AssertionError(f"{path} was not written within {timeout} s")


def test_scope(apache_factory, mode):
    srv = apache_factory()
    _start(srv)
    r = srv.request("GET", "/api/scope/caf%C3%A9%20x?q=%20a&b=2",
                    headers=[("X-First", "1"), ("X-Multi-Word", "two"), ("Accept", "*/*")])
    assert r.status == 200, r
    s = r.json()
    assert s["type"] == "http"
    assert s["asgi"] == {"version": "3.0", "spec_version": "2.4"}
    assert s["http_version"] == "1.1"
    assert s["method"] == "GET"
    assert s["scheme"] == "http"
    # path is decoded and includes root_path; raw_path is what the client sent.
    assert s["root_path"] == "/api"
    assert s["path"] == "/api/scope/café x"
    assert s["raw_path"] == "/api/scope/caf%C3%A9%20x"
    assert s["query_string"] == "q=%20a&b=2"
    names = [h[0] for h in s["headers"]]
    # Lower-cased, in the order the client sent them.
    assert names[:2] == ["host", "connection"] and names[2:] == ["x-first", "x-multi-word",
                                                                 "accept"], names
    assert dict(s["headers"])["x-multi-word"] == "two"
    assert s["client"][0] == "127.0.0.1" and s["client"][1] > 0
    assert s["server"] == ["127.0.0.1", srv.port]
    assert s["extensions"] == {"http.response.pathsend": {}, "http.response.zerocopysend": {}}
    assert s["body_len"] == 0


def test_request_bodies(apache_factory, mode):
    srv = apache_factory()
    # Two mounts of one daemon group: ASGI runs in the main interpreter (%{GLOBAL}).
    _start(srv, extra="<Location /forced>\nWSGIApplicationInterface asgi\n</Location>\n"
           + srv.mount("/forced", srv.apps / "asgi_app.py", application_group="%{GLOBAL}"),
           application_group="%{GLOBAL}")
    assert srv.request("POST", "/api/echo", body=b"hello").body == b"hello"
    big = os.urandom(3 * 1024 * 1024 + 7)
    r = srv.request("POST", "/api/echo", body=big)
    assert r.status == 200 and r.body == big
    # Chunked bodies: refused (411) as for WSGI unless WSGIChunkedRequest On or the location
    # says ASGI, where the server de-chunks as the ASGI spec wants.
    body = os.urandom(100_000)
    assert srv.request("POST", "/api/echo", body=body, chunked=True).status == 411
    r = srv.request("POST", "/forced/echo", body=body, chunked=True, chunk_size=8192)
    assert r.status == 200 and r.body == body
    srv.allow_log(r"RW0011")


def test_response_framing(apache_factory, mode):
    srv = apache_factory()
    _start(srv)
    # One body message: Content-Length; transfer-encoding/connection from the app dropped.
    r = srv.request("GET", "/api/te")
    assert r.status == 200 and r.body == b"dropped"
    assert r.headers.get("Content-Length") == "7" and r.framing == "length", r
    # Several: chunked, each message flushed as it is sent.
    r = srv.request("GET", "/api/stream?n=3&gap=0.4")
    assert r.status == 200 and r.body == b"chunk 0\nchunk 1\nchunk 2\n"
    assert r.framing == "chunked"
    first = next(t for t, b in r.pieces if b)
    assert first < r.pieces[-1][0] - 0.3, r.pieces
    # HEAD: the head only.
    r = srv.request("HEAD", "/api/te")
    assert r.status == 200 and r.body == b"" and r.headers.get("Content-Length") == "7"


def test_pathsend(apache_factory, mode):
    srv = apache_factory()
    data = os.urandom(300_000)
    srv.write_file("data/file.bin", data)
    _start(srv)
    r = srv.request("GET", "/api/pathsend")
    assert r.status == 200 and r.body == data
    assert r.headers.get("Content-Type") == "application/octet-stream"
    # zerocopysend: the whole file from its position (moved past what was sent), a range,
    # and a range followed by more body (chunked then).
    r = srv.request("GET", "/api/zerocopy?skip=1000")
    assert r.status == 200 and r.body == data[1000:], (r.status, len(r.body))
    assert r.headers.get("Content-Length") == str(len(data) - 1000)
    r = srv.request("GET", "/api/zerocopy?offset=5&count=70000")
    assert r.body == data[5:70005] and r.headers.get("Content-Length") == "70000"
    r = srv.request("GET", "/api/zerocopy?skip=10&count=100&more=1")
    assert r.body == data[10:110] + b"END 110" and r.framing == "chunked"
    # A range beyond the file: the application's send() raises (a 500, as for any error).
    srv.allow_log(r"RW0007|not within")
    assert srv.request("GET", "/api/zerocopy?offset=299000&count=5000").status == 500
    r = srv.request("HEAD", "/api/zerocopy?offset=5&count=70000")
    assert r.body == b"" and r.headers.get("Content-Length") == "70000"


def test_client_disconnect_during_long_poll(apache_factory, mode):
    srv = apache_factory()
    _start(srv)
    s = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
    s.sendall(b"GET /api/after-disconnect?tag=gone HTTP/1.1\r\nHost: x\r\n\r\n")
    time.sleep(0.5)
    s.close()
    seen = _wait_file(srv.state / "gone")
    # receive() waited for the client to go away (how long depends on when the request reached
    # the application; test_receive_blocks_until_the_response_is_done checks that it blocks),
    # then said so; send() then raised an OSError subclass, not logged as an error.
    assert seen["type"] == "http.disconnect", seen
    assert seen["raised"] == "ClientDisconnected" and seen["is_oserror"], seen
    # The connection to the daemon is reused, and the next request is served.
    assert srv.request("GET", "/api/te").status == 200
    assert "RW0020" not in srv.error_log() and "Traceback" not in srv.error_log()


def test_receive_blocks_until_the_response_is_done(apache_factory, mode):
    srv = apache_factory()
    _start(srv)
    r = srv.request("GET", "/api/wait-done")
    assert r.status == 200 and r.body == b"blocked until done", r
    assert _wait_file(srv.state / "wait-done") == {"early": False, "after": "http.disconnect"}


def test_application_errors(apache_factory, mode):
    srv = apache_factory()
    _start(srv)
    srv.allow_log(r"RW0007|RW0020")
    r = srv.request("GET", "/api/raise")
    assert r.status == 500
    assert srv.wait_for_log(r"RW0007: exception in the ASGI application")
    assert srv.wait_for_log(r"ValueError: boom before start")
    assert srv.request("GET", "/api/no-response").status == 500
    assert srv.wait_for_log(r"RW0020: the ASGI application returned without sending a response")
    assert srv.request("GET", "/api/start-only").status == 500
    assert srv.wait_for_log(r"RW0020: the ASGI application returned after http.response.start")
    assert srv.request("GET", "/api/bad-header").status == 500
    assert srv.wait_for_log(r"ValueError: ASGI: header 'x-bad' value contains CR, LF")
    # After the head: the response is cut short (no final chunk), never a second status.
    r = srv.request("GET", "/api/raise-late")
    assert r.status == 200 and r.body == b"partial" and not r.complete
    assert srv.wait_for_log(r"ValueError: boom after start")
    # Still serving.
    assert srv.request("GET", "/api/te").status == 200


def test_lifespan_state_startup_and_shutdown(apache_factory, mode):
    srv = apache_factory(daemon_options="processes=1 threads=2")
    _start(srv)
    pid = int(srv.request("GET", "/api/pid").body)
    r = srv.request("GET", "/api/state")
    # A shallow copy of the lifespan state per request: the counter set at startup (0) is
    # seen, and one request's rebinding does not leak into the next.
    assert r.json() == {"counter": 1, "has_state": True}
    assert srv.request("GET", "/api/state").json() == {"counter": 1, "has_state": True}
    assert _wait_file(srv.state / f"startup-{pid}") == 1
    srv.stop()
    assert _wait_file(srv.state / f"shutdown-{pid}", timeout=2) is True


_FAILING = """
async def application(scope, receive, send):
    if scope["type"] == "lifespan":
        m = await receive()
        await send({"type": "lifespan.startup.failed", "message": "no database"})
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"served"})
"""

_UNSUPPORTED = """
async def application(scope, receive, send):
    if scope["type"] != "http":
        raise ValueError("Django can only handle ASGI/HTTP connections, not %s." % scope["type"])
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"no lifespan: %r" % ("state" in scope)})
"""


def test_lifespan_failed_and_unsupported(apache_factory, mode):
    srv = apache_factory(daemon_options="processes=1 threads=2")
    failing = srv.write_file("apps/failing.py", _FAILING)
    unsupported = srv.write_file("apps/unsupported.py", _UNSUPPORTED)
    # Two ASGI applications in one daemon process, both in its main interpreter.
    srv.start(srv.mount("/failing", failing, application_group="%{GLOBAL}")
              + srv.mount("/plain", unsupported, application_group="%{GLOBAL}"))
    srv.allow_log(r"RW0021")
    # Lifespan unsupported (raises on the lifespan scope): served, without "state".
    r = srv.request("GET", "/plain/")
    assert r.status == 200 and r.body == b"no lifespan: False"
    assert srv.wait_for_log(r"ASGI lifespan not supported by .*ValueError")
    # startup.failed: the request is not served, the message is logged, and the daemon
    # process is replaced (an httpd child cannot be: a request tries again later; see
    # test_embedded_lifespan_startup_is_tried_again).
    assert srv.request("GET", "/failing/").status == 500
    if mode == "daemon":
        assert srv.wait_for_log(r"RW0021: ASGI lifespan startup of .* failed: no database; "
                                r"this process does not serve it and is replaced")
        assert srv.wait_for_log(r"stopping: ASGI lifespan startup failed")
    else:
        assert srv.wait_for_log(r"RW0021: ASGI lifespan startup of .* failed: no database; "
                                r"its requests are answered 500; a request tries again in 5 s")


_WSGI = """
def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"wsgi"]
"""

_ASGI2 = """
class application:
    _asgi_double_callable = True
    def __init__(self, scope):
        self.scope = scope
    async def __call__(self, receive, send):
        pass
"""


def test_interface_detection_and_override(apache_factory, mode):
    srv = apache_factory()
    asgi = srv.app("asgi_app.py")
    wsgi = srv.write_file("apps/plain.wsgi", _WSGI)
    asgi2 = srv.write_file("apps/asgi2.py", _ASGI2)
    g = {"application_group": "%{GLOBAL}"}
    srv.start(srv.mount("/asgi", asgi, **g) + srv.mount("/wsgi", wsgi, **g)
              + srv.mount("/asgi-as-wsgi", asgi, application_interface="wsgi", **g)
              + srv.mount("/wsgi-as-asgi", wsgi, application_interface="asgi", **g)
              + srv.mount("/asgi2", asgi2, **g)
              + srv.mount("/sub", asgi))
    srv.allow_log(r"RW0007|RW0020|RW0022")
    assert srv.request("GET", "/asgi/te").body == b"dropped"
    assert srv.request("GET", "/wsgi").body == b"wsgi"
    # A wrong override: a clear 500 and one line saying what happened, never a hang.
    assert srv.request("GET", "/asgi-as-wsgi/te").status == 500
    assert srv.wait_for_log(r"TypeError: application\(\) missing 1 required positional "
                            r"argument: 'send'")
    assert srv.request("GET", "/wsgi-as-asgi").status == 500
    assert srv.wait_for_log(r"RW0020: calling <function application at .*> as an ASGI 3 "
                            r"application \(scope, receive, send\) raised TypeError: .*; is it "
                            r"a WSGI callable under application-interface=asgi\?")
    # ASGI runs in the main interpreter: in a sub-interpreter it is refused with the fix.
    assert srv.request("GET", "/sub/te").status == 500
    assert srv.wait_for_log(r"RW0022: 'application' in '.*asgi_app.py' is an ASGI application "
                            r"in the sub-interpreter of application group '.*\|/sub'")
    # ASGI 2 is never guessed, and when marked it is refused with the fix.
    assert srv.request("GET", "/asgi2").status == 500
    assert srv.wait_for_log(r"RW0022: 'application' in '.*asgi2.py' is marked as an ASGI 2")


@pytest.mark.daemon_only
def test_request_timeout_cancels_the_task(apache_factory, mode):
    srv = apache_factory(daemon_options="processes=1 threads=2 request-timeout=1")
    _start(srv)
    srv.allow_log(r"RW0023")
    pid = srv.request("GET", "/api/pid").body
    # Before the response head: the task is cancelled, the client gets a 504.
    r = srv.request("GET", "/api/sleep?s=30", timeout=20)
    assert r.status == 504, r
    assert srv.wait_for_log(r"RW0023: the ASGI request ran longer than request-timeout \(1 s\); "
                            r"its task is cancelled")
    # After it: the response is cut short.
    r = srv.request("GET", "/api/stream?n=10&gap=0.5", timeout=20)
    assert r.status == 200 and not r.complete and r.body.startswith(b"chunk 0\n"), r
    # The process was not restarted for it (unlike a WSGI request-timeout).
    assert srv.request("GET", "/api/pid").body == pid


def test_directive_errors(apache_factory, mode):
    srv = apache_factory()
    rc, out = srv.configtest(srv.mount("/a", srv.app("asgi_app.py"),
                                       application_interface="asgi3"))
    assert rc != 0
    assert "application-interface='asgi3' is not valid; use auto, wsgi or asgi" in out, out
    rc, out = srv.configtest("WSGIApplicationInterface async\n")
    assert rc != 0
    assert "WSGIApplicationInterface: 'async' is not valid; use auto, wsgi or asgi" in out, out


def _sleep_together(srv, n, seconds=1):
    """`n` clients at once asking for /api/sleep?s=`seconds`: their statuses."""
    results = []

    def one():
        results.append(srv.request("GET", f"/api/sleep?s={seconds}", timeout=30).status)

    threads = [threading.Thread(target=one) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def test_requests_run_concurrently_on_the_loop(apache_factory, mode):
    # 200 requests that each await asyncio.sleep in ONE process: a daemon process with the
    # default options (15 threads), or one httpd child. They run as tasks on its event loop,
    # all at once, not one per thread (at most 15 at once in the daemon).
    sizing = ("StartServers 1\nServerLimit 1\nThreadLimit 200\nThreadsPerChild 200\n"
              "MaxRequestWorkers 200\nMinSpareThreads 1\nMaxSpareThreads 200\n")
    srv = apache_factory(daemon_options="", sizing=sizing)
    _start(srv)
    results = _sleep_together(srv, 200, seconds=3)
    assert results.count(200) == 200, results
    assert srv.request("GET", "/api/sleeping").body == b"200"


def _close_code(payload: bytes) -> int | None:
    return int.from_bytes(payload[:2], "big") if len(payload) >= 2 else None


def test_websocket_echo_and_close_from_the_client(apache_factory, mode):
    srv = apache_factory()
    _start(srv)
    ws = harness.WebSocket(srv.port, "/api/ws/echo?tag=c1")
    assert ws.accept_ok(), (ws.status, ws.headers.items)
    ws.send_text("héllo")
    assert ws.recv_message() == (0x1, "héllo".encode())
    big = os.urandom(3 * 1024 * 1024 + 5)  # larger than one protocol frame (1 MiB)
    ws.send_bytes(big)
    # It comes back as a binary frame and continuations (one per 1 MiB protocol frame).
    op, data = ws.recv()
    assert op == 0x2
    parts = [data]
    while sum(map(len, parts)) < len(big):
        op, data = ws.recv()
        assert op == 0x0
        parts.append(data)
    assert b"".join(parts) == big
    ws.send_frame(0x9, b"are you there")
    assert ws.recv() == (0xA, b"are you there")
    # A fragmented text message, a ping between its fragments.
    ws.send_frame(0x1, b"frag", fin=False)
    ws.send_frame(0x9, b"p")
    ws.send_frame(0x0, "mented ✓".encode(), fin=True)
    assert ws.recv() == (0xA, b"p")
    assert ws.recv_message() == (0x1, "fragmented ✓".encode())
    ws.close(4000, "client done")
    op, payload = ws.recv()
    assert op == 0x8 and _close_code(payload) == 4000
    assert _wait_file(srv.state / "ws-c1") == {"code": 4000, "reason": "client done"}
    ws.shutdown()
    # The daemon connection is reused for plain HTTP afterwards.
    assert srv.request("GET", "/api/te").status == 200


def test_websocket_closing_and_denial(apache_factory, mode):
    srv = apache_factory()
    _start(srv)
    srv.allow_log(r"RW0007")
    ws = harness.WebSocket(srv.port, "/api/ws/close")
    assert ws.accept_ok()
    assert ws.recv_message() == (0x1, b"bye")
    op, payload = ws.recv()
    assert op == 0x8 and _close_code(payload) == 4001 and payload[2:] == b"done"
    ws.shutdown()
    # Closed before accept: 403. A denial response of the application's own.
    assert harness.WebSocket(srv.port, "/api/ws/deny").status == 403
    deny = harness.WebSocket(srv.port, "/api/ws/deny-body")
    assert deny.status == 418 and deny.body().endswith(b"no tea here")
    # An exception after accept: close 1011 and the traceback in the log.
    ws = harness.WebSocket(srv.port, "/api/ws/raise")
    assert ws.accept_ok()
    assert ws.recv_message() == (0x1, b"about to fail")
    op, payload = ws.recv()
    assert op == 0x8 and _close_code(payload) == 1011
    assert srv.wait_for_log(r"RuntimeError: boom in a WebSocket")
    ws.shutdown()


def test_websocket_subprotocol_headers_and_protocol_errors(apache_factory, mode):
    srv = apache_factory()
    _start(srv)
    ws = harness.WebSocket(srv.port, "/api/ws/subprotocol",
                           headers=[("Sec-WebSocket-Protocol", "chat, v2.chat")])
    assert ws.accept_ok()
    assert ws.headers.get("Sec-WebSocket-Protocol") == "v2.chat"
    assert ws.headers.get("X-Ws") == "yes"
    info = json.loads(ws.recv_message()[1])
    assert info == {"offered": ["chat", "v2.chat"], "scheme": "ws", "path": "/api/ws/subprotocol"}
    ws.shutdown()
    # Invalid UTF-8 in a text message: 1007; an unmasked or RSV frame: 1002. The application
    # sees the disconnect with that code.
    ws = harness.WebSocket(srv.port, "/api/ws/echo?tag=utf8")
    ws.send_frame(0x1, b"\xff\xfe")
    op, payload = ws.recv()
    assert op == 0x8 and _close_code(payload) == 1007
    assert _wait_file(srv.state / "ws-utf8")["code"] == 1007
    ws.shutdown()
    ws = harness.WebSocket(srv.port, "/api/ws/echo?tag=rsv")
    ws.send_frame(0x1, b"x", rsv=0x40)
    op, payload = ws.recv()
    assert op == 0x8 and _close_code(payload) == 1002
    ws.shutdown()
    # A client gone without a close frame: the application sees 1006.
    ws = harness.WebSocket(srv.port, "/api/ws/echo?tag=gone")
    ws.send_text("x")
    assert ws.recv_message() == (0x1, b"x")
    ws.shutdown()
    assert _wait_file(srv.state / "ws-gone")["code"] == 1006
    # A bad handshake never reaches the application.
    s = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
    s.sendall(b"GET /api/ws/echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
              b"Connection: Upgrade\r\nSec-WebSocket-Version: 8\r\n"
              b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
    assert s.recv(100).startswith(b"HTTP/1.1 426")
    s.close()


def test_websocket_closed_on_graceful_restart(apache_factory, mode):
    srv = apache_factory()
    _start(srv)
    ws = harness.WebSocket(srv.port, "/api/ws/echo?tag=restart", timeout=30)
    assert ws.accept_ok()
    ws.send_text("before")
    assert ws.recv_message() == (0x1, b"before")
    srv.graceful()
    # The socket is closed, not left hanging: 1001 (the httpd child goes away) or 1012 (the
    # daemon restarts), whichever notices first; the application got the disconnect.
    op, payload = ws.recv_message()
    assert op == 0x8 and _close_code(payload) in (1001, 1012), (op, payload)
    assert _wait_file(srv.state / "ws-restart")["code"] in (1001, 1012)
    ws.shutdown()
    # New sockets are served by the new generation.
    ws = harness.WebSocket(srv.port, "/api/ws/echo?tag=after")
    assert ws.accept_ok()
    ws.send_text("after")
    assert ws.recv_message() == (0x1, b"after")
    ws.close()
    ws.shutdown()


@pytest.mark.daemon_only
def test_websocket_when_its_daemon_is_killed(apache_factory, mode):
    srv = apache_factory(daemon_options="processes=1 threads=2")
    _start(srv)
    srv.allow_log(r"exit signal|RW0016")
    pid = int(srv.request("GET", "/api/pid").body)
    ws = harness.WebSocket(srv.port, "/api/ws/echo?tag=killed", timeout=15)
    assert ws.accept_ok()
    ws.send_text("x")
    assert ws.recv_message() == (0x1, b"x")
    os.kill(pid, signal.SIGKILL)
    # The client is told at once (1011), not left with a socket that never answers.
    op, payload = ws.recv_message()
    assert op == 0x8 and _close_code(payload) == 1011, (op, payload)
    ws.shutdown()
    # The replacement serves new sockets.
    assert harness.wait_for(lambda: srv.request("GET", "/api/pid").status == 200, 30, 0.2)
    ws = harness.WebSocket(srv.port, "/api/ws/echo?tag=replaced")
    assert ws.accept_ok()
    ws.close()
    ws.shutdown()


ONE_CHILD = {
    "event": "StartServers 1\nServerLimit 1\nThreadsPerChild 8\nMaxRequestWorkers 8\n"
             "MinSpareThreads 1\nMaxSpareThreads 8\n",
    "worker": "StartServers 1\nServerLimit 1\nThreadsPerChild 8\nMaxRequestWorkers 8\n"
              "MinSpareThreads 1\nMaxSpareThreads 8\n",
    "prefork": "StartServers 1\nMinSpareServers 1\nMaxSpareServers 1\nServerLimit 1\n"
               "MaxRequestWorkers 1\n",
}


@pytest.mark.embedded_only
def test_embedded_asgi_on_each_mpm(apache_factory, mode, mpm):
    # One httpd child: its event loop serves HTTP, streams and a WebSocket, in the child's
    # process, and on a threaded MPM as many requests at once as the child has threads.
    srv = apache_factory(mpm=mpm, sizing=ONE_CHILD[mpm])
    _start(srv)
    pid = int(srv.request("GET", "/api/pid").body)
    assert pid in srv.child_pids(), (pid, srv.child_pids())
    assert srv.request("GET", "/api/te").body == b"dropped"
    r = srv.request("GET", "/api/stream?n=3&gap=0.1")
    assert r.body == b"chunk 0\nchunk 1\nchunk 2\n" and r.framing == "chunked"
    ws = harness.WebSocket(srv.port, "/api/ws/echo?tag=mpm", timeout=10)
    assert ws.accept_ok()
    ws.send_text("hello " + mpm)
    assert ws.recv_message() == (0x1, ("hello " + mpm).encode())
    ws.close()
    ws.shutdown()
    if mpm == "prefork":
        return
    # 8 requests that each await asyncio.sleep on one child's 8 threads wait together on the
    # loop.
    results = _sleep_together(srv, 8, seconds=2)
    assert results == [200] * 8
    assert srv.request("GET", "/api/sleeping").body == b"8"
    assert int(srv.request("GET", "/api/pid").body) == pid


_FLAKY_STARTUP = """
import os

MARK = @MARK@


async def application(scope, receive, send):
    if scope["type"] == "lifespan":
        await receive()
        if not os.path.exists(MARK):
            open(MARK, "w").close()
            await send({"type": "lifespan.startup.failed", "message": "database down"})
            return
        await send({"type": "lifespan.startup.complete"})
        await receive()
        await send({"type": "lifespan.shutdown.complete"})
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"up"})
"""


@pytest.mark.embedded_only
def test_embedded_lifespan_startup_is_tried_again(apache_factory, mode):
    # An httpd child cannot be replaced as a daemon process is: a failed startup answers 500
    # until a request 5 s later tries again (here the database is back by then).
    srv = apache_factory(sizing=ONE_CHILD["event"])
    app = srv.write_file("apps/flaky.py",
                         _FLAKY_STARTUP.replace("@MARK@", repr(str(srv.state / "tried"))))
    srv.start(srv.mount("/flaky", app))
    srv.allow_log(r"RW0021")
    assert srv.request("GET", "/flaky/").status == 500
    assert srv.wait_for_log(r"RW0021: ASGI lifespan startup of .* failed: database down; its "
                            r"requests are answered 500; a request tries again in 5 s")
    assert srv.request("GET", "/flaky/").status == 500
    assert harness.wait_for(lambda: srv.request("GET", "/flaky/").status == 200, 15, 0.5)
    assert srv.request("GET", "/flaky/").body == b"up"


_ASGI_HELLO = """
async def application(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"asgi"})
"""


@pytest.mark.embedded_only
def test_embedded_script_changes_interface(apache_factory, mode):
    # A mount known to be ASGI goes to the loop without the GIL; when its script is replaced by
    # a WSGI one (script reloading), the loop refuses it and the thread serves it as WSGI; and
    # back again. Eight threads, so the requests reach threads with and without a connection.
    srv = apache_factory(sizing=ONE_CHILD["event"])
    script = srv.write_file("apps/switch.py", _ASGI_HELLO)
    srv.start(srv.mount("/switch", script))

    def bodies():
        return {srv.request("GET", "/switch/").body for _ in range(24)}

    assert bodies() == {b"asgi"}
    for text, want in ((_WSGI, b"wsgi"), (_ASGI_HELLO, b"asgi")):
        mtime = script.stat().st_mtime + 2
        script.write_text(text)
        os.utime(script, (mtime, mtime))
        assert bodies() == {want}


def _rss_kib(pid: int) -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


def test_websocket_flood_and_slow_reader_in_bounded_memory(apache_factory, mode):
    # One process runs the loop (one httpd child, or one daemon process): its memory is
    # watched while 32 MiB go each way to a side that does not read.
    srv = apache_factory(sizing=ONE_CHILD["event"], daemon_options="processes=1 threads=2")
    _start(srv)
    pid = int(srv.request("GET", "/api/pid").body)
    n, size = 4096, 8192
    # A flood: the application sleeps without receiving while the client sends 32 MiB; the
    # loop stops reading (back-pressure down to the client's socket), then every message
    # arrives, in order.
    ws = harness.WebSocket(srv.port, f"/api/ws/sink?delay=3&n={n}", timeout=30)
    assert ws.accept_ok() and ws.recv_message() == (0x1, b"ready")
    base = _rss_kib(pid)
    peak = [base]

    def flood():
        for i in range(n):
            ws.send_bytes(i.to_bytes(8, "big") + bytes(size - 8))

    t = threading.Thread(target=flood)
    t.start()
    while t.is_alive():
        peak.append(_rss_kib(pid))
        time.sleep(0.1)
    t.join()
    assert ws.recv_message() == (0x1, f"{n} {n * size} True".encode())
    ws.close()
    ws.shutdown()
    assert max(peak) - base < 16 * 1024, (base, max(peak))
    # A slow reader: the application sends 32 MiB as fast as send() lets it to a client that
    # reads a little at a time; send() waits for the client instead of queueing.
    ws = harness.WebSocket(srv.port, f"/api/ws/firehose?n={n}&size={size}", timeout=30)
    assert ws.accept_ok()
    base = _rss_kib(pid)
    peak = [base]
    for i in range(n):
        op, data = ws.recv_message()
        assert op == 0x2 and data[:8] == i.to_bytes(8, "big"), (i, op, len(data))
        if i % 256 == 0:
            peak.append(_rss_kib(pid))
            time.sleep(0.05)
    assert ws.recv_message() == (0x1, b"done")
    ws.close()
    ws.shutdown()
    assert max(peak) - base < 16 * 1024, (base, max(peak))


def test_graceful_restarts_under_streaming_and_websocket_load(apache_factory, mode):
    # Three graceful restarts while two clients stream responses (fresh connections) and two
    # hold WebSocket sessions: no HTTP request fails (a response is never cut short), and a
    # WebSocket ends only with the documented close (1001 from a stopping httpd child, 1012
    # from a stopping daemon process) or cleanly, and its reconnect is served.
    srv = apache_factory()
    _start(srv)
    stop = threading.Event()
    lock = threading.Lock()
    streams, ws_sessions, ws_restarted, bad = [0], [0], [0], []
    end = time.monotonic() + 120
    want = b"".join(b"chunk %d\n" % i for i in range(6))

    def streamer():
        while not stop.is_set() and time.monotonic() < end:
            try:
                r = srv.request("GET", "/api/stream?n=6&gap=0.1", timeout=20)
            except OSError as e:
                r = e
            with lock:
                if isinstance(r, harness.Response) and r.status == 200 and r.complete \
                        and r.body == want:
                    streams[0] += 1
                else:
                    bad.append(("stream", repr(r)[:200]))

    def websocket_client():
        while not stop.is_set() and time.monotonic() < end:
            try:
                ws = harness.WebSocket(srv.port, "/api/ws/echo?tag=load", timeout=20)
            except OSError as e:
                with lock:
                    bad.append(("ws connect", repr(e)))
                continue
            try:
                if not ws.accept_ok():
                    with lock:
                        bad.append(("ws handshake", ws.status))
                    continue
                outcome = "clean"
                for i in range(5):
                    ws.send_text("m%d" % i)
                    op, data = ws.recv_message()
                    if op == 0x8:
                        code = _close_code(data)
                        outcome = "restart" if code in (1001, 1012) else f"close {code}"
                        break
                    if (op, data) != (0x1, b"m%d" % i):
                        outcome = f"wrong echo {op} {data[:20]!r}"
                        break
                    time.sleep(0.1)
                else:
                    ws.close()
                with lock:
                    if outcome == "clean":
                        ws_sessions[0] += 1
                    elif outcome == "restart":
                        ws_restarted[0] += 1
                    else:
                        bad.append(("ws", outcome))
            except (OSError, EOFError) as e:
                with lock:
                    bad.append(("ws", repr(e)))
            finally:
                ws.shutdown()

    threads = [threading.Thread(target=f) for f in (streamer, streamer, websocket_client,
                                                     websocket_client)]
    for t in threads:
        t.start()
    try:
        time.sleep(1.0)
        for _ in range(3):
            srv.graceful(probe_path="/api/pid")
            time.sleep(1.0)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=60)
    assert not bad, bad[:5]
    assert streams[0] >= 10 and ws_sessions[0] >= 2, (streams, ws_sessions, ws_restarted)


def test_a_blocked_loop_is_reported_and_replaced(apache_factory, mode):
    # A coroutine that blocks the loop with time.sleep: after 5 s the watchdog logs RW0024
    # with the loop thread's stack; in daemon mode deadlock-timeout replaces the process (an
    # httpd child cannot be: it only reports).
    srv = apache_factory(sizing=ONE_CHILD["event"],
                         daemon_options="processes=1 threads=2 deadlock-timeout=7")
    _start(srv)
    srv.allow_log(r"RW0024|deadlock-timeout|exit signal|RW0016")
    pid = int(srv.request("GET", "/api/pid").body)
    r = srv.request("GET", "/api/block?s=9", timeout=30)
    assert srv.wait_for_log(r"RW0024: the ASGI event loop has not run for [56] s: a coroutine "
                            r"is blocking it with a synchronous call")
    assert srv.wait_for_log(r"asgi_app.py\", line \d+, in application")
    assert srv.wait_for_log(r"time.sleep\(float\(args.get\(\"s\", \"1\"\)\)\)")
    if mode == "embedded":
        assert r.status == 200 and r.body == b"blocked"
        assert int(srv.request("GET", "/api/pid").body) == pid
    else:
        assert srv.wait_for_log(r"RW0024: the ASGI event loop has not run for [78] s "
                                r"\(deadlock-timeout\); the process is replaced")
        assert harness.wait_for(
            lambda: srv.request("GET", "/api/pid").body not in (b"", str(pid).encode()), 30, 0.3)


def test_websocket_chat_between_two_clients(apache_factory, mode):
    # Two clients in one process's chat room: each message reaches both, through one loop.
    srv = apache_factory(sizing=ONE_CHILD["event"], daemon_options="processes=1 threads=2")
    _start(srv)
    ann = harness.WebSocket(srv.port, "/api/ws/chat?name=ann", timeout=15)
    assert ann.accept_ok() and ann.recv_message() == (0x1, b"joined ann")
    bob = harness.WebSocket(srv.port, "/api/ws/chat?name=bob", timeout=15)
    assert bob.accept_ok() and bob.recv_message() == (0x1, b"joined bob")
    assert ann.recv_message() == (0x1, b"joined bob")
    ann.send_text("hi bob")
    assert ann.recv_message() == bob.recv_message() == (0x1, b"ann: hi bob")
    bob.send_text("hi ann")
    assert ann.recv_message() == bob.recv_message() == (0x1, b"bob: hi ann")
    for ws in (ann, bob):
        ws.close()
        assert ws.recv_message()[0] == 0x8
        ws.shutdown()


def test_websocket_message_size_limit(apache_factory, mode):
    # WSGIWebSocketMaxMessage for one location: a message up to the limit is echoed, a larger
    # one (sent whole, or as fragments that add up) closes the socket with 1009 and the
    # application gets that code; elsewhere the default (16 MiB) applies.
    srv = apache_factory()
    _start(srv, extra="<Location /api/ws/echo>\nWSGIWebSocketMaxMessage 4096\n</Location>\n")
    ws = harness.WebSocket(srv.port, "/api/ws/echo?tag=limit", timeout=15)
    assert ws.accept_ok()
    ws.send_bytes(b"x" * 4096)
    assert ws.recv_message() == (0x2, b"x" * 4096)
    ws.send_bytes(b"y" * 4097)
    op, payload = ws.recv_message()
    assert op == 0x8 and _close_code(payload) == 1009, (op, payload)
    ws.shutdown()
    assert _wait_file(srv.state / "ws-limit")["code"] == 1009
    ws = harness.WebSocket(srv.port, "/api/ws/echo?tag=frags", timeout=15)
    assert ws.accept_ok()
    ws.send_frame(0x1, b"a" * 3000, fin=False)
    ws.send_frame(0x0, b"b" * 3000, fin=True)
    op, payload = ws.recv_message()
    assert op == 0x8 and _close_code(payload) == 1009, (op, payload)
    ws.shutdown()
    # Another location keeps the default.
    ws = harness.WebSocket(srv.port, "/api/ws/sink?n=1", timeout=15)
    assert ws.accept_ok() and ws.recv_message() == (0x1, b"ready")
    ws.send_bytes((0).to_bytes(8, "big") + bytes(100_000))
    assert ws.recv_message() == (0x1, b"1 100008 True")
    ws.shutdown()
    rc, out = srv.configtest("WSGIWebSocketMaxMessage 10\n")
    assert rc != 0
    assert ("WSGIWebSocketMaxMessage: '10' is not valid; use a number of bytes from 1024 to "
            "1073741824") in out, out


def test_websockets_leave_a_child_free_on_prefork(apache_factory, mode):
    # Prefork, 3 children at most: each WebSocket holds a child, so two are served and a
    # third would leave no child for anything else: 503 (the board counts the sessions across
    # the server); HTTP is still served, and a closed socket frees its child.
    sizing = ("StartServers 3\nMinSpareServers 1\nMaxSpareServers 3\nServerLimit 3\n"
              "MaxRequestWorkers 3\n")
    srv = apache_factory(mpm="prefork", sizing=sizing)
    _start(srv)
    srv.allow_log(r"RW0014")
    held = []
    for i in range(2):
        ws = harness.WebSocket(srv.port, f"/api/ws/echo?tag=pf{i}", timeout=15)
        assert ws.accept_ok(), (i, ws.status)
        held.append(ws)
    refused = harness.WebSocket(srv.port, "/api/ws/echo?tag=pf-refused", timeout=15)
    assert refused.status == 503
    refused.shutdown()
    assert srv.wait_for_log(r"RW0014: refused a WebSocket with 503: 2 of the server's 3 "
                            r"children hold WebSockets")
    assert srv.request("GET", "/api/te").body == b"dropped"
    held[0].close()
    assert held[0].recv_message()[0] == 0x8
    held[0].shutdown()

    def reopened():
        ws = harness.WebSocket(srv.port, "/api/ws/echo?tag=pf-again", timeout=15)
        if ws.accept_ok():
            return ws
        ws.shutdown()
        return None

    ws = harness.wait_for(reopened, timeout=10, interval=0.2)
    assert ws
    for w in (ws, held[1]):
        w.close()
        w.shutdown()


@pytest.mark.daemon_only
def test_max_tasks_answers_503_beyond_the_limit(apache_factory, mode):
    # max-tasks=2: of five requests at once, two run and three are answered 503 at once,
    # without the application; the process keeps serving.
    srv = apache_factory(daemon_options="processes=1 threads=2 max-tasks=2")
    _start(srv)
    srv.allow_log(r"RW0014")
    results = _sleep_together(srv, 5)
    assert sorted(results) == [200, 200, 503, 503, 503], results
    assert srv.wait_for_log(r"RW0014: 2 ASGI requests are running \(max-tasks\); answered 503",
                            count=3)
    assert srv.request("GET", "/api/sleep?s=0").status == 200


def test_websockets_leave_a_worker_thread_free(apache_factory, mode):
    # A child of 4 threads: three WebSockets are served, a fourth would leave no thread for
    # anything else and is refused with 503; HTTP is still served; a closed socket frees its
    # thread. (In daemon mode too: the thread is the httpd child's.)
    sizing = ("StartServers 1\nServerLimit 1\nThreadsPerChild 4\nMaxRequestWorkers 4\n"
              "MinSpareThreads 1\nMaxSpareThreads 4\n")
    srv = apache_factory(sizing=sizing)
    _start(srv)
    srv.allow_log(r"RW0014")
    held = []
    for i in range(3):
        ws = harness.WebSocket(srv.port, f"/api/ws/echo?tag=hold{i}", timeout=15)
        assert ws.accept_ok(), (i, ws.status)
        held.append(ws)
    refused = harness.WebSocket(srv.port, "/api/ws/echo?tag=refused", timeout=15)
    assert refused.status == 503
    refused.shutdown()
    assert srv.wait_for_log(r"RW0014: refused a WebSocket with 503: 3 of this child's 4 worker "
                            r"threads hold WebSockets")
    assert srv.request("GET", "/api/te").body == b"dropped"
    held[0].close()
    assert held[0].recv_message()[0] == 0x8
    held[0].shutdown()
    time.sleep(0.3)
    ws = harness.WebSocket(srv.port, "/api/ws/echo?tag=again", timeout=15)
    assert ws.accept_ok()
    for w in (ws, *held[1:]):
        w.close()
        w.shutdown()
