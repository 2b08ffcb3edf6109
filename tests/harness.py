"""Integration-test harness for mod_rwsgi: runs a private Apache httpd on 127.0.0.1.

Each `Apache` object owns a temporary ServerRoot under /tmp (logs/, run/, htdocs/, apps/,
state/), a free loopback port and a rendered httpd.conf. Apache is started with
`apache2 -f CONF -k start` and stopped by signalling the PID from the pid file (never by
process name). `request()` is a small raw-socket HTTP/1.1 client that reports whether the
response framing was complete, so truncated responses are observable.

Only the standard library is used. Paths are world-readable because Apache children run as
www-data.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

REPO = Path(__file__).resolve().parent.parent
TESTS_DIR = Path(__file__).resolve().parent
APPS_SRC = TESTS_DIR / "apps"

APACHE_BIN = os.environ.get("RWSGI_APACHE", "/usr/sbin/apache2")
MODULES_DIR = Path(os.environ.get("RWSGI_APACHE_MODULES", "/usr/lib/apache2/modules"))
SO_PATH = Path(os.environ.get("RWSGI_SO", str(REPO / "target" / "release" / "libmod_rwsgi.so")))
# The interpreter the module under test was built for (scripts/test.sh sets it with PYTHON=): the
# tests make their virtual environments with it and expect its version in what the apps report.
# pytest itself runs under /usr/bin/python3 whatever the module's Python is.
APP_PYTHON = os.environ.get("RWSGI_PYTHON", "/usr/bin/python3")

# RWSGI_COREDUMP=1: children dump core into <ServerRoot>/cores (kept with the saved logs).
COREDUMP = bool(os.environ.get("RWSGI_COREDUMP"))

SOCKET_TIMEOUT = 10.0
START_TIMEOUT = 20.0
STOP_TIMEOUT = 15.0
# The daemon group every daemon-mode mount uses (defined by render_conf).
DAEMON_GROUP = "rwsgi_test"
DAEMON_OPTIONS = os.environ.get("RWSGI_DAEMON_OPTIONS", "processes=2 threads=10")
MIN_UPTIME_BEFORE_STOP = 0.5
# How long stop() waits for client connections to wind down before signalling (see stop()).
STOP_DRAIN_TIMEOUT = 2.0

# Error-log patterns that fail a test unless the test allowed them explicitly.
FORBIDDEN_LOG_PATTERNS = [
    r"\[emerg\]",
    r"\[alert\]",
    r"\[crit\]",
    r"\[[a-z_0-9]+:emerg\]",
    r"\[[a-z_0-9]+:alert\]",
    r"\[[a-z_0-9]+:crit\]",
    r"panicked",
    r"RW0999",
    r"Fatal Python error",
    r"exit signal",          # AH00052: child pid N exit signal Segmentation fault (11)
    r"Segmentation fault",
]

MPM_MODULES = {
    "event": "mpm_event_module mod_mpm_event.so",
    "worker": "mpm_worker_module mod_mpm_worker.so",
    "prefork": "mpm_prefork_module mod_mpm_prefork.so",
}

_THREADED_SIZING = """\
StartServers 1
ServerLimit 2
ThreadsPerChild 10
MaxRequestWorkers 20
MinSpareThreads 5
MaxSpareThreads 20
"""

MPM_SIZING = {
    "event": _THREADED_SIZING,
    "worker": _THREADED_SIZING,
    "prefork": """\
StartServers 2
MinSpareServers 1
MaxSpareServers 5
ServerLimit 5
MaxRequestWorkers 5
""",
}

# Modules always loaded (name, file). mod_rwsgi itself is loaded after these.
BASE_MODULES = [
    ("authn_core_module", "mod_authn_core.so"),
    ("authz_core_module", "mod_authz_core.so"),
    ("mime_module", "mod_mime.so"),
    ("alias_module", "mod_alias.so"),
    ("env_module", "mod_env.so"),
    ("headers_module", "mod_headers.so"),
    ("setenvif_module", "mod_setenvif.so"),
]
# Loaded on request through `modules=(...)`.
OPTIONAL_MODULES = {
    "filter": ("filter_module", "mod_filter.so"),
    "deflate": ("deflate_module", "mod_deflate.so"),
    "auth_basic": ("auth_basic_module", "mod_auth_basic.so"),
    "auth_digest": ("auth_digest_module", "mod_auth_digest.so"),
    "authn_file": ("authn_file_module", "mod_authn_file.so"),
    "authz_user": ("authz_user_module", "mod_authz_user.so"),
    "dir": ("dir_module", "mod_dir.so"),
    "status": ("status_module", "mod_status.so"),
    "ssl": ("ssl_module", "mod_ssl.so"),
    "socache_shmcb": ("socache_shmcb_module", "mod_socache_shmcb.so"),
}


class HarnessError(Exception):
    """The harness could not set up or run Apache (not a module assertion)."""


class ModuleMissing(HarnessError):
    pass


def mpms(*wanted: str) -> list[str]:
    """The MPMs among `wanted` that RWSGI_MPMS allows (every MPM by default), for the tests that
    pick their own MPMs; the first wanted one when RWSGI_MPMS allows none of them."""
    allowed = [m.strip() for m in os.environ.get("RWSGI_MPMS", "event,worker,prefork").split(",")]
    return [m for m in wanted if m in allowed] or [wanted[0]]


def so_path() -> Path:
    return SO_PATH


def module_python() -> tuple[int, int]:
    """The Python (major, minor) the module under test links (its libpython, per ldd)."""
    out = subprocess.run(["ldd", str(SO_PATH)], stdout=subprocess.PIPE, text=True).stdout
    m = re.search(r"libpython(\d+)\.(\d+)", out)
    if not m:
        raise HarnessError(f"{SO_PATH} links no libpython:\n{out}")
    return int(m.group(1)), int(m.group(2))


def app_python_version() -> tuple[int, int]:
    """(major, minor) of APP_PYTHON."""
    out = subprocess.run([APP_PYTHON, "-c", "import sys; print(*sys.version_info[:2])"],
                         stdout=subprocess.PIPE, text=True, check=True).stdout.split()
    return int(out[0]), int(out[1])


def app_python_prefix() -> str:
    """sys.prefix of APP_PYTHON (/usr for Debian's)."""
    return subprocess.run([APP_PYTHON, "-c", "import sys; print(sys.prefix)"],
                          stdout=subprocess.PIPE, text=True, check=True).stdout.strip()


def check_so() -> Path:
    if not SO_PATH.is_file():
        raise ModuleMissing(
            f"mod_rwsgi shared object not found at {SO_PATH} "
            f"(set RWSGI_SO, or run `cargo build --release` first in {REPO})"
        )
    return SO_PATH


def free_port() -> int:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
    finally:
        s.close()


def port_accepts(port: int) -> bool:
    """Whether something accepts connections on 127.0.0.1:`port`."""
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=1.0)
    except OSError:
        return False
    s.close()
    return True


def stop_process(proc: subprocess.Popen, timeout: float = 30.0) -> None:
    """Stops a server this process started (by its PID: SIGTERM, then SIGKILL)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def wait_for(pred, timeout: float = 10.0, interval: float = 0.05):
    """Poll pred() until it returns a truthy value (returned) or the timeout passes (None)."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            return None
        time.sleep(interval)


def wait_for_file(path, timeout: float = 10.0) -> bool:
    return bool(wait_for(lambda: Path(path).exists(), timeout))


def wait_for_record(path, timeout: float = 10.0) -> str | None:
    """The text of a record file another process writes (lines ending in a newline), once a
    complete line is there; None if none arrives in time. Waiting for the file to exist is not
    enough: it exists from open() on, before anything is written."""
    def complete():
        try:
            text = Path(path).read_text()
        except FileNotFoundError:
            return None
        return text if text.endswith("\n") else None
    return wait_for(complete, timeout)


# --------------------------------------------------------------------------- /proc helpers

def _proc_stat(pid: int):
    """(state, ppid, starttime) of a process, or None if it does not exist."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read().decode("latin-1")
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # comm may contain spaces/parens: split after the last ')'
    rest = data[data.rfind(")") + 2:].split()
    return rest[0], int(rest[1]), int(rest[19])


def server_side_connections(port: int) -> int:
    """How many TCP connections to 127.0.0.1:port the server side still holds (any state but
    LISTEN and TIME_WAIT), from /proc/net/tcp."""
    n = 0
    try:
        lines = Path("/proc/net/tcp").read_text().splitlines()[1:]
    except OSError:
        return 0
    for line in lines:
        f = line.split()
        if len(f) > 3 and f[1].endswith(f":{port:04X}") and f[3] not in ("0A", "06"):
            n += 1
    return n


def pid_alive(pid: int) -> bool:
    st = _proc_stat(pid)
    return st is not None and st[0] not in ("Z", "X")


def children_of(pid: int) -> list[tuple[int, int]]:
    """(pid, starttime) of live processes whose parent is `pid`."""
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        st = _proc_stat(int(name))
        if st and st[1] == pid and st[0] not in ("Z", "X"):
            out.append((int(name), st[2]))
    return out


def _same_process_alive(pid: int, starttime: int) -> bool:
    st = _proc_stat(pid)
    return st is not None and st[2] == starttime and st[0] not in ("Z", "X")


# --------------------------------------------------------------------------- HTTP client

class Headers:
    """Response headers: a list of (name, value) tuples with case-insensitive lookup."""

    def __init__(self, items: list[tuple[str, str]]):
        self.items = list(items)

    def get(self, name: str, default=None):
        n = name.lower()
        for k, v in self.items:
            if k.lower() == n:
                return v
        return default

    def get_all(self, name: str) -> list[str]:
        n = name.lower()
        return [v for k, v in self.items if k.lower() == n]

    def __contains__(self, name: str) -> bool:
        return self.get(name) is not None

    def __getitem__(self, name: str) -> str:
        v = self.get(name)
        if v is None:
            raise KeyError(name)
        return v

    def __iter__(self):
        return iter(self.items)

    def __repr__(self):
        return f"Headers({self.items!r})"


@dataclass
class Response:
    status: int = 0
    reason: str = ""
    version: str = ""
    headers: Headers = field(default_factory=lambda: Headers([]))
    body: bytes = b""
    complete: bool = False
    # how the body was delimited: "chunked", "length", "close", "none"
    framing: str = ""
    timed_out: bool = False
    error: str = ""
    raw_head: bytes = b""
    elapsed: float = 0.0
    # (seconds since the request was sent, bytes) for each body piece as it arrived
    pieces: list = field(default_factory=list)

    def json(self):
        import json
        return json.loads(self.body.decode("utf-8"))

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def __repr__(self):
        b = self.body if len(self.body) < 300 else self.body[:300] + b"..."
        return (f"<Response {self.status} {self.reason!r} complete={self.complete} "
                f"framing={self.framing} timed_out={self.timed_out} error={self.error!r} "
                f"headers={self.headers.items!r} body={b!r}>")


class _Reader:
    def __init__(self, sock: socket.socket, t0: float):
        self.sock = sock
        self.buf = b""
        self.eof = False
        self.t0 = t0

    def _fill(self) -> bool:
        if self.eof:
            return False
        data = self.sock.recv(65536)
        if not data:
            self.eof = True
            return False
        self.buf += data
        return True

    def readline(self) -> bytes | None:
        while b"\n" not in self.buf:
            if not self._fill():
                return None
        i = self.buf.index(b"\n") + 1
        line, self.buf = self.buf[:i], self.buf[i:]
        return line

    def read_exact(self, n: int, pieces: list | None = None) -> tuple[bytes, bool]:
        out = []
        got = 0
        while got < n:
            if not self.buf and not self._fill():
                return b"".join(out), False
            take = self.buf[: n - got]
            self.buf = self.buf[len(take):]
            out.append(take)
            got += len(take)
            if pieces is not None:
                pieces.append((time.monotonic() - self.t0, take))
        return b"".join(out), True

    def read_all(self, pieces: list | None = None) -> bytes:
        out = []
        while True:
            if self.buf:
                out.append(self.buf)
                if pieces is not None:
                    pieces.append((time.monotonic() - self.t0, self.buf))
                self.buf = b""
            if not self._fill():
                return b"".join(out)


def http_request(port: int, method: str, path: str, body: bytes | str | None = None,
                 headers=None, chunked: bool = False, http10: bool = False,
                 host: str = "127.0.0.1", timeout: float = SOCKET_TIMEOUT,
                 chunk_size: int = 7, read_body: bool = True) -> Response:
    """One request on a fresh connection (Connection: close). Never raises for HTTP-level
    problems: connection errors and timeouts are reported in Response.error/timed_out."""
    if isinstance(body, str):
        body = body.encode("utf-8")
    if isinstance(headers, dict):
        headers = list(headers.items())
    headers = list(headers or [])
    names = {k.lower() for k, _ in headers}
    proto = "HTTP/1.0" if http10 else "HTTP/1.1"
    lines = [f"{method} {path} {proto}"]
    if "host" not in names:
        lines.append(f"Host: {host}:{port}")
    if "connection" not in names:
        lines.append("Connection: close")
    if body is not None:
        if chunked:
            if "transfer-encoding" not in names:
                lines.append("Transfer-Encoding: chunked")
        elif "content-length" not in names:
            lines.append(f"Content-Length: {len(body)}")
    for k, v in headers:
        lines.append(f"{k}: {v}")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    if body is not None:
        if chunked:
            parts = []
            for i in range(0, len(body), chunk_size):
                c = body[i:i + chunk_size]
                parts.append(b"%x\r\n%s\r\n" % (len(c), c))
            parts.append(b"0\r\n\r\n")
            payload = head + b"".join(parts)
        else:
            payload = head + body
    else:
        payload = head

    resp = Response()
    t0 = time.monotonic()
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        sock.settimeout(timeout)
        try:
            sock.sendall(payload)
        except OSError as e:
            # The server may answer (e.g. 411/413) and close before reading everything.
            resp.error = f"send: {e!r}"
        r = _Reader(sock, t0)
        try:
            _read_response(r, resp, method, read_body)
        except socket.timeout:
            resp.timed_out = True
            resp.complete = False
            resp.error = resp.error or "timeout"
        except OSError as e:
            resp.complete = False
            resp.error = (resp.error + "; " if resp.error else "") + f"recv: {e!r}"
    finally:
        sock.close()
    resp.elapsed = time.monotonic() - t0
    return resp


def _read_response(r: _Reader, resp: Response, method: str, read_body: bool):
    while True:
        status_line = r.readline()
        if status_line is None:
            resp.error = resp.error or "connection closed before status line"
            return
        raw_head = [status_line]
        m = re.match(rb"(HTTP/\d\.\d) (\d{3})(?: ([^\r\n]*))?\r?\n$", status_line)
        if not m:
            resp.error = f"bad status line {status_line!r}"
            return
        resp.version = m.group(1).decode()
        resp.status = int(m.group(2))
        resp.reason = (m.group(3) or b"").decode("latin-1")
        items = []
        while True:
            line = r.readline()
            if line is None:
                resp.error = "connection closed inside headers"
                resp.raw_head = b"".join(raw_head)
                return
            raw_head.append(line)
            if line in (b"\r\n", b"\n"):
                break
            k, _, v = line.decode("latin-1").partition(":")
            items.append((k.strip(), v.strip()))
        resp.raw_head = b"".join(raw_head)
        resp.headers = Headers(items)
        if 100 <= resp.status < 200 and resp.status != 101:
            continue  # interim response (100 Continue)
        break

    if not read_body:
        resp.framing = "unread"
        resp.complete = False
        return
    te = (resp.headers.get("Transfer-Encoding") or "").lower()
    cl = resp.headers.get("Content-Length")
    if method.upper() == "HEAD" or resp.status in (204, 304):
        # No body may follow; read until close to prove nothing leaked.
        resp.framing = "none"
        resp.body = r.read_all(resp.pieces)
        resp.complete = True
        return
    if "chunked" in te:
        resp.framing = "chunked"
        out = []
        while True:
            line = r.readline()
            if line is None:
                resp.body = b"".join(out)
                resp.complete = False
                resp.error = resp.error or "connection closed before last chunk"
                return
            size_s = line.split(b";")[0].strip()
            try:
                size = int(size_s, 16)
            except ValueError:
                resp.body = b"".join(out)
                resp.complete = False
                resp.error = f"bad chunk size line {line!r}"
                return
            if size == 0:
                # trailers until the empty line
                while True:
                    t = r.readline()
                    if t is None:
                        resp.body = b"".join(out)
                        resp.complete = False
                        resp.error = "connection closed inside trailers"
                        return
                    if t in (b"\r\n", b"\n"):
                        break
                resp.body = b"".join(out)
                resp.complete = True
                return
            data, ok = r.read_exact(size)
            out.append(data)
            if data:
                resp.pieces.append((time.monotonic() - r.t0, data))
            if not ok:
                resp.body = b"".join(out)
                resp.complete = False
                resp.error = "connection closed inside a chunk"
                return
            crlf = r.readline()
            if crlf not in (b"\r\n", b"\n"):
                resp.body = b"".join(out)
                resp.complete = False
                resp.error = f"missing CRLF after chunk: {crlf!r}"
                return
    if cl is not None:
        resp.framing = "length"
        n = int(cl)
        resp.body, resp.complete = r.read_exact(n, resp.pieces)
        if not resp.complete:
            resp.error = resp.error or f"connection closed after {len(resp.body)} of {n} bytes"
        return
    resp.framing = "close"
    resp.body = r.read_all(resp.pieces)
    resp.complete = True


def close_servers(servers: list, failed: bool, log_dest: Path) -> tuple[list[str], Path | None]:
    """Stop every server and collect its problems (a stop that needed SIGKILL, forbidden
    error-log lines). When anything failed (`failed`, or a problem found here) the logs are
    saved under log_dest. The ServerRoots are removed unless RWSGI_KEEP is set. Returns
    (problems, where the logs were saved or None)."""
    problems = []
    for i, srv in enumerate(servers):
        try:
            srv.stop()
        except Exception as e:  # pragma: no cover - reported below
            problems.append(f"server{i}: stop failed: {e!r}")
        problems += [f"server{i}: {p}" for p in srv.problems]
        bad = srv.log_violations()
        if bad:
            problems.append(f"server{i}: forbidden error-log lines:\n  " + "\n  ".join(bad[:30]))
    saved = None
    if failed or problems:
        for i, srv in enumerate(servers):
            srv.save_logs(log_dest / f"server{i}")
        saved = log_dest
    if not os.environ.get("RWSGI_KEEP"):
        for srv in servers:
            srv.cleanup()
    return problems, saved


# --------------------------------------------------------------------------- Apache

class Apache:
    """A private Apache instance. Typical use (through the `apache` fixture):

        srv = apache_factory(mpm="event")
        script = srv.app("echo.wsgi")
        srv.start(srv.mount("/app", script))
        r = srv.request("GET", "/app/x")
    """

    def __init__(self, mpm: str = "event", mode: str = "embedded", load_module: bool = True,
                 modules: Iterable[str] = (), name: str = "test", log_level: str = "info rwsgi:debug",
                 daemon_options: str = DAEMON_OPTIONS, sizing: str | None = None):
        if mpm not in MPM_MODULES:
            raise HarnessError(f"unknown MPM {mpm!r}")
        self.mpm = mpm
        # MPM sizing directives replacing MPM_SIZING's (a test that needs more workers).
        self.sizing = sizing
        self.mode = mode
        self.load_module = load_module
        self.modules = list(modules)
        for m in self.modules:
            if m not in OPTIONAL_MODULES:
                raise HarnessError(f"unknown optional module {m!r}")
        self.log_level = log_level
        # options of the daemon group every daemon-mode mount uses
        self.daemon_options = daemon_options
        if load_module:
            check_so()
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", name)[:60]
        self.root = Path(tempfile.mkdtemp(prefix=f"rwsgi-{safe}-", dir="/tmp"))
        os.chmod(self.root, 0o755)
        for d, mode_ in (("logs", 0o755), ("run", 0o755), ("htdocs", 0o755), ("apps", 0o755),
                         ("conf", 0o755), ("data", 0o755), ("state", 0o777)):
            (self.root / d).mkdir()
            os.chmod(self.root / d, mode_)
        if COREDUMP:
            (self.root / "cores").mkdir()
            os.chmod(self.root / "cores", 0o777)
        (self.root / "htdocs" / "index.html").write_text("rwsgi test root\n")
        os.chmod(self.root / "htdocs" / "index.html", 0o644)
        self.port = free_port()
        self.conf_path = self.root / "conf" / "httpd.conf"
        self.pid_file = self.root / "run" / "httpd.pid"
        self.log_path = self.root / "logs" / "error.log"
        self.fragment = ""
        self.started = False
        self.started_at = 0.0
        self.parent_pid: int | None = None
        self.allowed_log_patterns: list[str] = []
        self.problems: list[str] = []
        # Extra environment for the httpd processes (the daemons inherit it).
        self.extra_env: dict[str, str] = {}

    # ------------------------------------------------------------------ files
    @property
    def apps(self) -> Path:
        return self.root / "apps"

    @property
    def state(self) -> Path:
        return self.root / "state"

    @property
    def data(self) -> Path:
        return self.root / "data"

    def subst(self, text: str) -> str:
        return (text.replace("@ROOT@", str(self.root))
                    .replace("@STATE@", str(self.state))
                    .replace("@APPS@", str(self.apps))
                    .replace("@DATA@", str(self.data))
                    .replace("@PORT@", str(self.port)))

    def write_file(self, rel: str, content: str | bytes, mode: int = 0o644) -> Path:
        """Write a file under the ServerRoot (world-readable); @ROOT@-style tokens in str
        content are substituted."""
        p = self.root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        for parent in [p.parent, *p.parent.parents]:
            if parent == self.root:
                break
            os.chmod(parent, 0o755)
        if isinstance(content, str):
            p.write_text(self.subst(content))
        else:
            p.write_bytes(content)
        os.chmod(p, mode)
        return p

    def app(self, name: str, dest: str | None = None) -> Path:
        """Copy tests/apps/<name> into the ServerRoot (tokens substituted); return its path."""
        src = APPS_SRC / name
        return self.write_file(f"apps/{dest or name}", src.read_text())

    def mount(self, url: str, script, **opts) -> str:
        """Config lines that mount `script` at `url` in this server's mode. Options use the
        WSGIScriptAlias option names with '_' for '-': callable_object='x'."""
        o = " ".join(f"{k.replace('_', '-')}={v}" for k, v in opts.items())
        if self.mode == "embedded":
            return f"WSGIScriptAlias {url} {script} {o}".rstrip() + "\n"
        if self.mode == "daemon":
            # The group is defined once in render_conf(); every mount uses it.
            if "process-group=" not in o:
                o = f"process-group={DAEMON_GROUP} {o}"
            return f"WSGIScriptAlias {url} {script} {o}".rstrip() + "\n"
        raise HarnessError(f"mode {self.mode!r} not implemented in the harness")

    def tls_fragment(self) -> tuple[str, int]:
        """Config lines for a second listener on another loopback port serving TLS (mod_ssl,
        a self-signed certificate made here; the server needs modules=["ssl",
        "socache_shmcb"]) with the same URLs, and that port."""
        port = free_port()
        key, crt = self.root / "conf" / "tls.key", self.root / "conf" / "tls.crt"
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                        "-subj", "/CN=127.0.0.1", "-keyout", str(key), "-out", str(crt)],
                       check=True, capture_output=True, timeout=60)
        os.chmod(key, 0o600)
        # NumTickets 0: no TLS 1.3 session tickets after the handshake. websockets' sync
        # client reads the socket in a thread of its own while the main thread writes the
        # upgrade request; when the reader handles a ticket at that moment the request can be
        # lost inside the client (its write succeeds, 597 bytes - the handshake alone - leave
        # the socket) and Apache waits Timeout for it: the wss:// conformance flake (measured
        # with plain Apache too: 6-10 lost in 3000 connections over TLS 1.3, none without
        # tickets or over TLS 1.2). No test resumes a session, so nothing is lost.
        return (f"Listen 127.0.0.1:{port}\n"
                f"SSLSessionCache shmcb:{self.root}/run/ssl_scache(512000)\n"
                f"<VirtualHost 127.0.0.1:{port}>\n"
                f"SSLEngine on\nSSLCertificateFile {crt}\nSSLCertificateKeyFile {key}\n"
                f"SSLOpenSSLConfCmd NumTickets 0\n"
                f"</VirtualHost>\n"), port

    # ------------------------------------------------------------------ config
    def render_conf(self, fragment: str | None = None) -> str:
        if fragment is not None:
            self.fragment = self.subst(fragment)
        r = self.root
        mods = [("mpm", MPM_MODULES[self.mpm].split()[0], MPM_MODULES[self.mpm].split()[1])]
        mods += [(n, n, f) for n, f in BASE_MODULES]
        mods += [(m, *OPTIONAL_MODULES[m]) for m in self.modules]
        load = "\n".join(f"LoadModule {n} {MODULES_DIR / f}" for _, n, f in mods)
        rwsgi = f"LoadModule rwsgi_module {SO_PATH}\n" if self.load_module else ""
        daemon = (f"WSGIDaemonProcess {DAEMON_GROUP} {self.daemon_options}\n"
                  if self.mode == "daemon" and self.load_module else "")
        level = self.log_level if self.load_module else self.log_level.replace(" rwsgi:debug", "")
        return f"""\
# generated by tests/harness.py
ServerRoot "{r}"
Listen 127.0.0.1:{self.port}
ServerName 127.0.0.1
PidFile {r}/run/httpd.pid
DefaultRuntimeDir {r}/run
Mutex file:{r}/run default
ErrorLog {r}/logs/error.log
LogLevel {level}
User www-data
Group www-data
{load}
{self.sizing or MPM_SIZING[self.mpm]}{f"CoreDumpDirectory {r}/cores" + chr(10) if COREDUMP else ""}Timeout 20
KeepAlive On
KeepAliveTimeout 2
TypesConfig /etc/mime.types
DocumentRoot {r}/htdocs
<Directory />
    AllowOverride None
    Require all denied
</Directory>
<Directory {r}/htdocs>
    Require all granted
</Directory>
<Directory {r}/apps>
    Require all granted
</Directory>
{rwsgi}{daemon}
# ---- test fragment
{self.fragment}
"""

    def write_conf(self, fragment: str | None = None) -> Path:
        self.conf_path.write_text(self.render_conf(fragment))
        os.chmod(self.conf_path, 0o644)
        return self.conf_path

    def _env(self):
        return {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8", **self.extra_env}

    def _ctl(self, *args, timeout=60) -> subprocess.CompletedProcess:
        def allow_core():
            import resource
            resource.setrlimit(resource.RLIMIT_CORE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))

        return subprocess.run([APACHE_BIN, "-f", str(self.conf_path), *args],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              env=self._env(), timeout=timeout, cwd=str(self.root),
                              preexec_fn=allow_core if COREDUMP else None)

    def configtest(self, fragment: str | None = None) -> tuple[int, str]:
        self.write_conf(fragment)
        p = self._ctl("-t")
        return p.returncode, p.stdout.decode("utf-8", "replace")

    # ------------------------------------------------------------------ lifecycle
    def start(self, fragment: str | None = None):
        self.write_conf(fragment)
        p = self._ctl("-k", "start")
        out = p.stdout.decode("utf-8", "replace")
        if p.returncode != 0:
            raise HarnessError(f"apache2 -k start failed (rc={p.returncode}):\n{out}\n"
                               f"--- error log:\n{self.error_log()}")
        self.started = True
        self.started_at = time.monotonic()
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            pid = self._read_pid()
            if pid is not None:
                self.parent_pid = pid
                if not pid_alive(pid):
                    raise HarnessError(f"apache parent {pid} died during startup\n"
                                       f"--- error log:\n{self.error_log()}")
                if self._port_accepts():
                    return self
            time.sleep(0.05)
        raise HarnessError(f"apache did not start within {START_TIMEOUT}s (start output: {out!r})\n"
                           f"--- error log:\n{self.error_log()}")

    def _read_pid(self) -> int | None:
        try:
            t = self.pid_file.read_text().strip()
            return int(t) if t else None
        except (FileNotFoundError, ValueError):
            return None

    def _port_accepts(self) -> bool:
        return port_accepts(self.port)

    def child_pids(self) -> list[int]:
        pid = self.parent_pid or self._read_pid()
        return [p for p, _ in children_of(pid)] if pid else []

    def graceful(self, probe_path: str = "/index.html", timeout: float = START_TIMEOUT):
        """`apache2 -k graceful`, then wait for the new generation to answer."""
        before = self.error_log().count("resuming normal operations")
        self.started_at = time.monotonic()  # new children start now (see stop())
        p = self._ctl("-k", "graceful")
        if p.returncode != 0:
            raise HarnessError(f"apache2 -k graceful failed (rc={p.returncode}):\n"
                               f"{p.stdout.decode('utf-8', 'replace')}")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.error_log().count("resuming normal operations") > before:
                break
            time.sleep(0.05)
        else:
            raise HarnessError("no 'resuming normal operations' after graceful\n" + self.error_log())
        while time.monotonic() < deadline:
            r = self.request("GET", probe_path, timeout=5)
            if r.status:
                return r
            time.sleep(0.1)
        raise HarnessError("server did not answer after graceful\n" + self.error_log())

    def stop(self):
        """SIGTERM the parent from the pid file and wait; SIGKILL leftovers (and record it as
        a problem) if it does not stop in time. Idempotent."""
        if not self.started:
            return
        self.started = False
        pid = self._read_pid() or self.parent_pid
        if pid is None or not pid_alive(pid):
            return
        # httpd 2.4's event MPM can segfault in a child told to exit while it is still starting
        # its threads (reproduced with plain Apache, no mod_rwsgi loaded: about 1 stop in 40
        # within 0.1 s of start). Give a just-started server that long, so a crash in the log
        # always means something real.
        settle = MIN_UPTIME_BEFORE_STOP - (time.monotonic() - self.started_at)
        if settle > 0:
            time.sleep(settle)
        # The event MPM's ungraceful stop reads each worker's current client socket while the
        # worker may be freeing it (close_worker_sockets), and can segfault: seen about once in
        # 30 stops right after a burst of 1,000 requests. Let connections the clients already
        # closed finish first (bounded), so a crash in the log always means something real.
        deadline = time.monotonic() + STOP_DRAIN_TIMEOUT
        while server_side_connections(self.port) and time.monotonic() < deadline:
            time.sleep(0.02)
        kids = children_of(pid)
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + STOP_TIMEOUT
        resent = False
        while time.monotonic() < deadline:
            if not pid_alive(pid):
                break
            if not resent and time.monotonic() > deadline - STOP_TIMEOUT / 2:
                # documented: an early -X run once ignored the first SIGTERM
                resent = True
                try:
                    os.kill(pid, signal.SIGTERM)
                except ProcessLookupError:
                    break
            time.sleep(0.05)
        if pid_alive(pid):
            self.problems.append(f"apache parent {pid} did not exit within {STOP_TIMEOUT}s of "
                                 f"SIGTERM; SIGKILLed it and its children")
            for cpid, start in children_of(pid):
                if _same_process_alive(cpid, start):
                    os.kill(cpid, signal.SIGKILL)
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        # Children recorded before the stop must be gone too.
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(_same_process_alive(c, s) for c, s in kids):
            time.sleep(0.05)
        for c, s in kids:
            if _same_process_alive(c, s):
                self.problems.append(f"apache child {c} survived the parent; SIGKILLed it")
                os.kill(c, signal.SIGKILL)

    # ------------------------------------------------------------------ requests/logs
    def request(self, method: str, path: str, body=None, headers=None, chunked=False,
                http10=False, **kw) -> Response:
        return http_request(self.port, method, path, body=body, headers=headers,
                            chunked=chunked, http10=http10, **kw)

    def get(self, path: str, **kw) -> Response:
        return self.request("GET", path, **kw)

    def error_log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_for_log(self, pattern: str, timeout: float = 10.0, count: int = 1) -> bool:
        """Poll the error log until the regex matches `count` times."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            if len(rx.findall(self.error_log())) >= count:
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)

    def allow_log(self, pattern: str):
        """Allow error-log lines matching this regex even if they match a forbidden pattern."""
        self.allowed_log_patterns.append(pattern)

    def log_violations(self) -> list[str]:
        bad = []
        forb = [re.compile(p) for p in FORBIDDEN_LOG_PATTERNS]
        allowed = [re.compile(p) for p in self.allowed_log_patterns]
        for line in self.error_log().splitlines():
            if any(f.search(line) for f in forb) and not any(a.search(line) for a in allowed):
                bad.append(line)
        return bad

    def save_logs(self, dest: Path) -> Path:
        dest.mkdir(parents=True, exist_ok=True)
        for sub in ("logs", "conf", "apps", "cores"):
            src = self.root / sub
            if src.exists():
                shutil.copytree(src, dest / sub, dirs_exist_ok=True)
        return dest

    def cleanup(self):
        shutil.rmtree(self.root, ignore_errors=True)


def expect_continue(port: int, method: str, path: str, body: bytes, headers=(),
                    timeout: float = SOCKET_TIMEOUT) -> tuple[bytes, Response]:
    """A client that waits for `100 Continue` before sending its body, as curl does for uploads.
    Returns (the interim line or b"" if none came within the wait, the final response)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        head = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Connection: close",
                "Expect: 100-continue", f"Content-Length: {len(body)}"]
        head += [f"{k}: {v}" for k, v in headers]
        sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
        reader = _Reader(sock, time.monotonic())
        sock.settimeout(20)  # a liveness bound: the interim answer should come at once
        try:
            interim = reader.readline() or b""
            if interim.startswith(b"HTTP/1.1 100"):
                assert reader.readline() in (b"\r\n", b"\n")
        except socket.timeout:
            interim = b""
        sock.settimeout(timeout)
        resp = Response()
        if interim and not interim.startswith(b"HTTP/1.1 100"):
            reader.buf = interim + reader.buf  # a final answer came instead: no body to send
        else:
            sock.sendall(body)
        _read_response(reader, resp, method, True)
        return interim.strip(), resp
    finally:
        sock.close()


def client_frame(opcode: int, payload: bytes, fin: bool = True, rsv: int = 0) -> bytes:
    """One WebSocket frame as a client sends it (RFC 6455: masked with a random key)."""
    mask = os.urandom(4)
    n = len(payload)
    head = bytes([(0x80 if fin else 0) | rsv | opcode])
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 65536:
        head += bytes([0x80 | 126]) + n.to_bytes(2, "big")
    else:
        head += bytes([0x80 | 127]) + n.to_bytes(8, "big")
    # XOR with the repeated key, as one big integer (fast for megabytes).
    key = (mask * (n // 4 + 1))[:n]
    masked = (int.from_bytes(payload, "little") ^ int.from_bytes(key, "little")).to_bytes(
        n, "little")
    return head + mask + masked


class WebSocket:
    """A minimal RFC 6455 client on a raw socket (standard library only), for the tests: the
    handshake, masked frames out, frames in (`recv` gives (opcode, payload) of one frame)."""

    GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

    def __init__(self, port: int, path: str, headers=(), timeout: float = SOCKET_TIMEOUT,
                 tls: bool = False):
        import base64
        import os as _os
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        if tls:
            # wss:// to a test server's self-signed certificate (Apache.tls_fragment).
            import ssl
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            self.sock = ctx.wrap_socket(self.sock, server_hostname="127.0.0.1")
        self.key = base64.b64encode(_os.urandom(16)).decode()
        lines = [f"GET {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Upgrade: websocket",
                 "Connection: Upgrade", f"Sec-WebSocket-Key: {self.key}",
                 "Sec-WebSocket-Version: 13", *(f"{k}: {v}" for k, v in headers)]
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                break
            self.buf += chunk
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        self.status = int(lines[0].split()[1]) if lines and len(lines[0].split()) > 1 else 0
        self.headers = Headers([tuple(x.strip() for x in line.split(":", 1))
                                for line in lines[1:] if ":" in line])

    def accept_ok(self) -> bool:
        import base64
        import hashlib
        want = base64.b64encode(hashlib.sha1(self.key.encode() + self.GUID).digest()).decode()
        return self.status == 101 and self.headers.get("Sec-WebSocket-Accept") == want

    def body(self) -> bytes:
        """The rest of a non-101 answer (a denial), read to the end."""
        while True:
            chunk = self.sock.recv(65536)
            if not chunk:
                return self.buf
            self.buf += chunk

    def send_frame(self, opcode: int, payload: bytes, fin: bool = True, rsv: int = 0):
        self.sock.sendall(client_frame(opcode, payload, fin, rsv))

    def send_text(self, text: str):
        self.send_frame(0x1, text.encode())

    def send_bytes(self, data: bytes):
        self.send_frame(0x2, data)

    def close(self, code: int = 1000, reason: str = ""):
        self.send_frame(0x8, code.to_bytes(2, "big") + reason.encode())

    def _read(self, n: int) -> bytes:
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("connection closed")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def recv(self) -> tuple[int, bytes]:
        """One frame: (opcode, payload); EOFError when the server closed the connection."""
        b0, b1 = self._read(2)
        n = b1 & 0x7F
        if n == 126:
            n = int.from_bytes(self._read(2), "big")
        elif n == 127:
            n = int.from_bytes(self._read(8), "big")
        assert not b1 & 0x80, "a server frame must not be masked"
        return b0 & 0x0F, self._read(n)

    def recv_message(self) -> tuple[int, bytes]:
        """The next frame that is not a ping or pong (messages up to 1 MiB come whole)."""
        op, data = self.recv()
        while op in (0x9, 0xA):
            op, data = self.recv()
        return op, data

    def shutdown(self):
        try:
            self.sock.close()
        except OSError:
            pass
