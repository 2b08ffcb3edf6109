"""Integration tests of rwsgi-express (the `start-server` command-line tool): it must generate a
working configuration, run Apache in the foreground, and leave nothing behind when stopped.

Every server runs on 127.0.0.1 with a free port and its own server root. The processes each
test started are recorded by PID (with their start time) and must all be gone after the stop.

Environment: RWSGI_EXPRESS = the rwsgi-express binary (default target/release/rwsgi-express),
RWSGI_SO = mod_rwsgi.so (see harness.py).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

import harness
import keepalive_load

EXPRESS = Path(os.environ.get("RWSGI_EXPRESS",
                              str(harness.REPO / "target" / "release" / "rwsgi-express")))
START_TIMEOUT = 30.0
STOP_TIMEOUT = 40.0
RELOAD_TIMEOUT = 30.0

APP = '''\
import json

def application(environ, start_response):
    keys = ["mod_wsgi.process_group", "mod_wsgi.application_group", "SCRIPT_NAME", "PATH_INFO",
            "wsgi.multithread", "wsgi.multiprocess", "HTTP_AUTHORIZATION"]
    data = {k: environ.get(k) for k in keys}
    import os
    data["pid"] = os.getpid()
    body = json.dumps(data).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]
'''


def _express_ok():
    if not EXPRESS.is_file():
        pytest.fail(f"rwsgi-express not found at {EXPRESS} (cargo build --release, or set "
                    f"RWSGI_EXPRESS)", pytrace=False)
    return harness.check_so()


def _starttime(pid: int):
    st = harness._proc_stat(pid)
    return st[2] if st else None


def _descendants(pid: int) -> list[tuple[int, int]]:
    """(pid, starttime) of every live descendant of pid."""
    out, todo = [], [pid]
    while todo:
        for child, start in harness.children_of(todo.pop()):
            out.append((child, start))
            todo.append(child)
    return out


def _left_after(started: list[tuple[int, int]], timeout: float) -> list[int]:
    """Waits (bounded) for the recorded (pid, starttime) processes to end; SIGKILLs and returns
    the pids still alive after `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(
            harness._same_process_alive(p, s) for p, s in started):
        time.sleep(0.1)
    left = [p for p, s in started if harness._same_process_alive(p, s)]
    for p in left:
        os.kill(p, signal.SIGKILL)
    return left


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


class Express:
    """One rwsgi-express start-server run (or a --setup-only one) in a private directory."""

    def __init__(self, workdir: Path, script: Path, args: list[str], mode: str,
                 binary: Path = EXPRESS, module: bool = True, prefix: list[str] = ()):
        self.workdir = workdir
        self.port = harness.free_port()
        self.root = workdir / "root"
        self.stdout_path = workdir / "stdout.log"
        self.stderr_path = workdir / "stderr.log"
        self.cmd = [*prefix, str(binary), "start-server", str(script), "--host", "127.0.0.1",
                    "--port", str(self.port), "--server-root", str(self.root)]
        if module:
            self.cmd += ["--module", str(harness.SO_PATH)]
        if mode == "embedded":
            self.cmd.append("--embedded-mode")
        self.cmd += args
        self.proc: subprocess.Popen | None = None
        self.recorded: list[tuple[int, int]] = []
        self.started_at = 0.0

    # -- running
    def run_setup_only(self) -> subprocess.CompletedProcess:
        return subprocess.run(self.cmd + ["--setup-only"], capture_output=True, text=True,
                              timeout=60, stdin=subprocess.DEVNULL)

    def start(self) -> "Express":
        # Append mode: Apache reopens /dev/stdout and /dev/stderr, which must not truncate.
        # A process group of its own, as a shell gives a foreground job.
        with open(self.stdout_path, "ab") as out, open(self.stderr_path, "ab") as err:
            self.proc = subprocess.Popen(self.cmd, stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=err, process_group=0)
        self.started_at = time.monotonic()
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"rwsgi-express exited with {self.proc.returncode}:\n"
                                     f"{self.stderr()}")
            if self._accepts() and self.apache_pid():
                self.recorded = _descendants(self.proc.pid)
                return self
            time.sleep(0.1)
        raise AssertionError(f"server did not come up in {START_TIMEOUT}s:\n{self.stderr()}")

    def _accepts(self) -> bool:
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
            return True
        except OSError:
            return False

    def apache_pid(self) -> int | None:
        try:
            return int((self.root / "httpd.pid").read_text().strip())
        except (OSError, ValueError):
            return None

    def daemon_pids(self) -> list[int]:
        name = f"(wsgi:{self.port})"
        return [p for p, _ in _descendants(self.proc.pid) if _comm(p) == name]

    def sockets(self) -> list[Path]:
        return sorted(self.root.glob("rwsgi.*.sock"))

    def get(self, path: str, **kw) -> harness.Response:
        return harness.http_request(self.port, "GET", path, **kw)

    def json(self, path: str = "/", **kw) -> dict:
        r = self.get(path, **kw)
        assert r.status == 200, (r, self.stderr())
        return r.json()

    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace") if self.stdout_path.exists() else ""

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace") if self.stderr_path.exists() else ""

    def stop(self, sig=signal.SIGINT, group: bool = False) -> int:
        """Sends `sig` to rwsgi-express (`group`: to its whole process group, as a terminal's
        Ctrl-C does) and checks that it exits 0 leaving no process, socket or pid file."""
        assert self.proc is not None
        # A just-started event MPM child can crash when told to stop (see harness.stop).
        settle = harness.MIN_UPTIME_BEFORE_STOP - (time.monotonic() - self.started_at)
        if settle > 0:
            time.sleep(settle)
        recorded = _descendants(self.proc.pid) + self.recorded
        if group:
            os.killpg(self.proc.pid, sig)
        else:
            os.kill(self.proc.pid, sig)
        try:
            rc = self.proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"rwsgi-express did not exit within {STOP_TIMEOUT}s of "
                                 f"signal {sig}:\n{self.stderr()}")
        survivors = [p for p, s in recorded if harness._same_process_alive(p, s)]
        for p, s in recorded:
            if harness._same_process_alive(p, s):
                os.kill(p, signal.SIGKILL)
        assert rc == 0, f"exit status {rc}:\n{self.stderr()}"
        assert not survivors, f"processes left after the stop: {survivors}"
        assert not self.sockets(), f"daemon sockets left: {self.sockets()}"
        assert not (self.root / "httpd.pid").exists()
        self.check_log()
        return rc

    def check_log(self):
        bad = [line for line in self.stderr().splitlines()
               if any(re.search(p, line) for p in harness.FORBIDDEN_LOG_PATTERNS)]
        assert not bad, "forbidden lines in the log:\n" + "\n".join(bad)

    def kill(self):
        """Last resort at teardown: SIGKILL what this run started, by recorded PID."""
        if self.proc and self.proc.poll() is None:
            pids = _descendants(self.proc.pid) + self.recorded
            self.proc.kill()
            self.proc.wait(timeout=10)
            for p, s in pids:
                if harness._same_process_alive(p, s):
                    os.kill(p, signal.SIGKILL)


@pytest.fixture
def workdir():
    """A directory under /tmp that the server's user (www-data) can read."""
    d = Path(tempfile.mkdtemp(prefix="rwsgi-express-test-"))
    os.chmod(d, 0o755)
    yield d
    if not os.environ.get("RWSGI_KEEP"):
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def express(workdir, request):
    """Factory: express(script_text_or_path, *args, mode=...) -> started Express. Anything
    still running at teardown is killed by PID and fails a test that otherwise passed (a
    failed test stops before its own x.stop(); that is not a second fault)."""
    _express_ok()
    runs: list[Express] = []

    def make(*args: str, mode: str = "daemon", app: str = APP, start: bool = True,
             binary: Path = EXPRESS, module: bool = True, prefix=()) -> Express:
        script = workdir / "app.wsgi"
        script.write_text(app)
        os.chmod(script, 0o644)
        x = Express(workdir, script, list(args), mode, binary=binary, module=module,
                    prefix=list(prefix))
        runs.append(x)
        return x.start() if start else x

    yield make
    leaked = [x for x in runs if x.proc and x.proc.poll() is None]
    for x in runs:
        x.kill()
    call = getattr(request.node, "rep_call", None)
    if call is None or call.passed:
        assert not leaked, "a test left rwsgi-express running"


def _write(path: Path, text: str, mode: int = 0o644) -> Path:
    path.write_text(text)
    os.chmod(path, mode)
    return path


# --------------------------------------------------------------------------- serving and stopping

@pytest.mark.parametrize("sig,group", [(signal.SIGINT, False), (signal.SIGTERM, False),
                                       (signal.SIGINT, True)],
                         ids=["SIGINT", "SIGTERM", "Ctrl-C-to-the-process-group"])
def test_serves_the_app_and_a_signal_stops_everything(express, mode, sig, group):
    x = express("--access-log", mode=mode)
    data = x.json("/foo", headers={"Authorization": "Basic dTpw"})
    assert data["PATH_INFO"] == "/foo"
    assert data["SCRIPT_NAME"] == ""
    assert data["mod_wsgi.application_group"] == ""  # %{GLOBAL}
    assert data["HTTP_AUTHORIZATION"] == "Basic dTpw"  # WSGIPassAuthorization On
    assert data["wsgi.multithread"] is True  # 5 threads by default
    apache = x.apache_pid()
    if mode == "daemon":
        assert data["mod_wsgi.process_group"] == f"127.0.0.1:{x.port}"
        assert data["pid"] in x.daemon_pids()
        assert len(x.sockets()) == 1
    else:
        assert data["mod_wsgi.process_group"] == ""
        assert data["pid"] in [p for p, _ in harness.children_of(apache)]
        assert not x.daemon_pids()
    assert any(p == apache for p, _ in x.recorded)
    conf = (x.root / "httpd.conf").read_text()
    assert ("WSGIRestrictEmbedded On" in conf) == (mode == "daemon")
    x.stop(sig, group=group)
    # Logs went to the terminal: the access log on stdout, Apache's messages on stderr.
    assert re.search(r'"GET /foo HTTP/1.1" 200 \d+', x.stdout())
    assert "resuming normal operations" in x.stderr() or "AH00094" in x.stderr()
    assert "rwsgi-express: stopping Apache" in x.stderr()


def test_apache_stops_when_the_tool_is_killed(express, mode):
    """Even SIGKILL of rwsgi-express (no chance to clean up) stops Apache and its daemons: Apache
    gets SIGTERM as a parent-death signal and stops in order."""
    x = express(mode=mode)
    assert x.get("/").status == 200
    time.sleep(harness.MIN_UPTIME_BEFORE_STOP)
    started = _descendants(x.proc.pid)
    assert started
    os.kill(x.proc.pid, signal.SIGKILL)
    x.proc.wait(timeout=10)
    left = _left_after(started, STOP_TIMEOUT)
    assert not left, f"left after rwsgi-express was killed: {left}"
    assert not x.sockets()
    assert not (x.root / "httpd.pid").exists()
    x.check_log()


@pytest.mark.parametrize("sig", [signal.SIGUSR1, signal.SIGHUP], ids=["SIGUSR1", "SIGHUP"])
def test_restart_signals_are_passed_to_apache(express, mode, sig):
    """SIGUSR1 (graceful restart) and SIGHUP (restart) reach Apache, which restarts and keeps
    serving under the same parent; rwsgi-express keeps running."""
    x = express(mode=mode)
    assert x.get("/").status == 200
    apache = x.apache_pid()
    before = x.stderr().count("resuming normal operations")
    time.sleep(harness.MIN_UPTIME_BEFORE_STOP)
    os.kill(x.proc.pid, sig)
    deadline = time.monotonic() + START_TIMEOUT
    while (time.monotonic() < deadline
           and x.stderr().count("resuming normal operations") <= before):
        time.sleep(0.1)
    assert x.stderr().count("resuming normal operations") > before, x.stderr()
    deadline = time.monotonic() + START_TIMEOUT
    r = x.get("/")
    while r.status != 200 and time.monotonic() < deadline:
        time.sleep(0.1)
        r = x.get("/")
    assert r.status == 200, (r, x.stderr())
    assert x.proc.poll() is None and x.apache_pid() == apache
    x.started_at = time.monotonic()
    x.stop()


def test_mount_point_and_url_aliases(express, workdir, mode):
    static = workdir / "static"
    static.mkdir(mode=0o755)
    os.chmod(static, 0o755)
    _write(static / "style.css", "body { color: red }\n")
    robots = _write(workdir / "robots.txt", "User-agent: *\n")
    x = express("--mount-point", "/app", "--url-alias", "/static", str(static),
                "--url-alias", "/robots.txt", str(robots), mode=mode)
    data = x.json("/app/x/y")
    assert (data["SCRIPT_NAME"], data["PATH_INFO"]) == ("/app", "/x/y")
    r = x.get("/static/style.css")
    assert (r.status, r.body) == (200, b"body { color: red }\n")
    assert r.headers.get("Content-Type", "").startswith("text/css")
    r = x.get("/robots.txt")
    assert (r.status, r.body) == (200, b"User-agent: *\n")
    assert x.get("/").status == 404  # outside the mount point: the empty document root
    assert x.get("/static/missing.css").status == 404
    x.stop()


ASGI_APP = '''\
import json
import os


async def application(scope, receive, send):
    if scope["type"] == "lifespan":
        while (await receive())["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    if scope["type"] == "websocket":
        await receive()
        await send({"type": "websocket.accept"})
        m = await receive()
        await send({"type": "websocket.send", "text": "echo " + m["text"]})
        await send({"type": "websocket.close", "code": 1000})
        return
    body = json.dumps({"path": scope["path"], "root_path": scope["root_path"],
                       "pid": os.getpid(), "lifespan": "state" in scope}).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})
'''


def test_serves_an_asgi_application_with_websockets(express, mode):
    # The same command line serves an ASGI application (detected from the callable): HTTP
    # with lifespan, and a WebSocket through the generated configuration.
    x = express("--mount-point", "/api", mode=mode, app=ASGI_APP)
    data = x.json("/api/items")
    assert data["path"] == "/api/items" and data["root_path"] == "/api"
    assert data["lifespan"] is True
    ws = harness.WebSocket(x.port, "/api/ws")
    assert ws.accept_ok(), ws.status
    ws.send_text("hi")
    assert ws.recv_message() == (0x1, b"echo hi")
    ws.shutdown()
    x.stop()
    # --application-interface asgi: the mount says so, and Apache has room for 100
    # connections per daemon process.
    x = express("--mount-point", "/api", "--application-interface", "asgi", mode=mode,
                app=ASGI_APP)
    assert x.json("/api/x")["lifespan"] is True
    conf = (x.root / "httpd.conf").read_text()
    assert "application-interface=asgi" in conf
    if mode == "daemon":
        workers = int(re.search(r"MaxRequestWorkers (\d+)", conf).group(1))
        assert workers >= 100, workers
    x.stop()


def test_callable_object_and_python_path(express, workdir, mode):
    lib = workdir / "lib"
    lib.mkdir()
    os.chmod(lib, 0o755)
    _write(lib / "greeting.py", "WORD = 'hello from python-path'\n")
    app = ("import greeting\n"
           "def app(environ, start_response):\n"
           "    start_response('200 OK', [('Content-Type', 'text/plain')])\n"
           "    return [greeting.WORD.encode()]\n")
    x = express("--callable-object", "app", "--python-path", str(lib), mode=mode, app=app)
    r = x.get("/")
    assert (r.status, r.body) == (200, b"hello from python-path"), x.stderr()
    x.stop()


def test_processes_threads_and_mpm(express, mode):
    x = express("--processes", "2", "--threads", "1", "--server-mpm", "prefork", mode=mode)
    data = x.json("/")
    assert data["wsgi.multithread"] is False
    assert data["wsgi.multiprocess"] is True
    conf = (x.root / "httpd.conf").read_text()
    assert "mod_mpm_prefork.so" in conf
    if mode == "daemon":
        assert len(x.daemon_pids()) == 2
    x.stop()


def test_server_status_and_metrics_pages(express, mode):
    """--server-status and --metrics turn on the operators' pages at their documented URLs,
    in front of an application mounted at /."""
    x = express("--server-status", "--metrics", mode=mode)
    for _ in range(3):
        assert x.get("/app").status == 200
    want = ('rwsgi_requests_total{group="",mode="embedded",code="2xx"} 3' if mode == "embedded"
            else 'mode="daemon",code="2xx"} 3')
    # A request is counted when its handler ends, which can be a moment after the client has
    # read the whole response: poll, bounded.
    deadline = time.monotonic() + 10
    while True:
        m = x.get("/rwsgi-metrics")
        assert m.status == 200, m.text
        if want in m.text or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert want in m.text, m.text
    h = x.get("/rwsgi-health")
    assert h.status == 200 and h.text.startswith("ok: "), h.text
    auto = x.get("/server-status?auto").text
    assert "RwsgiEmbeddedRequests:" in auto, auto
    if mode == "daemon":
        assert "state=ready" in auto, auto
    x.stop()


# ----------------------------------------------------------------- keep-alive under load (issue 18)

HELLO = '''\
def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello"]
'''


def _load(x: "Express", clients: int, seconds: float = 3.0) -> keepalive_load.Tally:
    t = keepalive_load.run("127.0.0.1", x.port, "/", clients, seconds)
    assert set(t.statuses) == {200}, t.summary()
    assert t.responses >= clients, t.summary()
    return t


def test_keepalive_clients_lose_no_request_under_load(express, mode):
    """The generated MPM configuration (default MPM) must never close a kept-alive connection
    under a request the client sent: not at 32 clients (more than the 20 application threads),
    and at 256 (far past capacity) a client may at most fail to connect. Clients never retry.
    mod_wsgi-express's sizing (event MPM, one child started, spare threads capped) dropped
    10-20 % of wrk's requests at 32 clients."""
    x = express("--processes", "2", "--threads", "10", app=HELLO, mode=mode)
    assert "mod_mpm_worker.so" in (x.root / "httpd.conf").read_text()
    for clients in (32, 256):
        t = _load(x, clients)
        assert t.dropped == 0, f"{clients} clients: {t.summary()}"
    x.stop()


def test_prefork_loses_no_request_under_load(express):
    """On prefork (daemon mode) the generated children (40 for 2 x 10 daemon threads) serve
    32 clients at once and queue the rest of 256 in the listen backlog; none is dropped.
    (The event MPM is not held to this: it closes idle kept-alive connections whenever a
    child's threads are all busy, by design; BENCHMARKS.md has its numbers.)"""
    x = express("--processes", "2", "--threads", "10", "--server-mpm", "prefork", app=HELLO)
    for clients in (32, 256):
        t = _load(x, clients)
        assert t.dropped == 0, f"{clients} clients: {t.summary()}"
    x.stop()

def _uid(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise AssertionError(f"no Uid line for {pid}")


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to start the tool as another user")
def test_runs_as_an_ordinary_user(express, workdir, mode):
    """Started by a non-root user (nobody), everything runs as that user. Its stdout and
    stderr here are files of root's, which Apache (as nobody) cannot reopen as /dev/stdout
    and /dev/stderr: rwsgi-express relays the logs to them."""
    import pwd
    nobody = pwd.getpwnam("nobody")
    # Copies nobody can reach wherever the checkout is; the module is found next to the tool.
    bindir = workdir / "bin"
    bindir.mkdir()
    os.chmod(bindir, 0o755)
    binary = Path(shutil.copy2(EXPRESS, bindir / "rwsgi-express"))
    shutil.copy2(harness.SO_PATH, bindir / "libmod_rwsgi.so")
    os.chown(workdir, nobody.pw_uid, nobody.pw_gid)
    x = express("--access-log", mode=mode, binary=binary, module=False, prefix=[
        "setpriv", f"--reuid={nobody.pw_uid}", f"--regid={nobody.pw_gid}", "--clear-groups"])
    data = x.json("/")
    apache = x.apache_pid()
    assert _uid(apache) == nobody.pw_uid
    assert _uid(data["pid"]) == nobody.pw_uid
    if mode == "daemon":
        assert data["pid"] in x.daemon_pids()
    x.stop()
    assert '"GET / HTTP/1.1" 200' in x.stdout()
    assert "AH00094" in x.stderr()


def test_python_home_runs_the_app_in_a_virtual_environment(express, workdir, mode):
    venv = workdir / "venv"
    subprocess.run([harness.APP_PYTHON, "-m", "venv", "--without-pip", str(venv)], check=True,
                   timeout=120)
    for dirpath, dirs, files in os.walk(venv):  # readable by the server's user, whatever umask
        os.chmod(dirpath, 0o755)
        for f in files:
            if not os.path.islink(os.path.join(dirpath, f)):
                os.chmod(os.path.join(dirpath, f), 0o755)
    app = ("import sys\n"
           "def application(environ, start_response):\n"
           "    start_response('200 OK', [('Content-Type', 'text/plain')])\n"
           "    return [sys.prefix.encode()]\n")
    x = express("--python-home", str(venv), mode=mode, app=app)
    r = x.get("/")
    assert (r.status, r.text) == (200, str(venv)), x.stderr()
    x.stop()


# --------------------------------------------------------------------------- reloading

def _poll_text(x: Express, want: str, timeout: float = RELOAD_TIMEOUT) -> str:
    """GETs / until the body is `want` (bounded); returns the last body."""
    deadline = time.monotonic() + timeout
    body = ""
    while time.monotonic() < deadline:
        r = x.get("/")
        body = r.text
        if r.status == 200 and body == want:
            return body
        time.sleep(0.2)
    return body


HELPER_APP = ("import helper\n"
              "def application(environ, start_response):\n"
              "    start_response('200 OK', [('Content-Type', 'text/plain')])\n"
              "    return [('%s %s' % (MARK, helper.VALUE)).encode()]\n"
              "MARK = 'script-v1'\n")


def test_reload_on_changes_restarts_the_daemon_for_any_loaded_module(express, workdir):
    lib = workdir / "lib"
    lib.mkdir()
    os.chmod(lib, 0o755)
    helper = _write(lib / "helper.py", "VALUE = 'helper-v1'\n")
    x = express("--reload-on-changes", "--python-path", str(lib), app=HELPER_APP)
    assert x.get("/").text == "script-v1 helper-v1"
    first = x.daemon_pids()
    # An imported module changes (a different size, so no stale bytecode can be used).
    _write(helper, "VALUE = 'helper-version-2'\n")
    assert _poll_text(x, "script-v1 helper-version-2") == "script-v1 helper-version-2", \
        x.stderr()
    assert set(x.daemon_pids()).isdisjoint(first)
    assert re.search(r"rwsgi-express: \S*helper.py changed; restarting daemon process",
                     x.stderr())
    # The script itself changes.
    _write(workdir / "app.wsgi", HELPER_APP.replace("script-v1", "script-version-2"))
    want = "script-version-2 helper-version-2"
    assert _poll_text(x, want) == want, x.stderr()
    x.stop()


def test_without_reload_on_changes_only_the_script_is_watched(express, workdir):
    lib = workdir / "lib"
    lib.mkdir()
    os.chmod(lib, 0o755)
    _write(lib / "helper.py", "VALUE = 'helper-v1'\n")
    x = express("--python-path", str(lib), app=HELPER_APP)
    assert x.get("/").text == "script-v1 helper-v1"
    assert "WSGIImportScript" not in (x.root / "httpd.conf").read_text()
    assert not (x.root / "reload-monitor.py").exists()
    # mod_rwsgi restarts a daemon whose script changed (as mod_wsgi daemon mode does), so the
    # next request sees the new script.
    _write(workdir / "app.wsgi", HELPER_APP.replace("script-v1", "script-version-2"))
    r = x.get("/")
    assert r.text == "script-version-2 helper-v1", (r, x.stderr())
    x.stop()


# --------------------------------------------------------------------------- --setup-only

def test_setup_only_writes_config_and_apachectl_that_controls_the_server(express, workdir, mode):
    # A copy of the tool with the module next to it: the default module search finds it.
    bindir = workdir / "bin"
    bindir.mkdir()
    os.chmod(bindir, 0o755)
    binary = Path(shutil.copy2(EXPRESS, bindir / "rwsgi-express"))
    so = Path(shutil.copy2(harness.SO_PATH, bindir / "libmod_rwsgi.so"))
    x = express(mode=mode, start=False, binary=binary, module=False)
    p = x.run_setup_only()
    assert p.returncode == 0, p.stderr
    conf = x.root / "httpd.conf"
    ctl = x.root / "apachectl"
    assert f'LoadModule rwsgi_module "{so}"' in conf.read_text()
    assert os.access(ctl, os.X_OK)
    assert str(ctl) in p.stdout
    # Nothing runs yet.
    assert not (x.root / "httpd.pid").exists()
    assert not x._accepts()

    def ctl_run(*args):
        return subprocess.run([str(ctl), *args], capture_output=True, text=True, timeout=60,
                              stdin=subprocess.DEVNULL)

    t = ctl_run("configtest")
    assert t.returncode == 0 and "Syntax OK" in t.stderr, t
    s = ctl_run("start")
    assert s.returncode == 0, s
    apache = None
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline and not (x.apache_pid() and x._accepts()):
            time.sleep(0.1)
        apache = x.apache_pid()
        assert apache and x._accepts(), (x.root / "error_log").read_text()
        r = x.get("/")
        assert r.status == 200, r
        assert r.json()["mod_wsgi.process_group"] == \
            (f"127.0.0.1:{x.port}" if mode == "daemon" else "")
        # In the background the error log goes to the server root.
        assert "resuming normal operations" in (x.root / "error_log").read_text()
        time.sleep(harness.MIN_UPTIME_BEFORE_STOP)
        started = _descendants(apache) + [(apache, _starttime(apache))]
        stop = ctl_run("stop")
        assert stop.returncode == 0, stop
        left = _left_after(started, STOP_TIMEOUT)
        assert not left, f"left after apachectl stop: {left}"
        assert not x.sockets()
        apache = None
    finally:
        if apache and harness.pid_alive(apache):
            for p, s in _descendants(apache):
                os.kill(p, signal.SIGKILL)
            os.kill(apache, signal.SIGKILL)


# --------------------------------------------------------------------------- command line

def test_help_lists_every_option_and_version():
    _express_ok()
    p = subprocess.run([str(EXPRESS), "--help"], capture_output=True, text=True, timeout=30)
    assert p.returncode == 0
    for opt in ["--host", "--port", "--processes", "--threads", "--embedded-mode",
                "--python-home", "--python-path", "--url-alias", "--mount-point",
                "--callable-object", "--reload-on-changes", "--server-root", "--setup-only",
                "--log-level", "--access-log", "--user", "--group", "--module", "--httpd",
                "--modules-directory", "--server-mpm", "--working-directory",
                "--request-timeout", "--queue-timeout", "--socket-timeout",
                "--connect-timeout", "--max-clients", "--help", "--version"]:
        assert re.search(rf"^\s+(-\w, )?{opt}\b", p.stdout, re.M), opt
    assert "start-server" in p.stdout
    cargo = (harness.REPO / "Cargo.toml").read_text()
    version = re.search(r'^version = "([^"]+)"', cargo, re.M).group(1)
    v = subprocess.run([str(EXPRESS), "--version"], capture_output=True, text=True, timeout=30)
    assert (v.returncode, v.stdout.strip()) == (0, f"rwsgi-express {version}")


def _bad(args: list[str], cwd: Path | None = None, binary: Path = EXPRESS):
    p = subprocess.run([str(binary), *args], capture_output=True, text=True, timeout=60,
                       cwd=cwd, stdin=subprocess.DEVNULL)
    lines = p.stderr.strip().splitlines()
    assert p.returncode != 0, p
    assert len(lines) == 1 and lines[0].startswith("rwsgi-express: "), p.stderr
    return lines[0]


def test_bad_command_lines_fail_with_one_line(workdir):
    _express_ok()
    app = _write(workdir / "app.wsgi", APP)
    port = str(harness.free_port())
    base = ["start-server", str(app), "--host", "127.0.0.1", "--port", port,
            "--server-root", str(workdir / "root")]
    cases = [
        (["start-server", str(workdir / "missing.wsgi")], "does not exist"),
        (["start-server", str(workdir)], "is not a file"),
        (base[:2] + ["--port", "abc"], "--port: 'abc' is not a port number"),
        (base[:2] + ["--port", "0"], "--port: '0'"),
        (base[:2] + ["--port", "70000"], "--port: '70000'"),
        (base + ["--frobnicate"], "unknown option '--frobnicate'"),
        (base + ["--threads"], "--threads needs NUMBER"),
        (base + ["--embedded-mode", "--reload-on-changes"], "needs daemon mode"),
        (base + ["--module", str(workdir / "nope.so")], "--module:"),
        (base + ["--python-path", str(workdir / "nope")], "is not a directory"),
        (base + ["--url-alias", "/s", str(workdir / "nope")], "--url-alias /s"),
        (base + ["--user", "root"], "must not run as root"),
        (base + ["--user", "no-such-user-here"], "no user named"),
        (base + ["--httpd", str(workdir / "nope")], "--httpd:"),
        (base[:-1] + [str(workdir / ("r" * 90))], "too long for the daemon sockets"),
        (["serve", str(app)], "unknown command"),
        (["start-server"], "needs the WSGI script"),
    ]
    for args, needle in cases:
        line = _bad(args)
        assert needle in line, (args, line)
    assert not (workdir / "root").exists()  # nothing was set up


@pytest.mark.skipif(os.geteuid() != 0, reason="checks what the www-data user can read")
def test_script_the_server_user_cannot_read_is_refused(workdir):
    _express_ok()
    private = _write(workdir / "private.wsgi", APP, mode=0o600)
    line = _bad(["start-server", str(private), "--port", str(harness.free_port()),
                 "--server-root", str(workdir / "root")])
    assert "cannot be read by www-data" in line, line
    hidden = workdir / "hidden"
    hidden.mkdir(mode=0o700)
    os.chmod(hidden, 0o700)
    app = _write(hidden / "app.wsgi", APP)
    line = _bad(["start-server", str(app), "--port", str(harness.free_port()),
                 "--server-root", str(workdir / "root")])
    assert f"the directory '{hidden}'" in line and "cannot be searched by www-data" in line, line


def test_missing_module_names_where_it_looked(workdir):
    _express_ok()
    app = _write(workdir / "app.wsgi", APP)
    bindir = workdir / "bin"
    bindir.mkdir()
    binary = Path(shutil.copy2(EXPRESS, bindir / "rwsgi-express"))
    empty = workdir / "modules"
    empty.mkdir()
    line = _bad(["start-server", str(app), "--port", str(harness.free_port()),
                 "--server-root", str(workdir / "root"), "--modules-directory", str(empty)],
                binary=binary)
    assert "mod_rwsgi.so not found" in line
    for place in (bindir / "libmod_rwsgi.so", bindir / "mod_rwsgi.so", empty / "mod_rwsgi.so"):
        assert str(place) in line, line


def test_port_in_use_is_refused(workdir):
    _express_ok()
    app = _write(workdir / "app.wsgi", APP)
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        line = _bad(["start-server", str(app), "--host", "127.0.0.1", "--port", str(port),
                     "--server-root", str(workdir / "root"), "--module", str(harness.SO_PATH)])
        assert f"port {port} on 127.0.0.1 is already in use" in line
        assert not (workdir / "root").exists()
    finally:
        s.close()


def test_apache_failing_to_start_is_reported(workdir):
    """Apache refuses the configuration (here: a "module" that is no shared object): its
    message reaches the terminal, rwsgi-express exits non-zero, and nothing is left running."""
    _express_ok()
    app = _write(workdir / "app.wsgi", APP)
    fake = _write(workdir / "mod_rwsgi.so", "not a shared object\n")
    root = workdir / "root"
    p = subprocess.run([str(EXPRESS), "start-server", str(app), "--host", "127.0.0.1",
                        "--port", str(harness.free_port()), "--server-root", str(root),
                        "--module", str(fake)],
                       capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert p.returncode != 0
    assert "Cannot load" in p.stderr and str(fake) in p.stderr, p.stderr
    assert "rwsgi-express: Apache exited with status" in p.stderr
    assert not (root / "httpd.pid").exists()
    assert not list(root.glob("rwsgi.*.sock"))
