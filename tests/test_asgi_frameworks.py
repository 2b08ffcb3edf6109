"""Real ASGI frameworks from PyPI (Starlette, FastAPI, Quart; pinned in
tests/frameworks/requirements.txt) served by mod_rwsgi in embedded and daemon mode (both on the
event MPM), each answer compared with
the same application served by uvicorn, as tests/test_frameworks.py compares WSGI frameworks
with gunicorn (its venv, sites, client and comparison are reused).

mod_rwsgi mounts the framework's module itself as the script (`callable-object=app`, the site's
app directory on `WSGIPythonPath` / `python-path=`); uvicorn serves `<module>:mounted`, the same application
behind tests/frameworks/asgi_mount.py, which mounts it at /app the way Apache does (`root_path`
the mount point, `path` the whole path). Both run as www-data, on sockets the test binds;
uvicorn is stopped by its PID. Embedded ASGI on the other MPMs is tested with the stdlib
application (tests/test_asgi.py)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
from pathlib import Path

import pytest

import harness
import test_frameworks as fw
from test_frameworks import venv  # noqa: F401  (the session fixture)

MOUNT = fw.MOUNT
ENTRIES = {  # framework -> (module in <site>/app, its callable): mod_rwsgi mounts the module's
    # file with that callable, uvicorn serves the module's `mounted`
    "starlette": ("starlette_app", "app"),
    "fastapi": ("fastapi_app", "app"),
    "quart": ("quart_app", "app"),
    # Django's own asgi.py (get_asgi_application), as its deployment docs have it.
    "django": ("djangosite.asgi", "application"),
    # Django Channels' ProtocolTypeRouter in front of the same project.
    "channels": ("djangosite.channels_asgi", "application"),
}
REQ_TIMEOUT = fw.REQ_TIMEOUT


class Uvicorn:
    """uvicorn from the venv serving <site>/app's `<module>:mounted` (or `target`, answering
    at `probe`)."""

    def __init__(self, venv: Path, site: Path, module: str, target: str | None = None,
                 probe: str = f"{MOUNT}/"):
        self.site = site
        self.probe = probe
        lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        lsock.bind(("127.0.0.1", 0))
        lsock.listen(128)
        self.port = lsock.getsockname()[1]
        cmd = [str(venv / "bin" / "python"), "-m", "uvicorn", "--fd", str(lsock.fileno()),
               "--app-dir", str(site / "app"), "--lifespan", "auto", "--no-access-log",
               "--log-level", "warning", target or f"{module}:mounted"]
        env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
        with open(site / "uvicorn.out", "wb") as out, lsock:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env,
                                         cwd=str(site), pass_fds=[lsock.fileno()],
                                         user=fw.RUN_AS, group=fw.RUN_AS, extra_groups=[])
        ok = harness.wait_for(lambda: self.proc.poll() is not None or self._answers(), 90, 0.2)
        if not ok or self.proc.poll() is not None:
            self.stop()
            raise harness.HarnessError(f"uvicorn did not start: {cmd}\n{self.logs()}")

    def _answers(self) -> bool:
        try:
            r = harness.http_request(self.port, "GET", self.probe, timeout=5)
        except OSError:
            return False
        return r.headers.get("Server") == "uvicorn"

    def logs(self) -> str:
        p = self.site / "uvicorn.out"
        return p.read_text(errors="replace")[-4000:] if p.exists() else ""

    def stop(self):
        harness.stop_process(self.proc, timeout=30)


@pytest.fixture(scope="module")
def uvicorns(venv):  # noqa: F811
    roots = []

    def start(framework):
        root = Path(tempfile.mkdtemp(prefix=f"rwsgi-uvicorn-{framework}-", dir="/tmp"))
        roots.append(root)
        return Uvicorn(venv, fw.make_site(root), ENTRIES[framework][0])

    servers = fw.Servers(start)
    yield servers
    for u in servers.started.values():
        u.stop()
    if not os.environ.get("RWSGI_KEEP"):
        for root in roots:
            shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module", params=fw.MODES)
def apaches(request, venv):  # noqa: F811
    mode = request.param

    def start(framework):
        srv = harness.Apache(mode=mode, mpm="event", name=f"asgi-fw-{framework}-{mode}")
        servers.started[framework] = srv
        site = fw.make_site(srv.apps / "fw")
        srv.site = site
        app_dir = site / "app"
        if mode == "embedded":
            head = f"WSGIPythonHome {venv}\nWSGIPythonPath {app_dir}\n"
        else:
            head = ""
            srv.daemon_options = f"processes=2 threads=10 python-home={venv} python-path={app_dir}"
        module, callable_ = ENTRIES[framework]
        srv.start(head + "WSGIChunkedRequest On\n"
                  + srv.mount(MOUNT, app_dir / (module.replace(".", "/") + ".py"),
                              callable_object=callable_))
        # An exception the framework turns into a 500 is still logged with its traceback.
        srv.allow_log(r"RW0007")
        return srv

    servers = fw.Servers(start)
    yield servers
    live = list(servers.started.values())
    problems, saved = harness.close_servers(live, False,
                                            fw.LOG_DIR / f"test_asgi_frameworks-{mode}")
    if problems:
        pytest.fail("\n".join(problems) + f"\nlogs saved to {saved}", pytrace=False)


@pytest.fixture
def pair(request, apaches, uvicorns):
    def get(framework):
        a = apaches(framework)
        request.node._rwsgi_servers = [a]
        return a, uvicorns(framework)

    return get


def both(pair_, framework: str, steps):
    """`steps(client, server)` against mod_rwsgi and against uvicorn; the responses are
    compared pairwise (status, application headers, body). Returns (mod_rwsgi's, server)."""
    a, u = pair_(framework)
    ra = steps(fw.Client(a), a)
    ru = steps(fw.Client(u), u)
    assert len(ra) == len(ru)
    for i, (x, y) in enumerate(zip(ra, ru)):
        try:
            fw.assert_same(x, y, a.port, u.port, reference="uvicorn")
        except AssertionError as e:
            raise AssertionError(f"step {i}: {e}") from None
    return ra, a


# --------------------------------------------------------------------------- Starlette

def test_starlette_json_redirect_and_lifespan_state(pair):
    payload = json.dumps({"id": 42, "v": "é"}).encode()

    def steps(c, s):
        return [c.get(f"{MOUNT}/items/7?tag=a&tag=b%20c"),
                c.request("HEAD", f"{MOUNT}/items/7"),
                c.get(f"{MOUNT}/items/x"),
                c.request("POST", f"{MOUNT}/items", payload, [("Content-Type", "application/json")]),
                c.get(f"{MOUNT}/go")]

    (get, head, missing, post, go), a = both(pair, "starlette", steps)
    assert get.status == 200
    assert get.json() == {"id": 7, "tags": ["a", "b c"], "root_path": MOUNT,
                          "path": f"{MOUNT}/items/7",
                          "url": f"http://127.0.0.1:{a.port}{MOUNT}/items/7?tag=a&tag=b%20c",
                          "started": "yes"}
    assert head.status == 200 and head.body == b""
    assert missing.status == 404
    assert post.status == 201 and post.headers["Location"] == \
        f"http://127.0.0.1:{a.port}{MOUNT}/items/42"
    assert go.status == 307


def test_starlette_form_upload_and_cookie(pair):
    data = os.urandom(200_000)

    def steps(c, s):
        body, hdrs = fw.multipart([("name", "Zoë")], [("file", ("up.bin", "application/x-rwsgi",
                                                                 data))])
        return [c.request("POST", f"{MOUNT}/form", body, hdrs)]

    (r,), _ = both(pair, "starlette", steps)
    assert r.status == 200
    assert f"up.bin {len(data)} {hashlib.sha256(data).hexdigest()}".encode() in r.body
    assert r.headers.get("Set-Cookie").startswith("visitor=")


def test_starlette_streaming_and_bodies(pair):
    big = os.urandom(2 * 1024 * 1024 + 3)

    def steps(c, s):
        return [c.get(f"{MOUNT}/stream"),
                c.request("POST", f"{MOUNT}/echo", big),
                c.request("POST", f"{MOUNT}/echo", big[:50_000], chunked=True, chunk_size=4096)]

    (stream, echo, chunked), _ = both(pair, "starlette", steps)
    assert stream.body == b"".join(b"line %d\n" % i for i in range(5))
    assert stream.framing == "chunked"
    assert echo.body == f"{len(big)} {hashlib.sha256(big).hexdigest()}".encode()
    assert chunked.body.startswith(b"50000 ")


def test_starlette_file_response(pair):
    def steps(c, s):
        first = c.get(f"{MOUNT}/blob")
        return [first,
                c.get(f"{MOUNT}/blob", headers=[("Range", "bytes=100-1099")]),
                c.request("HEAD", f"{MOUNT}/blob")]

    (full, part, head), _ = both(pair, "starlette", steps)
    assert full.status == 200 and full.body == fw.BLOB
    assert full.headers.get("Content-Disposition") == 'attachment; filename="blob.bin"'
    assert part.status == 206 and part.body == fw.BLOB[100:1100]
    assert head.status == 200 and head.body == b""


def test_starlette_request_headers_and_errors(pair):
    def steps(c, s):
        return [c.get(f"{MOUNT}/headers?x=1", headers=[("X-Custom", "one"), ("Accept", "*/*"),
                                                        ("X-Custom-Two", "two")]),
                c.get(f"{MOUNT}/boom")]

    (hdrs, boom), a = both(pair, "starlette", steps)
    seen = hdrs.json()
    assert seen["http_version"] == "1.1" and seen["client_is_local"]
    assert [h[0] for h in seen["headers"]] == ["host", "connection", "x-custom", "accept",
                                               "x-custom-two"]
    assert boom.status == 500 and boom.body == b"Internal Server Error"
    assert a.wait_for_log(r"RuntimeError: boom in a Starlette endpoint")


def test_starlette_background_task_runs_after_the_response(pair):
    a, u = pair("starlette")
    for srv in (a, u):
        marker_dir = srv.site / "var" / "tmp"
        r = harness.http_request(srv.port, "GET", f"{MOUNT}/background?dir={marker_dir}",
                                 timeout=REQ_TIMEOUT)
        assert r.status == 200 and r.body == b"queued"
        assert harness.wait_for(lambda: (marker_dir / "background-done").exists(), 10, 0.05)


# --------------------------------------------------------------------------- FastAPI

def test_fastapi_validation_dependencies_and_sync_endpoints(pair):
    good = json.dumps({"id": 1, "name": "widget", "price": 2.5, "tags": ["x"]}).encode()
    bad = json.dumps({"id": "not a number"}).encode()
    ctype = [("Content-Type", "application/json")]

    def steps(c, s):
        return [c.get(f"{MOUNT}/items/5?q=hello"),
                c.get(f"{MOUNT}/items/five"),
                c.request("POST", f"{MOUNT}/items", good, ctype),
                c.request("POST", f"{MOUNT}/items", bad, ctype),
                c.get(f"{MOUNT}/me"),
                c.get(f"{MOUNT}/me", headers=[("X-User", "ada")]),
                c.get(f"{MOUNT}/teapot"),
                c.get(f"{MOUNT}/openapi.json"),
                c.get(f"{MOUNT}/docs")]

    (item, wrong, created, invalid, anon, me, teapot, openapi, docs), _ = \
        both(pair, "fastapi", steps)
    assert item.json() == {"item_id": 5, "q": "hello"}
    assert wrong.status == 422 and invalid.status == 422
    assert created.status == 201 and created.json()["total"] == 5.0
    assert anon.status == 401 and me.json() == {"user": "ada"}
    assert teapot.status == 418
    schema = openapi.json()
    assert schema["servers"] == [{"url": MOUNT}] and "/items/{item_id}" in schema["paths"]
    assert docs.status == 200 and f"{MOUNT}/openapi.json".encode() in docs.body


def test_fastapi_upload(pair):
    data = os.urandom(300_000)

    def steps(c, s):
        body, hdrs = fw.multipart([("note", "hi")], [("file", ("data.bin", "application/x-rwsgi",
                                                                data))])
        return [c.request("POST", f"{MOUNT}/upload", body, hdrs)]

    (r,), _ = both(pair, "fastapi", steps)
    assert r.json() == {"filename": "data.bin", "size": len(data), "note": "hi",
                        "sha256": hashlib.sha256(data).hexdigest(), "type": "application/x-rwsgi"}


# --------------------------------------------------------------------------- Quart

def test_quart(pair):
    def steps(c, s):
        body, hdrs = fw.form([("a", "1"), ("a", "2"), ("b", "Zoë")])
        return [c.get(f"{MOUNT}/items/9?tag=t"),
                c.request("POST", f"{MOUNT}/echo", body, hdrs),
                c.get(f"{MOUNT}/stream"),
                c.get(f"{MOUNT}/boom")]

    (item, echo, stream, boom), a = both(pair, "quart", steps)
    # Quart's request.path is below the mount point (root_path), under both servers.
    assert item.json() == {"id": 9, "tags": ["t"], "root": MOUNT, "path": "/items/9"}
    assert echo.json()["form"] == {"a": ["1", "2"], "b": ["Zoë"]}
    assert stream.body == b"".join(b"part %d\n" % i for i in range(4))
    assert boom.status == 500
    assert a.wait_for_log(r"RuntimeError: boom in a Quart view")


def test_concurrent_clients_share_one_loop(pair):
    a, _ = pair("starlette")
    results = []

    def client():
        for _ in range(10):
            r = harness.http_request(a.port, "GET", f"{MOUNT}/items/1", timeout=REQ_TIMEOUT)
            results.append((r.status, r.json()["started"] if r.status == 200 else None))

    threads = [threading.Thread(target=client) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [(200, "yes")] * 80


# --------------------------------------------------------------------------- Django

def test_django_async_views_under_asgi(pair):
    body = os.urandom(150_000)

    def steps(c, s):
        return [c.get(f"{MOUNT}/async/?n=7"),
                c.get(f"{MOUNT}/async-stream/?n=4"),
                c.get(f"{MOUNT}/stream/?n=30"),
                c.request("POST", f"{MOUNT}/async-echo/", body,
                          [("Content-Type", "application/octet-stream")]),
                c.get(f"{MOUNT}/echo-path/caf%C3%A9%20x/?q=1&q=2")]

    (asyncv, astream, stream, echo, path), a = both(pair, "django", steps)
    assert asyncv.json() == {"n": 7, "total": sum(i * i for i in range(7)), "method": "GET"}
    # Django runs the view next to a task that waits on receive() for the client going away:
    # receive() must block after the body, or every view would be cancelled at once.
    assert astream.body == b"".join(b"async row %d\n" % i for i in range(4))
    assert stream.status == 200 and stream.headers.get("X-Rows") == "30"
    assert echo.json() == {"length": len(body), "sha256": hashlib.sha256(body).hexdigest(),
                           "content_type": "application/octet-stream"}
    assert path.json()["path"] == f"{MOUNT}/echo-path/café x/"
    # Django answers the lifespan scope with ValueError: served without lifespan, said once.
    assert a.wait_for_log(r"ASGI lifespan not supported by .*ValueError")


# --------------------------------------------------------------------------- WebSockets

def _session(port: int, path: str, steps, headers=()):
    """Runs `steps(ws)` on a WebSocket to `port` and returns what it collected."""
    ws = harness.WebSocket(port, path, headers=headers, timeout=REQ_TIMEOUT)
    try:
        return steps(ws)
    finally:
        ws.shutdown()


def _close_code(payload: bytes):
    return int.from_bytes(payload[:2], "big") if len(payload) >= 2 else None


def test_starlette_websocket_against_uvicorn(pair):
    a, u = pair("starlette")

    def steps(ws):
        out = [ws.status, ws.accept_ok(), ws.headers.get("Sec-WebSocket-Protocol")]
        ws.send_text("hello")
        out.append(ws.recv_message())
        ws.send_bytes(b"\x00\x01\x02abc")
        out.append(ws.recv_message())
        ws.send_text("bye")
        op, payload = ws.recv()
        out.append((op, _close_code(payload), payload[2:]))
        return out

    hdrs = [("Sec-WebSocket-Protocol", "chat.v1, chat.v0")]
    ours = _session(a.port, f"{MOUNT}/ws", steps, hdrs)
    theirs = _session(u.port, f"{MOUNT}/ws", steps, hdrs)
    assert ours == theirs
    assert ours[:3] == [101, True, "chat.v1"]
    assert json.loads(ours[3][1]) == {"n": 1, "echo": "hello", "state": "yes"}
    assert ours[4] == (0x2, b"cba\x02\x01\x00")
    assert ours[5] == (0x8, 4000, b"see you")
    # Closed before accept: both refuse the handshake with 403.
    assert harness.WebSocket(a.port, f"{MOUNT}/ws-denied").status == 403
    assert harness.WebSocket(u.port, f"{MOUNT}/ws-denied").status == 403


def test_fastapi_websocket_against_uvicorn(pair):
    a, u = pair("fastapi")

    def steps(ws):
        out = [ws.status]
        if ws.status == 101:
            ws.send_text("abc")
            out.append(ws.recv_message())
            ws.close(1000)
            op, payload = ws.recv()
            out.append((op, _close_code(payload)))
        return out

    for path in (f"{MOUNT}/ws/lobby?token=t1", f"{MOUNT}/ws/lobby"):
        ours = _session(a.port, path, steps)
        theirs = _session(u.port, path, steps)
        assert ours == theirs, path
    assert json.loads(_session(a.port, f"{MOUNT}/ws/lobby?token=t1", steps)[1][1]) == {
        "room": "lobby", "token": "t1", "text": "ABC"}


def _greeting_text_bytes_bye(text: str, data: bytes):
    """Steps for `_session`: the status; after a 101, the greeting, the answers to `text` and
    to `data`, and the close that "bye" brings (opcode, code)."""

    def steps(ws):
        out = [ws.status]
        if ws.status == 101:
            out.append(ws.recv_message())
            ws.send_text(text)
            out.append(ws.recv_message())
            ws.send_bytes(data)
            out.append(ws.recv_message())
            ws.send_text("bye")
            op, payload = ws.recv()
            out.append((op, _close_code(payload)))
        return out

    return steps


def test_quart_websocket_against_uvicorn(pair):
    a, u = pair("quart")

    steps = _greeting_text_bytes_bye("abc", b"\x01\x02xyz")
    for path in (f"{MOUNT}/ws/lobby", f"{MOUNT}/ws/lobby?deny=1"):
        ours = _session(a.port, path, steps)
        assert ours == _session(u.port, path, steps), path
    ours = _session(a.port, f"{MOUNT}/ws/lobby", steps)
    assert ours[0] == 101
    assert json.loads(ours[1][1]) == {"room": "lobby", "path": "/ws/lobby"}
    assert ours[2:4] == [(0x1, b"ABC"), (0x2, b"zyx\x02\x01")]


def test_channels_consumers_against_uvicorn(pair):
    a, u = pair("channels")

    echo = _greeting_text_bytes_bye("shout", b"abc")

    def count(ws):
        out = [ws.status]
        for i in range(3):
            ws.send_text(json.dumps({"i": i}))
            out.append(json.loads(ws.recv_message()[1]))
        ws.close(1000)
        return out

    for path, steps in ((f"{MOUNT}/ws/echo/zoe/", echo), (f"{MOUNT}/ws/echo/x/?reject", echo),
                        (f"{MOUNT}/ws/count/", count)):
        ours = _session(a.port, path, steps)
        assert ours == _session(u.port, path, steps), path
    # A sync consumer (run in a thread by Channels) and an async JSON one, both served; a
    # consumer that closes in connect() refuses the handshake (403) on both servers.
    assert _session(a.port, f"{MOUNT}/ws/echo/zoe/", echo) == [
        101, (0x1, b"hello zoe"), (0x1, b"SHOUT"), (0x2, b"cba"), (0x8, 4002)]
    assert _session(a.port, f"{MOUNT}/ws/echo/x/?reject", echo) == [403]
    assert _session(a.port, f"{MOUNT}/ws/count/", count)[1:] == [
        {"n": i + 1, "got": {"i": i}, "path": f"{MOUNT}/ws/count/"} for i in range(3)]
    # HTTP goes through the router to Django, answered as uvicorn answers it.
    (r,), _ = both(pair, "channels", lambda c, s: [c.get(f"{MOUNT}/async/")])
    assert r.status == 200
