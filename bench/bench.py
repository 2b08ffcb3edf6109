#!/usr/bin/env python3
"""Benchmark driver (tool, run by scripts/bench.sh): mod_rwsgi side by side with mod_wsgi and
Apache's static file serving; for WSGI with the stacks users run instead (gunicorn behind
Apache's mod_proxy_http, uWSGI behind mod_proxy_uwsgi) and gunicorn, uWSGI and granian alone;
for ASGI with uvicorn behind Apache's mod_proxy_http and uvicorn and granian alone; on loopback
with wrk.

Every server is a private Apache (event MPM, one configuration template; only the module lines
differ) started through tests/harness.py's Apache lifecycle (own ServerRoot, pid file, stop by
PID). Rounds alternate between servers; each round starts a server, runs every selected
workload once against it (short warm-up, then the measured wrk run), and stops it. Per run:
req/s, p50/p99 latency, server CPU (utime+stime of the httpd parent, its children and daemons,
from /proc/<pid>/stat deltas) per request, and PSS (/proc/<pid>/smaps_rollup) after the run.
Writes a markdown report (plus raw JSON) to bench/results/ and prints its path.

Only the standard library and wrk are used, plus the reference servers (a venv built once from
bench/requirements-peers.txt, PyPI needed the first time).
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
sys.path.insert(0, str(REPO / "tests"))

import harness  # noqa: E402

WRK = shutil.which("wrk") or "/usr/bin/wrk"
MOD_WSGI_SO = Path(os.environ.get("BENCH_MOD_WSGI", "/usr/lib/apache2/modules/mod_wsgi.so"))
CLK_TCK = os.sysconf("SC_CLK_TCK")
DISPLAY_NAME = "benchd"  # daemon process name (both modules), to tell daemons from children

# ------------------------------------------------------------------------------ the matrix


@dataclass(frozen=True)
class Server:
    name: str
    module: str | None  # "rwsgi", "wsgi", "base" (mod_rwsgi --baseline build), "py3.12.1" (a
    #                     --python-module build for another Python) or None (static)
    daemon: str | None  # WSGIDaemonProcess options, None for embedded
    # The application group of /app: %{GLOBAL} (the main interpreter), or a named group that
    # shares the process with a second one (so it runs in a sub-interpreter).
    sub: bool = False
    # ASGI servers: "rwsgi" (bench/app_asgi.py in a mod_rwsgi daemon, or embedded in the one
    # httpd child when `daemon` is None), "granian" (granian alone), "proxy" (Apache's
    # mod_proxy_http in front of uvicorn) or "uvicorn" (uvicorn alone); `daemon` holds the
    # process count for the uvicorn ones ("workers=N").
    asgi: str | None = None
    # rwsgi-express servers: its start-server arguments (the configuration it generates, MPM
    # sizing included, is what is measured); the app is mounted at /app and the static files
    # at /static.
    express: str | None = None
    # WSGI peers (the stacks users run instead of a WSGI module): "gunicorn" (sync workers, or
    # gthread with threads=N), "uwsgi" or "granian" serving bench/app.wsgi at /app, behind
    # Apache (`proxied`: mod_proxy_http, mod_proxy_uwsgi for uWSGI) or alone; `daemon` holds
    # their process options ("workers=4", "processes=2 threads=15").
    peer: str | None = None
    proxied: bool = False

    @property
    def mode(self) -> str:
        if self.express is not None:
            return "express"
        if self.peer is not None:
            return "peer-proxied" if self.proxied else "peer-alone"
        if self.asgi in ("proxy", "uvicorn", "granian"):
            return self.asgi
        if self.module is None:
            return "static"
        return "daemon" if self.daemon else "embedded"


SERVERS = [
    Server("static", None, None),
    Server("rwsgi-embedded", "rwsgi", None),
    Server("wsgi-embedded", "wsgi", None),
    Server("rwsgi-daemon-p1t15", "rwsgi", "processes=1 threads=15"),
    Server("wsgi-daemon-p1t15", "wsgi", "processes=1 threads=15"),
    Server("rwsgi-daemon-p2t15", "rwsgi", "processes=2 threads=15"),
    Server("wsgi-daemon-p2t15", "wsgi", "processes=2 threads=15"),
    # The cost of a sub-interpreter (hello workloads only): /app in application group
    # 'bench', with a second group mounted in the same process.
    Server("rwsgi-embedded-sub", "rwsgi", None, sub=True),
    Server("rwsgi-daemon-p1t15-sub", "rwsgi", "processes=1 threads=15", sub=True),
    # ASGI (bench/app_asgi.py): one process each.
    Server("rwsgi-asgi-p1", "rwsgi", "processes=1 threads=15", asgi="rwsgi"),
    # Embedded ASGI: one httpd child (ONE_CHILD_CONF), so one event loop, as uvicorn's one
    # worker.
    Server("rwsgi-asgi-embedded", "rwsgi", None, asgi="rwsgi"),
    Server("proxy-uvicorn-w1", None, "workers=1", asgi="proxy"),
    Server("uvicorn-w1", None, "workers=1", asgi="uvicorn"),
    # granian (Rust HTTP server, ASGI interface) alone: the other reference the issue names.
    Server("granian-w1", None, "workers=1", asgi="granian"),
    # rwsgi-express's generated configuration as a new user gets it (issue 18: errors are the
    # point here): the default MPM, event, and a static file through the same configuration.
    Server("express-daemon-p2t10", "rwsgi", None, express="--processes 2 --threads 10"),
    Server("express-embedded-p2t10", "rwsgi", None,
           express="--processes 2 --threads 10 --embedded-mode"),
    Server("express-event-daemon-p2t10", "rwsgi", None,
           express="--processes 2 --threads 10 --server-mpm event"),
    Server("express-static", None, None, express="--processes 2 --threads 10"),
    # What users run instead (issue 16): Apache in front of gunicorn (sync workers, 2 x cores;
    # gthread with the daemon cells' processes x threads) and of uWSGI (the daemon cells'
    # processes x threads), and the same servers alone, with granian's WSGI interface, for what
    # Apache itself costs.
    Server("proxy-gunicorn-sync-w4", None, "workers=4", peer="gunicorn", proxied=True),
    Server("proxy-gunicorn-gthread-w2t15", None, "workers=2 threads=15", peer="gunicorn",
           proxied=True),
    Server("proxy-uwsgi-p2t15", None, "processes=2 threads=15", peer="uwsgi", proxied=True),
    Server("gunicorn-sync-w4", None, "workers=4", peer="gunicorn"),
    Server("uwsgi-p2t15", None, "processes=2 threads=15", peer="uwsgi"),
    Server("granian-wsgi-w2", None, "workers=2 threads=15", peer="granian"),
]
# The workloads the WSGI peers run.
PEER_WORKLOADS = {"hello-c32", "hello-c256", "body64k", "echo1m"}
# The workloads the rwsgi-express servers run.
EXPRESS_WORKLOADS = {"hello-c32", "hello-c256"}
EXPRESS_BIN = Path(os.environ.get("RWSGI_EXPRESS", str(REPO / "target" / "release" / "rwsgi-express")))
# The workloads the ASGI servers run (and the one only they run).
ASGI_WORKLOADS = {"hello-c32", "hello-c256", "body64k", "echo1m", "stream64k", "ws-echo"}

# With --baseline: another build of mod_rwsgi (the one before a change) in the same run, so a
# change is judged against its predecessor on the same machine at the same time.
BASELINE_SERVERS = [
    Server("base-embedded", "base", None),
    Server("base-daemon-p1t15", "base", "processes=1 threads=15"),
    Server("base-daemon-p2t15", "base", "processes=2 threads=15"),
]
BASELINE_SO: Path | None = None

# With --python-module VERSION=SO (scripts/bench.sh --python X.Y builds them): mod_rwsgi built for
# another Python, served as py<VERSION>-* servers with the hello workloads, so the cost of a
# Python upgrade shows in the same run as the system Python's rwsgi-* rows.
PYTHON_SOS: dict[str, Path] = {}
PYTHON_WORKLOADS = {"hello-c32", "hello-c4"}


def python_servers(version: str) -> list[Server]:
    return [Server(f"py{version}-embedded", f"py{version}", None),
            Server(f"py{version}-daemon-p2t15", f"py{version}", "processes=2 threads=15")]


@dataclass(frozen=True)
class Workload:
    name: str
    app_path: str  # under the WSGI mount
    static_path: str | None  # the same bytes as a static file (None: no static equivalent)
    connections: int
    body_bytes: int  # expected response size
    post_bytes: int = 0
    description: str = ""


WORKLOADS = [
    Workload("hello-c32", "/hello", "/hello.txt", 32, 13, description="13-byte hello, 32 connections"),
    Workload("hello-c4", "/hello", "/hello.txt", 4, 13, description="13-byte hello, 4 connections"),
    Workload("hello-c256", "/hello", "/hello.txt", 256, 13, description="13-byte hello, 256 connections"),
    Workload("body64k", "/64k", "/64k.bin", 16, 65536, description="64 KiB body, 16 connections"),
    Workload("echo1m", "/echo", None, 8, 1 << 20, post_bytes=1 << 20,
             description="POST echo of a 1 MiB body, 8 connections"),
    Workload("file64m", "/file64m", "/64m.bin", 4, 64 << 20,
             description="64 MiB download (wsgi.file_wrapper / static file), 4 connections"),
    Workload("stream64k", "/stream", None, 16, 65536,
             description="ASGI only: 64 KiB streamed as 16 body messages (chunked), 16 connections"),
    Workload("ws-echo", "/ws", None, 16, 64,
             description="ASGI only: WebSocket echo of 64-byte text messages, one in flight on "
                         "each of 16 connections (bench/ws_load.py); req/s is messages/s"),
]
# Workloads whose requests are WebSocket messages (bench/ws_load.py instead of wrk).
WS_WORKLOADS = {"ws-echo"}

# --------------------------------------------------------------------------- the server side

MPM_CONF = """\
StartServers 2
ServerLimit 2
ThreadLimit 128
ThreadsPerChild 128
MaxRequestWorkers 256
MinSpareThreads 32
MaxSpareThreads 256
AsyncRequestWorkerFactor 8
MaxConnectionsPerChild 0
"""
# Embedded ASGI: the same capacity in one httpd child (one event loop, one Python).
ONE_CHILD_CONF = """\
StartServers 1
ServerLimit 1
ThreadLimit 256
ThreadsPerChild 256
MaxRequestWorkers 256
MinSpareThreads 32
MaxSpareThreads 256
AsyncRequestWorkerFactor 8
MaxConnectionsPerChild 0
"""


class BenchApache(harness.Apache):
    """A harness Apache with the benchmark's configuration: event MPM sized for 256
    connections, no access log, unlimited keep-alive, and one WSGI module (or none)."""

    def __init__(self, server: Server, share: Path, rwsgi_so: Path, upstream: int | None = None):
        super().__init__(mpm="event", load_module=False, name=f"bench-{server.name}",
                         log_level="warn")
        self.server = server
        self.share = share
        self.rwsgi_so = rwsgi_so
        # uvicorn's port, for the mod_proxy_http server
        self.upstream = upstream

    @staticmethod
    def proxy_lines(module: str, url: str, options: str = "") -> str:
        """mod_proxy and `module` (proxy_http, proxy_uwsgi) loaded, /app passed to `url`."""
        mods = [("proxy_module", "mod_proxy.so"), (f"{module}_module", f"mod_{module}.so")]
        lines = "".join(f"LoadModule {n} {harness.MODULES_DIR / f}\n" for n, f in mods)
        lines += f"ProxyPass /app {url} {options}".rstrip() + "\n"
        if url.startswith("http://"):
            lines += f"ProxyPassReverse /app {url}\n"
        return lines

    def module_lines(self) -> str:
        s = self.server
        if s.peer == "uwsgi":
            return self.proxy_lines("proxy_uwsgi", f"uwsgi://127.0.0.1:{self.upstream}/app")
        if s.peer is not None:
            return self.proxy_lines("proxy_http", f"http://127.0.0.1:{self.upstream}/app")
        if s.asgi == "proxy":
            return self.proxy_lines("proxy_http", f"http://127.0.0.1:{self.upstream}/app",
                                    "upgrade=websocket")
        if s.asgi == "rwsgi" and s.daemon is None:
            return (f"LoadModule rwsgi_module {self.rwsgi_so}\n"
                    f"WSGIScriptAlias /app {self.share}/app_asgi.py "
                    f"application-group=%{{GLOBAL}}\n")
        if s.asgi == "rwsgi":
            return (f"LoadModule rwsgi_module {self.rwsgi_so}\n"
                    f"WSGISocketPrefix {self.root}/run/wsgi\n"
                    f"WSGIDaemonProcess bench {s.daemon} display-name={DISPLAY_NAME}\n"
                    f"WSGIScriptAlias /app {self.share}/app_asgi.py process-group=bench "
                    f"application-group=%{{GLOBAL}}\n")
        if s.module is None:
            return ""
        so = {"rwsgi": self.rwsgi_so, "base": BASELINE_SO,
              **{f"py{v}": p for v, p in PYTHON_SOS.items()}}.get(s.module, MOD_WSGI_SO)
        name = "wsgi_module" if s.module == "wsgi" else "rwsgi_module"
        lines = [f"LoadModule {name} {so}",
                 f"WSGISocketPrefix {self.root}/run/wsgi",
                 "WSGIApplicationGroup " + ("bench" if s.sub else "%{GLOBAL}")]
        if s.daemon:
            lines.append(f"WSGIDaemonProcess bench {s.daemon} display-name={DISPLAY_NAME}")
            lines.append("WSGIProcessGroup bench")
        lines.append(f"WSGIScriptAlias /app {self.share}/app.wsgi")
        if s.sub:
            lines.append(f"WSGIScriptAlias /other {self.share}/app.wsgi application-group=other")
        return "\n".join(lines) + "\n"

    def render_conf(self, fragment: str | None = None) -> str:
        r = self.root
        mods = [("mpm_event_module", "mod_mpm_event.so"), ("authz_core_module", "mod_authz_core.so"),
                ("mime_module", "mod_mime.so")]
        load = "\n".join(f"LoadModule {n} {harness.MODULES_DIR / f}" for n, f in mods)
        return f"""\
# generated by bench/bench.py for server {self.server.name}
ServerRoot "{r}"
Listen 127.0.0.1:{self.port}
ServerName 127.0.0.1
PidFile {r}/run/httpd.pid
DefaultRuntimeDir {r}/run
Mutex file:{r}/run default
ErrorLog {r}/logs/error.log
LogLevel warn
User www-data
Group www-data
{load}
{ONE_CHILD_CONF if self.server.asgi and self.server.daemon is None else MPM_CONF}Timeout 30
KeepAlive On
KeepAliveTimeout 10
MaxKeepAliveRequests 0
TypesConfig /etc/mime.types
DocumentRoot {self.share}/data
<Directory />
    AllowOverride None
    Require all denied
</Directory>
<Directory {self.share}>
    Require all granted
</Directory>
{self.module_lines()}"""


def make_share() -> Path:
    """The files every server uses: the app, and the static files the workloads fetch."""
    share = Path(tempfile.mkdtemp(prefix="rwsgi-bench-", dir="/tmp"))
    os.chmod(share, 0o755)
    (share / "data").mkdir(mode=0o755)
    shutil.copy(BENCH_DIR / "app.wsgi", share / "app.wsgi")
    # gunicorn and granian import a module: the same file under an importable name.
    shutil.copy(BENCH_DIR / "app.wsgi", share / "app_wsgi.py")
    shutil.copy(BENCH_DIR / "app_asgi.py", share / "app_asgi.py")
    (share / "data" / "hello.txt").write_bytes(b"Hello, world!")
    (share / "data" / "64k.bin").write_bytes(b"x" * 65536)
    block = os.urandom(1 << 20)
    with open(share / "data" / "64m.bin", "wb") as f:
        for _ in range(64):
            f.write(block)
    for p in [share / "app.wsgi", share / "app_wsgi.py", share / "app_asgi.py",
              *(share / "data").iterdir()]:
        os.chmod(p, 0o644)
    return share


PEER_REQUIREMENTS = BENCH_DIR / "requirements-peers.txt"


def peer_venv() -> Path:
    """A venv of /usr/bin/python3 with the reference servers (bench/requirements-peers.txt),
    built once."""
    import hashlib
    key = hashlib.sha256(PEER_REQUIREMENTS.read_bytes()).hexdigest()[:16]
    dest = Path(f"/tmp/rwsgi-bench-venv-{key}")
    if not (dest / ".complete").exists():
        shutil.rmtree(dest, ignore_errors=True)
        subprocess.run(["/usr/bin/python3", "-m", "venv", str(dest)], check=True)
        subprocess.run([str(dest / "bin" / "pip"), "install", "--no-input", "--quiet",
                        "--disable-pip-version-check", "-r", str(PEER_REQUIREMENTS)], check=True)
        for d, _, files in os.walk(dest):
            os.chmod(d, 0o755)
        (dest / ".complete").write_text("")
    return dest


def app_answers(port: int) -> bool:
    """Whether a server on `port` answers the hello at /app/hello with a 200."""
    try:
        return harness.http_request(port, "GET", "/app/hello", timeout=2).status == 200
    except OSError:
        return False


class Uvicorn:
    """uvicorn (or granian, `kind`) from peer_venv serving the share's app_asgi.py on a port of
    its own, as www-data, `workers` processes; stopped by PID."""

    def __init__(self, share: Path, options: str, kind: str = "uvicorn"):
        workers = int(dict(o.split("=") for o in options.split())["workers"])
        # A port of its own, not --fd: uvicorn takes a passed descriptor for a UNIX socket and
        # then never sets TCP_NODELAY (every response waits 40 ms for a delayed ACK).
        self.port = harness.free_port()
        venv = peer_venv()
        if kind == "granian":
            cmd = [str(venv / "bin" / "granian"), "--interface", "asgi", "--host", "127.0.0.1",
                   "--port", str(self.port), "--working-dir", str(share), "--workers",
                   str(workers), "--log-level", "warning", "--backlog", "1024",
                   "app_asgi:application"]
        else:
            cmd = [str(venv / "bin" / "python"), "-m", "uvicorn", "--host", "127.0.0.1",
                   "--port", str(self.port), "--app-dir", str(share), "--workers", str(workers),
                   "--no-access-log", "--log-level", "warning", "--backlog", "1024",
                   "app_asgi:application"]
        self.proc = subprocess.Popen(cmd, user="www-data", group="www-data", extra_groups=[],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"})
        ok = harness.wait_for(lambda: self.proc.poll() is not None or app_answers(self.port), 30, 0.1)
        if not ok or self.proc.poll() is not None:
            self.stop()
            raise RuntimeError(f"uvicorn did not start: {' '.join(cmd)}")


    def stop(self):
        harness.stop_process(self.proc, timeout=20)


class PeerServer:
    """A WSGI peer (gunicorn, uWSGI or granian from peer_venv) serving the share's app at /app
    on a port of its own, as www-data; stopped by PID (SIGTERM then SIGKILL, then any worker
    left in its process group)."""

    def __init__(self, share: Path, server: Server):
        opts = dict(o.split("=") for o in server.daemon.split())
        self.port = harness.free_port()
        venv = peer_venv()
        addr = f"127.0.0.1:{self.port}"
        backlog = str(min(1024, int(Path("/proc/sys/net/core/somaxconn").read_text())))
        if server.peer == "gunicorn":
            cmd = [str(venv / "bin" / "gunicorn"), "--bind", addr, "--workers", opts["workers"],
                   "--chdir", str(share), "--backlog", backlog, "--log-level", "warning",
                   # gunicorn takes SCRIPT_NAME from its environment and strips it from the path.
                   "--env", "SCRIPT_NAME=/app"]
            if "threads" in opts:
                cmd += ["--worker-class", "gthread", "--threads", opts["threads"]]
            cmd += ["app_wsgi:application"]
        elif server.peer == "uwsgi":
            # Behind Apache: the uwsgi protocol (mod_proxy_uwsgi); alone: HTTP/1.1 with
            # keep-alive (http11-socket), as wrk's connections expect.
            sock = ["--socket", addr] if server.proxied else ["--http11-socket", addr]
            cmd = [str(venv / "bin" / "uwsgi"), *sock, "--master", "--processes",
                   opts["processes"], "--threads", opts["threads"], "--mount",
                   f"/app={share / 'app.wsgi'}", "--manage-script-name", "--listen", backlog,
                   "--disable-logging", "--die-on-term", "--need-app"]
        else:
            cmd = [str(venv / "bin" / "granian"), "--interface", "wsgi", "--host", "127.0.0.1",
                   "--port", str(self.port), "--working-dir", str(share), "--workers",
                   opts["workers"], "--blocking-threads", opts["threads"], "--url-path-prefix",
                   "/app", "--log-level", "warning", "--backlog", backlog, "app_wsgi:application"]
        self.log = share / f"peer-{server.name}.log"
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(cmd, user="www-data", group="www-data", extra_groups=[],
                                         stdout=out, stderr=subprocess.STDOUT, process_group=0,
                                         env={"PATH": f"{venv / 'bin'}:/usr/bin:/bin",
                                              "LANG": "C.UTF-8"})
        # Behind Apache, uWSGI speaks the uwsgi protocol: wait for its port only.
        probe = ((lambda: harness.port_accepts(self.port)) if server.peer == "uwsgi"
                 and server.proxied else (lambda: app_answers(self.port)))
        ok = harness.wait_for(lambda: self.proc.poll() is not None or probe(), 60, 0.2)
        if not ok or self.proc.poll() is not None:
            self.stop()
            raise RuntimeError(f"{server.peer} did not start: {' '.join(cmd)}\n"
                               f"{self.log.read_text(errors='replace')[-3000:]}")

    def stop(self):
        harness.stop_process(self.proc, timeout=20)
        try:  # workers a killed master left behind (its process group is the master's PID)
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


class ExpressServer:
    """rwsgi-express start-server (EXPRESS_BIN) serving the share's app.wsgi at /app and its
    data directory at /static, in a server root of its own; stopped by PID (SIGINT, as a
    terminal's Ctrl-C: rwsgi-express then stops Apache and everything it started)."""

    def __init__(self, share: Path, server: Server, rwsgi_so: Path):
        self.port = harness.free_port()
        self.root = share / f"express-{server.name}"
        cmd = [str(EXPRESS_BIN), "start-server", str(share / "app.wsgi"), "--host", "127.0.0.1",
               "--port", str(self.port), "--server-root", str(self.root), "--module",
               str(rwsgi_so), "--mount-point", "/app", "--url-alias", "/static",
               str(share / "data"), *server.express.split()]
        self.log = share / f"express-{server.name}.log"
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=subprocess.STDOUT, process_group=0)
        ok = harness.wait_for(lambda: self.proc.poll() is not None or app_answers(self.port), 30, 0.2)
        if not ok or self.proc.poll() is not None:
            self.stop()
            raise RuntimeError(f"rwsgi-express did not start: {' '.join(cmd)}\n"
                               f"{self.log.read_text(errors='replace')}")


    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        harness.stop_process(self.proc, timeout=60)


# ------------------------------------------------------------------------------ /proc readers

def _stat_fields(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read().decode("latin-1")
    except OSError:
        return None
    return data[data.rfind(")") + 2:].split()


def process_tree(root: int) -> list[int]:
    """root and all its descendants."""
    parents: dict[int, int] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            st = _stat_fields(int(d))
            if st:
                parents[int(d)] = int(st[1])
    tree, frontier = [root], [root]
    while frontier:
        nxt = [p for p, pp in parents.items() if pp in frontier and p not in tree]
        tree += nxt
        frontier = nxt
    return tree


def tree_cpu_ticks(root: int) -> int:
    """utime+stime of every process in the tree, plus the reaped children the root waited for
    (cutime+cstime), so a child exiting during a run is still counted."""
    total = 0
    for pid in process_tree(root):
        st = _stat_fields(pid)
        if st:
            # fields after comm: state(0) ppid(1) ... utime(11) stime(12) cutime(13) cstime(14)
            total += int(st[11]) + int(st[12])
            if pid == root:
                total += int(st[13]) + int(st[14])
    return total


def tree_switches(root: int) -> int:
    """Context switches (voluntary + involuntary) of every thread of the tree so far. Threads
    that exit during a run take theirs with them; the server's threads live for the run."""
    total = 0
    for pid in process_tree(root):
        try:
            tasks = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for t in tasks:
            try:
                for line in Path(f"/proc/{pid}/task/{t}/status").read_text().splitlines():
                    if "ctxt_switches:" in line:
                        total += int(line.split()[1])
            except (OSError, ValueError, IndexError):
                continue
    return total


def is_daemon(pid: int) -> bool:
    try:
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode("latin-1")
    except OSError:
        return False
    return DISPLAY_NAME in comm or cmd.startswith(DISPLAY_NAME)


def pss_kib(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def memory(roots: list[int], app_roots: list[int]) -> dict:
    daemons, others = [], []
    apps = {p for root in app_roots for p in process_tree(root)}
    for pid in (p for root in roots for p in process_tree(root)):
        kib = pss_kib(pid)
        if kib is None:
            continue
        (daemons if is_daemon(pid) or pid in apps else others).append(kib)
    return {"daemons_kib": sorted(daemons), "httpd_kib": sum(others),
            "total_kib": sum(daemons) + sum(others)}


# ---------------------------------------------------------------------------------- running

RESULT_RE = re.compile(r"BENCH-RESULT (.*)")


def run_wrk(port: int, w: Workload, path: str, seconds: float) -> dict:
    url = f"http://127.0.0.1:{port}{path}"
    threads = min(2, w.connections)
    env = dict(os.environ, BENCH_POST_BYTES=str(w.post_bytes))
    cmd = [WRK, f"-t{threads}", f"-c{w.connections}", f"-d{max(1, round(seconds))}s", "--timeout", "15s",
           "--latency", "-s", str(BENCH_DIR / "report.lua"), url]
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
                       timeout=seconds + 60)
    out = p.stdout.decode("utf-8", "replace")
    m = RESULT_RE.search(out)
    if p.returncode != 0 or not m:
        raise RuntimeError(f"wrk failed (rc={p.returncode}):\n{out}")
    return {k: int(v) for k, v in (kv.split("=") for kv in m.group(1).split())}


def run_ws(port: int, w: Workload, path: str, seconds: float) -> dict:
    cmd = ["/usr/bin/python3", str(BENCH_DIR / "ws_load.py"), f"ws://127.0.0.1:{port}{path}",
           str(w.connections), str(max(1, round(seconds))), str(w.body_bytes)]
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=seconds + 60)
    out = p.stdout.decode("utf-8", "replace")
    m = RESULT_RE.search(out)
    if p.returncode != 0 or not m:
        raise RuntimeError(f"ws_load failed (rc={p.returncode}):\n{out}")
    return {k: int(v) for k, v in (kv.split("=") for kv in m.group(1).split())}


def check_response(port: int, w: Workload, path: str) -> None:
    """One request before timing: the right status and size (and the echoed bytes)."""
    if w.name in WS_WORKLOADS:
        res = run_ws(port, w, path, 1)
        if res["requests"] == 0 or any(v for k, v in res.items() if k.startswith("err_")):
            raise RuntimeError(f"{path}: the WebSocket echo failed: {res}")
        return
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        body = b"ab" * (w.post_bytes // 2) if w.post_bytes else None
        conn.request("POST" if body else "GET", path, body=body)
        resp = conn.getresponse()
        data = resp.read()
    finally:
        conn.close()
    if resp.status != 200 or len(data) != w.body_bytes or (body is not None and data != body):
        raise RuntimeError(f"{path}: status {resp.status}, {len(data)} bytes "
                           f"(expected 200 and {w.body_bytes} bytes)")


@dataclass
class Cell:
    workload: Workload
    server: Server
    runs: list[dict] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"{self.workload.name}/{self.server.name}"


def cells_for(selection: list[str]) -> list[Cell]:
    out = []
    for w in WORKLOADS:
        for s in SERVERS:
            if s.express is not None:
                if w.name not in EXPRESS_WORKLOADS:
                    continue
            elif s.peer is not None:
                if w.name not in PEER_WORKLOADS:
                    continue
            elif s.asgi is not None:
                if w.name not in ASGI_WORKLOADS:
                    continue
            elif w.name == "stream64k" or w.name in WS_WORKLOADS:
                continue
            if s.module is None and s.asgi is None and s.peer is None and w.static_path is None:
                continue
            if s.sub and not w.name.startswith("hello"):
                continue
            if (s.module or "").startswith("py") and w.name not in PYTHON_WORKLOADS:
                continue
            c = Cell(w, s)
            if not selection or any(sel in (w.name, s.name, c.name) for sel in selection):
                out.append(c)
    return out


def request_path(server: Server, w: Workload) -> str:
    """The URL path a workload fetches from a server: the app's, or the static file's."""
    if server.module is None and server.asgi is None and server.peer is None:
        return ("/static" if server.express is not None else "") + w.static_path
    return "/app" + w.app_path


def run_server_round(server: Server, cells: list[Cell], share: Path, rwsgi_so: Path,
                     seconds: float, warmup: float, log) -> None:
    if server.express is not None:
        x = ExpressServer(share, server, rwsgi_so)
        try:
            run_cells(server, cells, x.port, [x.proc.pid], seconds, warmup, log)
        finally:
            x.stop()
        return
    alone = server.asgi in ("uvicorn", "granian") or (server.peer is not None
                                                      and not server.proxied)
    if server.peer is not None:
        upstream = PeerServer(share, server)
    elif server.asgi in ("proxy", "uvicorn", "granian"):
        upstream = Uvicorn(share, server.daemon, server.asgi if alone else "uvicorn")
    else:
        upstream = None
    srv = None
    try:
        roots = []
        if not alone:
            srv = BenchApache(server, share, rwsgi_so, upstream.port if upstream else None)
            srv.start()
            roots.append(srv.parent_pid)
            port = srv.port
        else:
            port = upstream.port
        if upstream is not None:
            roots.append(upstream.proc.pid)
        if server.mode == "daemon":
            found = harness.wait_for(lambda: [p for p in process_tree(srv.parent_pid)
                                               if is_daemon(p)], timeout=20)
            if not found:
                raise RuntimeError(f"{server.name}: no daemon process appeared\n{srv.error_log()}")
        apps = [upstream.proc.pid] if server.peer is not None else []
        run_cells(server, cells, port, roots, seconds, warmup, log, apps)
        bad = srv.log_violations() if srv is not None else []
        if bad:
            log(f"  !! {server.name}: error log has {len(bad)} bad lines, first: {bad[0]}")
    finally:
        if srv is not None:
            srv.stop()
            for p in srv.problems:
                log(f"  !! {p}")
            srv.cleanup()
        if upstream is not None:
            upstream.stop()


# Seconds between the end of a measured run and reading the processes' PSS.
REST_BEFORE_PSS = 1.5


def run_cells(server: Server, cells: list[Cell], port: int, roots: list[int], seconds: float,
              warmup: float, log, app_roots: list[int] | None = None) -> None:
    """Each cell's run against a started server whose processes descend from `roots`; the
    processes under `app_roots` (a WSGI peer's) are its application processes, whose PSS is
    reported as the daemons' is."""
    for cell in cells:
        w = cell.workload
        path = request_path(server, w)
        check_response(port, w, path)
        run = run_ws if w.name in WS_WORKLOADS else run_wrk
        if warmup > 0:
            run(port, w, path, warmup)
        before = sum(tree_cpu_ticks(r) for r in roots)
        switched = sum(tree_switches(r) for r in roots)
        res = run(port, w, path, seconds)
        after = sum(tree_cpu_ticks(r) for r in roots)
        res["switches"] = sum(tree_switches(r) for r in roots) - switched
        res["cpu_us"] = (after - before) * 1_000_000 // CLK_TCK
        # PSS at rest: servers may give memory back once idle (mod_rwsgi's daemons trim their
        # heap within about a second of their last request), so every server gets the same pause.
        time.sleep(REST_BEFORE_PSS)
        res["memory"] = memory(roots, app_roots or [])
        cell.runs.append(res)
        rps = res["requests"] / (res["duration_us"] / 1e6)
        cpu = res["cpu_us"] / max(1, res["requests"])
        errs = sum(v for k, v in res.items() if k.startswith("err_"))
        log(f"  {cell.name:38s} {rps:10.0f} req/s  p99 {res['p99_us'] / 1000:7.2f} ms  "
            f"{cpu:8.1f} us CPU/req  "
            f"{res['switches'] / max(1, res['requests']):5.2f} switches/req"
            + (f"  ERRORS {errs}" if errs else ""))


# ----------------------------------------------------------------------------------- report

def plot(cells: list[Cell], out: Path) -> list[Path]:
    """One chart per workload next to the results file (<out>-<workload>.png): req/s and CPU
    µs per request of each server, medians with the runs' range. Needs matplotlib (Debian's
    python3-matplotlib, which scripts/bench.sh installs); without it, no charts."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("bench: matplotlib not available (python3-matplotlib): no charts", file=sys.stderr)
        return []
    charts = []
    for w in WORKLOADS:
        rows = [(c.server.name, summarize(c)) for c in cells if c.workload == w and c.runs]
        if not rows:
            continue
        names = [n for n, _ in rows]
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 0.45 * len(rows) + 1.6), sharey=True)
        y = list(range(len(rows)))
        colours = ["tab:blue" if n.startswith(("rwsgi", "py3", "express")) else "tab:gray"
                   for n in names]
        rps = [r["rps"] for _, r in rows]
        err = [[r["rps"] - r["rps_min"] for _, r in rows],
               [r["rps_max"] - r["rps"] for _, r in rows]]
        ax1.barh(y, rps, xerr=err, color=colours)
        ax1.set_xlabel("requests/s (higher is better)")
        ax1.set_yticks(y, names, fontsize=8)
        ax1.invert_yaxis()
        ax2.barh(y, [r["cpu_us"] for _, r in rows], color=colours)
        ax2.set_xlabel("CPU µs per request, whole stack (lower is better)")
        fig.suptitle(f"{w.name}: {w.description}", fontsize=10)
        fig.tight_layout()
        path = out.with_name(f"{out.stem}-{w.name}.png")
        fig.savefig(path, dpi=90)
        plt.close(fig)
        charts.append(path)
    return charts


def _sh(cmd: list[str]) -> str:
    try:
        return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              timeout=30).stdout.decode("utf-8", "replace").strip()
    except (OSError, subprocess.SubprocessError) as e:
        return f"unknown ({e})"


def environment(rwsgi_so: Path) -> dict:
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    rev = _sh(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"])
    if _sh(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"]):
        rev += " (with uncommitted changes)"
    apache = _sh([harness.APACHE_BIN, "-v"]).splitlines()
    return {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "host": platform.node(),
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "kernel": platform.release(),
        "load_at_start": os.getloadavg(),
        "apache": apache[0].split(":", 1)[-1].strip() if apache else "unknown",
        "python": _sh(["/usr/bin/python3", "-V"]),
        "mod_wsgi": _sh(["dpkg-query", "-W", "-f=${Version}", "libapache2-mod-wsgi-py3"]),
        "mod_rwsgi": rev,
        "mod_rwsgi_so": str(rwsgi_so),
        "other_pythons": {v: str(p) for v, p in PYTHON_SOS.items()},
        "wrk": _sh([WRK, "-v"]).splitlines()[0] if _sh([WRK, "-v"]) else "unknown",
    }


def summarize(cell: Cell) -> dict | None:
    if not cell.runs:
        return None
    rps = [r["requests"] / (r["duration_us"] / 1e6) for r in cell.runs]
    cpu = [r["cpu_us"] / max(1, r["requests"]) for r in cell.runs]
    last = cell.runs[-1]["memory"]
    return {
        "rps": statistics.median(rps), "rps_min": min(rps), "rps_max": max(rps),
        "p50_ms": statistics.median(r["p50_us"] for r in cell.runs) / 1000,
        "p99_ms": statistics.median(r["p99_us"] for r in cell.runs) / 1000,
        "cpu_us": statistics.median(cpu),
        "switches": statistics.median(r.get("switches", 0) / max(1, r["requests"])
                                      for r in cell.runs),
        "errors": sum(v for r in cell.runs for k, v in r.items() if k.startswith("err_")),
        "daemons_mib": [k / 1024 for k in last["daemons_kib"]],
        "total_mib": last["total_kib"] / 1024,
        "runs": len(cell.runs),
    }


def fmt_rps(v: float) -> str:
    return f"{v:,.0f}" if v >= 100 else f"{v:.1f}"


# (goal label, workload, rwsgi server, reference server, metric, op, threshold)
TARGETS = [
    ("embedded hello req/s ≥ 1.5× mod_wsgi", "hello-c32", "rwsgi-embedded", "wsgi-embedded", "rps", ">=", 1.5),
    ("embedded hello CPU/req ≤ 0.65× mod_wsgi", "hello-c32", "rwsgi-embedded", "wsgi-embedded", "cpu_us", "<=", 0.65),
    ("daemon hello req/s ≥ 2.5× mod_wsgi", "hello-c32", "rwsgi-daemon-p1t15", "wsgi-daemon-p1t15", "rps", ">=", 2.5),
    ("daemon 64 KiB req/s ≥ 3× mod_wsgi", "body64k", "rwsgi-daemon-p1t15", "wsgi-daemon-p1t15", "rps", ">=", 3.0),
    ("daemon 1 MiB echo req/s ≥ 4× mod_wsgi", "echo1m", "rwsgi-daemon-p1t15", "wsgi-daemon-p1t15", "rps", ">=", 4.0),
    ("embedded 1 MiB echo CPU/req ≤ 0.8× mod_wsgi", "echo1m", "rwsgi-embedded", "wsgi-embedded", "cpu_us", "<=", 0.8),
    ("embedded 1 MiB echo req/s ≥ mod_wsgi", "echo1m", "rwsgi-embedded", "wsgi-embedded", "rps", ">=", 1.0),
    ("embedded 64 MiB file_wrapper ≥ 0.95× static", "file64m", "rwsgi-embedded", "static", "rps", ">=", 0.95),
    ("daemon 64 MiB file_wrapper ≥ 0.95× static", "file64m", "rwsgi-daemon-p1t15", "static", "rps", ">=", 0.95),
    ("p99 at 256 connections ≤ mod_wsgi (embedded)", "hello-c256", "rwsgi-embedded", "wsgi-embedded", "p99_ms", "<=", 1.0),
    ("p99 at 256 connections ≤ mod_wsgi (daemon)", "hello-c256", "rwsgi-daemon-p1t15", "wsgi-daemon-p1t15", "p99_ms", "<=", 1.0),
    # Issue 13: ASGI against Apache → mod_proxy_http → uvicorn, one process each.
    ("ASGI hello req/s ≥ 2× Apache→uvicorn", "hello-c32", "rwsgi-asgi-p1", "proxy-uvicorn-w1", "rps", ">=", 2.0),
    ("ASGI hello CPU/req ≤ 0.5× Apache→uvicorn", "hello-c32", "rwsgi-asgi-p1", "proxy-uvicorn-w1", "cpu_us", "<=", 0.5),
    ("ASGI 64 KiB req/s ≥ 2× Apache→uvicorn", "body64k", "rwsgi-asgi-p1", "proxy-uvicorn-w1", "rps", ">=", 2.0),
    ("ASGI 1 MiB echo req/s ≥ 2× Apache→uvicorn", "echo1m", "rwsgi-asgi-p1", "proxy-uvicorn-w1", "rps", ">=", 2.0),
    ("WebSocket echo messages/s ≥ Apache→uvicorn (daemon)", "ws-echo", "rwsgi-asgi-p1", "proxy-uvicorn-w1", "rps", ">=", 1.0),
    ("WebSocket echo messages/s ≥ Apache→uvicorn (embedded)", "ws-echo", "rwsgi-asgi-embedded", "proxy-uvicorn-w1", "rps", ">=", 1.0),
    ("embedded ASGI hello req/s ≥ 2× Apache→uvicorn", "hello-c32", "rwsgi-asgi-embedded", "proxy-uvicorn-w1", "rps", ">=", 2.0),
    ("embedded ASGI hello CPU/req ≤ 0.5× Apache→uvicorn", "hello-c32", "rwsgi-asgi-embedded", "proxy-uvicorn-w1", "cpu_us", "<=", 0.5),
]


def report(cells: list[Cell], env: dict, args, elapsed: float) -> str:
    summ = {c.name: summarize(c) for c in cells}
    out = [f"# mod_rwsgi benchmark, {env['date']}", ""]
    if args.label:
        out += [f"**{args.label}**", ""]
    out += ["| | |", "| --- | --- |"]
    for k in ("host", "nproc", "cpu", "kernel", "apache", "python", "mod_wsgi", "mod_rwsgi",
              "wrk"):
        out.append(f"| {k} | {env[k]} |")
    for version, so in env.get("other_pythons", {}).items():
        out.append(f"| mod_rwsgi for Python {version} | {so} |")
    la = ", ".join(f"{x:.2f}" for x in env["load_at_start"])
    out.append(f"| load average at start | {la} |")
    out.append(f"| method | {args.repeats} runs × {args.duration:g} s per cell "
               f"({args.file_repeats} for file64m), {args.warmup:g} s warm-up each, "
               f"servers alternated per round; total {elapsed / 60:.1f} min |")
    pythons = "".join(f" --python {v}" for v in PYTHON_SOS)
    out += ["", f"Command: `scripts/bench.sh{pythons}" + "".join(f" {s}" for s in args.cells) + "`",
            ""]
    out += ["## Results", "",
            "req/s: median (min–max) of the runs; latency: median of the runs' p50/p99; CPU: "
            "server process tree (httpd parent, children, daemons) utime+stime per request, "
            "median; switches: context switches (voluntary and involuntary) of all the tree's "
            "threads per request, median; PSS 1.5 s after the last run (at rest): each daemon "
            "process, and the whole tree.", ""]
    for w in WORKLOADS:
        rows = [(c, summ[c.name]) for c in cells if c.workload == w and summ[c.name]]
        if not rows:
            continue
        out += [f"### {w.name}: {w.description}", "",
                "| server | req/s | p50 ms | p99 ms | CPU µs/req | switches/req | PSS daemons MiB | PSS total MiB | errors |",
                "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for c, s in rows:
            d = " + ".join(f"{m:.1f}" for m in s["daemons_mib"]) or "–"
            out.append(f"| {c.server.name} | {fmt_rps(s['rps'])} ({fmt_rps(s['rps_min'])}–"
                       f"{fmt_rps(s['rps_max'])}) | {s['p50_ms']:.2f} | {s['p99_ms']:.2f} | "
                       f"{s['cpu_us']:.0f} | {s['switches']:.2f} | {d} | {s['total_mib']:.1f} | "
                       f"{s['errors']} |")
        out.append("")

    def get(wname, sname):
        return summ.get(f"{wname}/{sname}")

    out += ["## Ratios", "",
            "mod_rwsgi / mod_wsgi in the same mode (req/s: higher is better; CPU/req and p99: "
            "lower is better).", "",
            "| workload | mode | req/s ratio | CPU/req ratio | p99 ratio | PSS/daemon ratio |",
            "| --- | --- | --- | --- | --- | --- |"]
    for w in WORKLOADS:
        for mode in ("embedded", "daemon-p1t15", "daemon-p2t15"):
            a, b = get(w.name, f"rwsgi-{mode}"), get(w.name, f"wsgi-{mode}")
            if not (a and b):
                continue
            pss = "–"
            if a["daemons_mib"] and b["daemons_mib"]:
                pss = f"{max(a['daemons_mib']) / max(b['daemons_mib']):.2f}"
            elif not a["daemons_mib"] and not b["daemons_mib"]:
                pss = f"{a['total_mib'] / b['total_mib']:.2f} (tree)"
            out.append(f"| {w.name} | {mode} | {a['rps'] / b['rps']:.2f} | "
                       f"{a['cpu_us'] / b['cpu_us']:.2f} | {a['p99_ms'] / max(b['p99_ms'], 1e-9):.2f} | {pss} |")
    if BASELINE_SO:
        out += ["", f"This build / the --baseline build ({BASELINE_SO}), same mode (CPU/req and "
                "switches/req: lower is better).", "",
                "| workload | mode | req/s ratio | CPU/req ratio | CPU µs/req (base → this) | "
                "switches/req ratio | p99 ratio |",
                "| --- | --- | --- | --- | --- | --- | --- |"]
        for w in WORKLOADS:
            for mode in ("embedded", "daemon-p1t15", "daemon-p2t15"):
                a, b = get(w.name, f"rwsgi-{mode}"), get(w.name, f"base-{mode}")
                if not (a and b):
                    continue
                out.append(f"| {w.name} | {mode} | {a['rps'] / b['rps']:.2f} | "
                           f"{a['cpu_us'] / b['cpu_us']:.2f} | {b['cpu_us']:.0f} → {a['cpu_us']:.0f} | "
                           f"{a['switches'] / max(b['switches'], 1e-9):.2f} | "
                           f"{a['p99_ms'] / max(b['p99_ms'], 1e-9):.2f} |")
    asgi_rows = []
    for w in WORKLOADS:
        for mine, mode in (("rwsgi-asgi-p1", "daemon"), ("rwsgi-asgi-embedded", "embedded")):
            a = get(w.name, mine)
            for ref in ("proxy-uvicorn-w1", "uvicorn-w1", "granian-w1"):
                b = get(w.name, ref)
                if a and b:
                    asgi_rows.append(f"| {w.name} | {mode} | {ref} | {a['rps'] / b['rps']:.2f} | "
                                     f"{a['cpu_us'] / b['cpu_us']:.2f} | "
                                     f"{a['p99_ms'] / max(b['p99_ms'], 1e-9):.2f} |")
    if asgi_rows:
        out += ["", "ASGI: mod_rwsgi (daemon: one process; embedded: one httpd child) / the "
                "reference (Apache's mod_proxy_http in front of uvicorn, or uvicorn or granian "
                "alone; one worker; uvicorn with uvloop and httptools); CPU counts every process "
                "of both servers:", "",
                "| workload | mod_rwsgi | reference | req/s ratio | CPU/req ratio | p99 ratio |",
                "| --- | --- | --- | --- | --- | --- |"] + asgi_rows
    peer_rows = []
    peers = [s.name for s in SERVERS if s.peer is not None]
    for w in WORKLOADS:
        for mine in ("rwsgi-daemon-p2t15", "rwsgi-embedded"):
            a = get(w.name, mine)
            for ref in peers:
                b = get(w.name, ref)
                if not (a and b):
                    continue
                mib = lambda x: sum(x["daemons_mib"]) or x["total_mib"]  # noqa: E731
                peer_rows.append(f"| {w.name} | {mine} | {ref} | {a['rps'] / b['rps']:.2f} | "
                                 f"{a['cpu_us'] / b['cpu_us']:.2f} | "
                                 f"{b['cpu_us']:.0f} → {a['cpu_us']:.0f} | "
                                 f"{a['p99_ms'] / max(b['p99_ms'], 1e-9):.2f} | "
                                 f"{mib(b):.1f} → {mib(a):.1f} |")
    if peer_rows:
        out += ["", "WSGI: mod_rwsgi / the stacks users run instead (Apache's mod_proxy_http in "
                "front of gunicorn, mod_proxy_uwsgi in front of uWSGI) and those servers alone; "
                "CPU counts every process of both (Apache and the app server); memory: PSS of "
                "the application processes (daemons, or the app server's processes; embedded: "
                "the whole httpd tree):", "",
                "| workload | mod_rwsgi | reference | req/s ratio | CPU/req ratio | "
                "CPU µs/req (ref → this) | p99 ratio | app PSS MiB (ref → this) |",
                "| --- | --- | --- | --- | --- | --- | --- | --- |"] + peer_rows
    py_rows = []
    system = _sh(["/usr/bin/python3", "-c", "import sys; print('%d.%d.%d' % sys.version_info[:3])"])
    for w in WORKLOADS:
        for mode in ("embedded", "daemon-p2t15"):
            base = get(w.name, f"rwsgi-{mode}")
            for version in PYTHON_SOS:
                a = get(w.name, f"py{version}-{mode}")
                if not a:
                    continue
                ratio = (f"{a['rps'] / base['rps']:.2f} | {a['cpu_us'] / base['cpu_us']:.2f}"
                         if base else "– | –")
                py_rows.append(f"| {w.name} | {mode} | {version} | {a['rps']:.0f} | "
                               f"{a['cpu_us']:.0f} | {ratio} |")
    if py_rows:
        out += ["", f"mod_rwsgi built for other Pythons (--python-module), against the system "
                f"Python's build ({system}, the rwsgi-* rows), same mode:", "",
                "| workload | mode | Python | req/s | CPU µs/req | req/s ratio | CPU/req ratio |",
                "| --- | --- | --- | --- | --- | --- | --- |"] + py_rows
    sub_rows = []
    for w in WORKLOADS:
        for mode in ("embedded", "daemon-p1t15"):
            a, b = get(w.name, f"rwsgi-{mode}-sub"), get(w.name, f"rwsgi-{mode}")
            if a and b:
                sub_rows.append(f"| {w.name} | {mode} | {b['cpu_us']:.0f} → {a['cpu_us']:.0f} | "
                                f"{a['cpu_us'] - b['cpu_us']:+.1f} | {a['rps'] / b['rps']:.2f} |")
    if sub_rows:
        out += ["", "A named application group in a sub-interpreter / %{GLOBAL} (the main "
                "interpreter), same build and mode:", "",
                "| workload | mode | CPU µs/req (%{GLOBAL} → sub) | difference | req/s ratio |",
                "| --- | --- | --- | --- | --- |"] + sub_rows
    out += ["", "WSGI / Apache static file of the same size (req/s):", "",
            "| workload | server | req/s vs static |", "| --- | --- | --- |"]
    for w in WORKLOADS:
        st = get(w.name, "static")
        if not st:
            continue
        for s in SERVERS:
            v = get(w.name, s.name)
            if s.module and s.express is None and v:
                out.append(f"| {w.name} | {s.name} | {v['rps'] / st['rps']:.2f} |")
    express_rows = []
    for c in cells:
        if c.server.express is None or not c.runs:
            continue
        tot = {k: sum(r.get(k, 0) for r in c.runs)
               for k in ("requests", "err_connect", "err_read", "err_write", "err_timeout",
                         "err_status")}
        express_rows.append(f"| {c.workload.name} | {c.server.name} | {tot['requests']} | "
                            f"{tot['err_connect']} | {tot['err_read']} | {tot['err_write']} | "
                            f"{tot['err_timeout']} | {tot['err_status']} |")
    if express_rows:
        out += ["", "rwsgi-express's generated configuration: wrk's socket errors, summed over "
                "the runs (read: a connection closed under a request wrk had sent; status: "
                "a non-2xx answer). `express-static` is a static file through the same "
                "configuration.", "",
                "| workload | server | requests | connect | read | write | timeout | status |",
                "| --- | --- | --- | --- | --- | --- | --- | --- |"] + express_rows
    out += ["", "## Targets (issues 6 and 13)", "", "| goal | measured | result |", "| --- | --- | --- |"]
    for label, wname, a_name, b_name, metric, op, thr in TARGETS:
        a, b = get(wname, a_name), get(wname, b_name)
        if not (a and b):
            continue
        ratio = a[metric] / max(b[metric], 1e-9)
        ok = ratio >= thr if op == ">=" else ratio <= thr
        out.append(f"| {label} | {ratio:.2f}× | {'met' if ok else 'MISSED'} |")
    for mode in ("daemon-p1t15", "daemon-p2t15"):
        a, b = get("hello-c32", f"rwsgi-{mode}"), get("hello-c32", f"wsgi-{mode}")
        if a and b and a["daemons_mib"] and b["daemons_mib"]:
            ratio = max(a["daemons_mib"]) / max(b["daemons_mib"])
            out.append(f"| PSS per daemon process ≤ mod_wsgi ({mode}, after hello) | {ratio:.2f}× | "
                       f"{'met' if ratio <= 1 else 'MISSED'} |")
    out.append("")
    return "\n".join(out)


# -------------------------------------------------------------------------------------- main

def serve(name: str) -> int:
    server = next((s for s in SERVERS if s.name == name), None)
    if server is None:
        print(f"unknown server {name!r}; one of: {', '.join(s.name for s in SERVERS)}",
              file=sys.stderr)
        return 2
    share = make_share()
    if server.express is not None:
        x = ExpressServer(share, server, harness.SO_PATH)
        print(f"serving {name} on http://127.0.0.1:{x.port}/ (app under /app, static files "
              f"under /static); rwsgi-express pid {x.proc.pid}; server root {x.root}",
              flush=True)
        try:
            sys.stdin.readline()
        except KeyboardInterrupt:
            pass
        finally:
            x.stop()
            shutil.rmtree(share, ignore_errors=True)
        return 0
    srv = BenchApache(server, share, harness.SO_PATH)
    try:
        srv.start()
        time.sleep(1)
        pids = process_tree(srv.parent_pid)
        print(f"serving {name} on http://127.0.0.1:{srv.port}/ (app under /app, static files "
              f"at /hello.txt /64k.bin /64m.bin); parent {srv.parent_pid}, processes "
              f"{' '.join(map(str, pids))}; ServerRoot {srv.root}", flush=True)
        try:
            sys.stdin.readline()
        except KeyboardInterrupt:
            pass
    finally:
        srv.stop()
        srv.cleanup()
        shutil.rmtree(share, ignore_errors=True)
    return 0


def interrupted(*_):
    raise KeyboardInterrupt


def main() -> int:
    # SIGTERM stops what runs (and the server it started) as Ctrl-C does: kill by PID.
    signal.signal(signal.SIGTERM, interrupted)
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("cells", nargs="*", help="workload, server or workload/server names "
                    "(default: everything); see --list")
    ap.add_argument("--duration", type=int, default=int(os.environ.get("BENCH_DURATION", 5)),
                    help="seconds per measured run (whole seconds: wrk takes no fractions)")
    ap.add_argument("--repeats", type=int, default=int(os.environ.get("BENCH_REPEATS", 3)))
    ap.add_argument("--file-repeats", type=int, default=int(os.environ.get("BENCH_FILE_REPEATS", 2)),
                    help="runs for the 64 MiB cells")
    ap.add_argument("--warmup", type=int, default=int(os.environ.get("BENCH_WARMUP", 1)),
                    help="seconds of wrk before each measured run (0: none)")
    ap.add_argument("--label", default=os.environ.get("BENCH_LABEL", ""),
                    help="a note printed at the top of the results (e.g. 'noisy machine')")
    ap.add_argument("--out", help="results file (default bench/results/DATE-HOST[-SUFFIX].md)")
    ap.add_argument("--suffix", default=os.environ.get("BENCH_SUFFIX", ""))
    ap.add_argument("--list", action="store_true", help="list the cells and exit")
    ap.add_argument("--baseline", metavar="SO",
                    help="another build of mod_rwsgi (e.g. the one before a change) to run side "
                         "by side as base-* servers; the report adds its before/after ratios")
    ap.add_argument("--serve", metavar="SERVER",
                    help="start one server, print its port and PIDs, and keep it running until "
                         "Enter or Ctrl-C (for profiling with perf or callgrind)")
    ap.add_argument("--python-module", metavar="VERSION=SO", action="append", default=[],
                    help="mod_rwsgi built for another Python (scripts/bench.sh --python X.Y "
                         "builds it): adds py<VERSION>-embedded and -daemon-p2t15 servers "
                         "(hello workloads) and a table against the system Python's rows")
    args = ap.parse_args()
    for item in args.python_module:
        version, _, so = item.partition("=")
        if not so or not Path(so).is_file():
            print(f"--python-module {item}: expected VERSION=/path/to/libmod_rwsgi.so",
                  file=sys.stderr)
            return 2
        PYTHON_SOS[version] = Path(so).resolve()
        SERVERS.extend(python_servers(version))
    if args.baseline:
        global BASELINE_SO
        BASELINE_SO = Path(args.baseline).resolve()
        if not BASELINE_SO.is_file():
            print(f"--baseline: no such module {BASELINE_SO}", file=sys.stderr)
            return 2
        SERVERS.extend(BASELINE_SERVERS)
    if args.serve:
        return serve(args.serve)

    cells = cells_for(args.cells)
    if args.list or not cells:
        for c in cells_for([]):
            print(c.name)
        if not cells:
            print(f"no cell matches {args.cells}", file=sys.stderr)
            return 2
        return 0
    rwsgi_so = harness.SO_PATH
    need = {c.server.module for c in cells}
    if "rwsgi" in need and not rwsgi_so.is_file():
        print(f"mod_rwsgi not built: {rwsgi_so} (cargo build --release)", file=sys.stderr)
        return 2
    if "wsgi" in need and not MOD_WSGI_SO.is_file():
        print(f"mod_wsgi not installed: {MOD_WSGI_SO} (apt-get install libapache2-mod-wsgi-py3)",
              file=sys.stderr)
        return 2

    env = environment(rwsgi_so)
    servers = [s for s in SERVERS if any(c.server == s for c in cells)]
    rounds = max(args.repeats, args.file_repeats)
    per_run = args.duration + args.warmup + 0.5 + REST_BEFORE_PSS
    est = sum((args.repeats if c.workload.name != "file64m" else args.file_repeats) * per_run
              for c in cells) + rounds * len(servers) * 5
    print(f"bench: {len(cells)} cells on {len(servers)} servers, {rounds} rounds, "
          f"about {est / 60:.1f} min", flush=True)

    share = make_share()
    t0 = time.monotonic()
    try:
        for rnd in range(rounds):
            order = servers[rnd % len(servers):] + servers[:rnd % len(servers)]
            for s in order:
                todo = [c for c in cells if c.server == s and
                        rnd < (args.file_repeats if c.workload.name == "file64m" else args.repeats)]
                if not todo:
                    continue
                print(f"round {rnd + 1}/{rounds}: {s.name} "
                      f"(at {(time.monotonic() - t0) / 60:.1f} min)", flush=True)
                run_server_round(s, todo, share, rwsgi_so, args.duration, args.warmup,
                                 lambda m: print(m, flush=True))
    finally:
        shutil.rmtree(share, ignore_errors=True)
    elapsed = time.monotonic() - t0

    text = report(cells, env, args, elapsed)
    if args.out:
        out = Path(args.out)
    else:
        day = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d")
        host = re.sub(r"[^A-Za-z0-9_.-]+", "_", platform.node()) or "host"
        suffix = f"-{args.suffix}" if args.suffix else ""
        out = BENCH_DIR / "results" / f"{day}-{host}{suffix}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    charts = plot(cells, out)
    if charts:
        text += "\n## Charts\n\n" + "".join(f"![{c.stem}]({c.name})\n\n" for c in charts)
    out.write_text(text)
    raw = {"environment": env, "cells": {c.name: c.runs for c in cells}}
    out.with_suffix(".json").write_text(json.dumps(raw, indent=1) + "\n")
    print(text)
    print(f"bench: results written to {out} (raw runs: {out.with_suffix('.json')})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
