"""Real frameworks from PyPI (Flask, Django, Falcon; versions pinned in
tests/frameworks/requirements.txt) served by mod_rwsgi in embedded and daemon mode, each answer
compared with the same application served by gunicorn.

The frameworks live in a venv of the Python the module is built for (harness.APP_PYTHON,
/usr/bin/python3 by default), created once and reused (/tmp/rwsgi-venv-cache/<hash of the
requirements and the Python's version and prefix>, readable by
www-data), that Apache enters through `WSGIPythonHome` (embedded) or `python-home=` (the daemon
group). gunicorn, installed in the same venv, runs as www-data (the user the application runs
as under Apache too) on a 127.0.0.1 socket the test binds and hands over, and is stopped by its
PID.

Each framework gets one Apache per setup (embedded on event and on prefork, daemon on event) and
a gunicorn beside it, started at its first test and shared by the module's tests of that setup.
Every server has its own copy of tests/frameworks/ (<site>/app) and its own writable <site>/var
(Django's sqlite database, uploads). Compared: status, every response header except the ones
that belong to the server or the connection (Date, Server, Connection, Keep-Alive,
Transfer-Encoding), and the body. What is normalised, and why, is said where it is done.

If the venv cannot be created (no network to PyPI), the tests fail with pip's message.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import zlib
from email.utils import parsedate_to_datetime
from pathlib import Path

import pytest

import harness

# The servers of each mode are built here (module scope, shared by the tests, see SETUPS), not
# through conftest's per-test `mode` parametrisation.
FW_SRC = harness.TESTS_DIR / "frameworks"
REQUIREMENTS = FW_SRC / "requirements.txt"
VENV_CACHE = Path(os.environ.get("RWSGI_VENV_CACHE", "/tmp/rwsgi-venv-cache"))
MODES = [m.strip() for m in os.environ.get("RWSGI_MODES", "embedded,daemon").split(",") if m.strip()]
MPMS = [m.strip() for m in os.environ.get("RWSGI_MPMS", "event,worker,prefork").split(",") if m.strip()]
# (mode, MPM) of the servers: each mode on a threaded MPM (10 threads per child or daemon), and
# embedded mode on prefork too (one request per process: another life for the interpreter).
THREADED = "event" if "event" in MPMS else next((m for m in MPMS if m != "prefork"), "event")
SETUPS = [(m, THREADED) for m in MODES]
if "embedded" in MODES and "prefork" in MPMS:
    SETUPS.insert(1, ("embedded", "prefork"))
LOG_DIR = Path(os.environ.get("RWSGI_LOG_DIR", "/tmp/rwsgi-test-logs"))
MOUNT = "/app"
# The first request of a framework imports it (Django: the admin, the ORM); the machine may be
# loaded. Liveness bound only.
REQ_TIMEOUT = 60.0
RUN_AS = "www-data"
ADMIN_USER = "admin"
ADMIN_PASSWORD = "rwsgi-Admin-pw-1"

BLOB = b"".join(hashlib.sha256(b"%d" % i).digest() for i in range(10_000))  # 320,000 bytes
BLOB_MTIME = 1_700_000_000
ENTRIES = {  # framework -> (mod_rwsgi script in <site>/app, gunicorn's module:callable)
    "flask": ("flask_app.wsgi", "flask_app:app"),
    "django": ("django_app.wsgi", "djangosite.wsgi:application"),
    # Django's documented mod_wsgi set-up: the project's own wsgi.py is the script and the
    # project directory is on WSGIPythonPath / python-path=.
    "django-docs": ("djangosite/wsgi.py", "djangosite.wsgi:application"),
    "falcon": ("falcon_app.wsgi", "falcon_app:app"),
}


# --------------------------------------------------------------------------- the venv

def _venv_key() -> str:
    # The interpreter's place too: a staged copy of a Python (scripts/python.sh) is another venv.
    version = subprocess.run([harness.APP_PYTHON, "-c", "import sys; print(sys.version, sys.prefix)"],
                             capture_output=True, text=True, check=True).stdout
    return hashlib.sha256(REQUIREMENTS.read_bytes() + version.encode()).hexdigest()[:16]


def _run_or_fail(cmd, what: str, timeout: float, **kw):
    try:
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           timeout=timeout, **kw)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"{what}: no result within {timeout:.0f}s ({' '.join(map(str, cmd))})\n"
                    f"{e.output or ''}", pytrace=False)
    if p.returncode != 0:
        pytest.fail(f"{what} failed (exit {p.returncode}): {' '.join(map(str, cmd))}\n"
                    f"{p.stdout[-4000:]}", pytrace=False)
    return p


@pytest.fixture(scope="session")
def venv() -> Path:
    """A venv of the module's Python (harness.APP_PYTHON) with the pinned frameworks; built once,
    reused while the requirements and the Python stay the same. A lock serialises concurrent runs.
    A failure is remembered, so the other tests fail with the same message at once."""
    if _VENV_FAILURE:
        pytest.fail(_VENV_FAILURE[0], pytrace=False)
    try:
        return _build_venv()
    except pytest.fail.Exception as e:
        _VENV_FAILURE.append(str(e))
        raise


_VENV_FAILURE: list[str] = []


def _build_venv() -> Path:
    VENV_CACHE.mkdir(parents=True, exist_ok=True)
    os.chmod(VENV_CACHE, 0o755)
    dest = VENV_CACHE / _venv_key()
    done = dest / ".rwsgi-complete"
    with open(VENV_CACHE / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.exists():
            shutil.rmtree(dest, ignore_errors=True)
            # Built in place: a venv's scripts name their own path, so it cannot be moved.
            _run_or_fail([harness.APP_PYTHON, "-m", "venv", str(dest)],
                         "creating the framework venv (Debian package python3-venv; "
                         "scripts/deps.sh installs it)", 300)
            _run_or_fail([str(dest / "bin" / "python"), "-m", "pip", "install", "--no-input",
                          "--disable-pip-version-check", "-r", str(REQUIREMENTS)],
                         f"installing the frameworks of {REQUIREMENTS} from PyPI (these tests "
                         f"need the network to PyPI once; the venv is then reused)", 600)
            for d, _, files in os.walk(dest):
                os.chmod(d, os.stat(d).st_mode | 0o555)
                for f in files:
                    p = os.path.join(d, f)
                    if not os.path.islink(p):
                        os.chmod(p, os.stat(p).st_mode | 0o444)
            done.write_text(REQUIREMENTS.read_text())
    return dest


# --------------------------------------------------------------------------- sites

def _chown_tree(path: Path, user: str):
    import pwd
    pw = pwd.getpwnam(user)
    for d, dirs, files in os.walk(path):
        os.chown(d, pw.pw_uid, pw.pw_gid)
        for f in files:
            os.chown(os.path.join(d, f), pw.pw_uid, pw.pw_gid)


def make_site(dest: Path, django_db: Path | None = None) -> Path:
    """<dest>/app: a copy of tests/frameworks (world-readable); <dest>/var: what the
    applications write (Django's database, media, upload temp files), owned by www-data."""
    dest.mkdir(parents=True, exist_ok=True)
    os.chmod(dest, 0o755)
    shutil.copytree(FW_SRC, dest / "app", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for d, _, files in os.walk(dest / "app"):
        os.chmod(d, 0o755)
        for f in files:
            os.chmod(os.path.join(d, f), 0o644)
    # The file the apps serve through wsgi.file_wrapper: the same bytes and mtime in every site
    # (Last-Modified is compared).
    blob = dest / "app" / "static" / "blob.bin"
    blob.parent.mkdir(mode=0o755)
    blob.write_bytes(BLOB)
    os.chmod(blob, 0o644)
    os.utime(blob, (BLOB_MTIME, BLOB_MTIME))
    var = dest / "var"
    for sub in ("media", "tmp"):
        (var / sub).mkdir(parents=True, exist_ok=True)
    if django_db is not None:
        shutil.copy(django_db, var / "db.sqlite3")
    _chown_tree(var, RUN_AS)
    return dest


def _django_env(site: Path) -> dict:
    return {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONPATH": str(site / "app"),
            "DJANGO_SETTINGS_MODULE": "djangosite.settings"}


@pytest.fixture(scope="session")
def django_db(venv, tmp_path_factory) -> Path:
    """A migrated sqlite database with a superuser, made once and copied into each site."""
    site = make_site(tmp_path_factory.mktemp("django-template"))
    py = str(venv / "bin" / "python")
    env = _django_env(site)
    _run_or_fail([py, "-m", "django", "migrate", "--noinput"], "django migrate", 300, env=env)
    _run_or_fail([py, "-m", "django", "createsuperuser", "--noinput", "--username", ADMIN_USER,
                  "--email", "admin@example.com"], "django createsuperuser", 300,
                 env={**env, "DJANGO_SUPERUSER_PASSWORD": ADMIN_PASSWORD})
    return site / "var" / "db.sqlite3"


# --------------------------------------------------------------------------- servers

class Gunicorn:
    """gunicorn from the venv serving <site>/app, mounted at MOUNT like the Apache servers."""

    def __init__(self, venv: Path, site: Path, target: str):
        self.site = site
        self.log = site / "gunicorn.log"
        # The listening socket is made here and handed over (fd://): a port picked free and
        # bound later could be taken in between by another test's server.
        lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        lsock.bind(("127.0.0.1", 0))
        lsock.listen(128)
        self.port = lsock.getsockname()[1]
        cmd = [str(venv / "bin" / "python"), "-m", "gunicorn", "--bind", f"fd://{lsock.fileno()}",
               "--workers", "2", "--threads", "4", "--chdir", str(site / "app"),
               "--user", RUN_AS, "--group", RUN_AS, "--no-control-socket",
               "--error-logfile", str(self.log), "--timeout", "120", target]
        # SCRIPT_NAME in gunicorn's environment is its way of mounting an app below a prefix.
        env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "SCRIPT_NAME": MOUNT}
        with open(site / "gunicorn.out", "wb") as out, lsock:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env,
                                         cwd=str(site), pass_fds=[lsock.fileno()])
        # Ready when a worker answers (the master accepts connections before its workers have
        # imported the application).
        ok = harness.wait_for(lambda: self.proc.poll() is not None or self._answers(), 90, 0.2)
        if not ok or self.proc.poll() is not None:
            self.stop()
            raise harness.HarnessError(f"gunicorn did not start: {cmd}\n{self.logs()}")

    def _answers(self) -> bool:
        try:
            r = harness.http_request(self.port, "GET", f"{MOUNT}/", timeout=5)
        except OSError:
            return False
        return r.headers.get("Server") == "gunicorn"

    def logs(self) -> str:
        out = []
        for p in (self.site / "gunicorn.out", self.log):
            if p.exists():
                out.append(p.read_text(errors="replace")[-4000:])
        return "\n".join(out)

    def stop(self):
        harness.stop_process(self.proc, timeout=30)


class Servers:
    """Lazily started servers of one kind, stopped at the end of the module."""

    def __init__(self, start):
        self._start = start
        self.started: dict[str, object] = {}
        self.failed: dict[str, Exception] = {}

    def __call__(self, framework: str):
        if framework in self.failed:  # the other tests of the framework fail with the cause
            raise self.failed[framework]
        if framework not in self.started:
            try:
                self.started[framework] = self._start(framework)
            except Exception as e:
                self.failed[framework] = e
                raise
        return self.started[framework]


@pytest.fixture(scope="module")
def gunicorns(venv, django_db, apaches):
    """The reference servers, one set per mode (it depends on `apaches` for that): the tests
    change Django's database, and each Apache starts from the fresh one."""
    roots = []

    def start(framework):
        # not under pytest's tmp_path, which www-data cannot enter
        root = Path(tempfile.mkdtemp(prefix=f"rwsgi-gunicorn-{framework}-", dir="/tmp"))
        roots.append(root)
        site = make_site(root, django_db if framework.startswith("django") else None)
        return Gunicorn(venv, site, ENTRIES[framework][1])

    servers = Servers(start)
    yield servers
    for g in servers.started.values():
        g.stop()
    if not os.environ.get("RWSGI_KEEP"):
        for root in roots:
            shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module", params=SETUPS, ids=lambda s: s[0] if s[1] == THREADED else "-".join(s))
def apaches(request, venv, django_db):
    mode, mpm = request.param

    def start(framework):
        srv = harness.Apache(mode=mode, mpm=mpm, name=f"fw-{framework}-{mode}-{mpm}")
        servers.started[framework] = srv  # stopped at teardown even if start() fails
        site = make_site(srv.apps / "fw", django_db if framework.startswith("django") else None)
        srv.site = site
        app_dir = site / "app"
        if mode == "embedded":
            head = f"WSGIPythonHome {venv}\n"
            if framework == "django-docs":
                head += f"WSGIPythonPath {app_dir}\n"
        else:
            # The daemon group gets the venv; the httpd children keep the system Python.
            head = ""
            srv.daemon_options = f"processes=2 threads=10 python-home={venv}"
            if framework == "django-docs":
                srv.daemon_options += f" python-path={app_dir}"
        # Chunked request bodies are refused (411) unless turned on, as in mod_wsgi.
        head += "WSGIChunkedRequest On\n"
        if framework == "django-docs":
            # Word for word the shape of Django's "How to use Django with Apache and mod_wsgi":
            # the daemon group chosen by WSGIProcessGroup, not by a WSGIScriptAlias option.
            head += f"WSGIScriptAlias {MOUNT} {app_dir}/djangosite/wsgi.py\n"
            if mode == "daemon":
                head += f"WSGIProcessGroup {harness.DAEMON_GROUP}\nWSGIApplicationGroup %{{GLOBAL}}\n"
            head += (f"<Directory {app_dir}/djangosite>\n<Files wsgi.py>\nRequire all granted\n"
                     f"</Files>\n</Directory>\n")
        else:
            head += srv.mount(MOUNT, app_dir / ENTRIES[framework][0])
        if framework == "flask":
            # the same application mounted at the root too (after /app: the first match wins)
            head += srv.mount("/", app_dir / ENTRIES[framework][0])
        srv.start(head)
        return srv

    servers = Servers(start)
    servers.mode = mode
    yield servers
    live = list(servers.started.values())
    problems, saved = harness.close_servers(live, False, LOG_DIR / f"test_frameworks-{mode}-{mpm}")
    if problems:
        pytest.fail("\n".join(problems) + f"\nlogs saved to {saved}", pytrace=False)


@pytest.fixture
def pair(request, apaches, gunicorns):
    """pair("flask") -> (Apache in this mode, gunicorn) serving the same framework app."""

    def get(framework):
        a = apaches(framework)
        # failing tests get the Apache logs attached (conftest's report hook)
        request.node._rwsgi_servers = [a]
        return a, gunicorns(framework)

    get.mode = apaches.mode
    return get


# --------------------------------------------------------------------------- client + comparison

class Client:
    """HTTP/1.1 requests to one server (harness.http_request) with a cookie jar."""

    def __init__(self, server):
        self.port = server.port
        self.jar: dict[str, str] = {}

    def request(self, method, path, body=None, headers=(), **kw) -> harness.Response:
        hdrs = list(headers)
        if self.jar:
            hdrs.append(("Cookie", "; ".join(f"{k}={v}" for k, v in self.jar.items())))
        r = harness.http_request(self.port, method, path, body=body, headers=hdrs,
                                 timeout=REQ_TIMEOUT, **kw)
        for sc in r.headers.get_all("Set-Cookie"):
            name, _, rest = sc.partition("=")
            value = rest.split(";", 1)[0]
            if value in ("", '""'):
                self.jar.pop(name.strip(), None)
            else:
                self.jar[name.strip()] = value
        return r

    def get(self, path, **kw):
        return self.request("GET", path, **kw)


# Headers of the server or of the connection, not of the application.
SERVER_HEADERS = {"date", "server", "connection", "keep-alive", "transfer-encoding"}
# Cookies whose values are random (CSRF secret, session key) or carry a timestamp (Flask's
# signed session, Django's signed messages): their names and attributes are compared, not their values.
VOLATILE_COOKIES = {"csrftoken", "sessionid", "session", "messages"}
# Django renders a fresh masked CSRF token into every form.
CSRF_FIELD = re.compile(rb'(name="csrfmiddlewaretoken" value=")[^"]+(")')
# Django's admin shows a user's password summary: the salt is random, the hash follows from it.
PASSWORD_SUMMARY = re.compile(rb"(<strong>(?:salt|hash)</strong>: <bdi>)[^<]*(</bdi>)")
# ... and the clock time the user was created or last logged in, in the form's date/time inputs.
CLOCK_INPUT = re.compile(rb'<input[^>]*name="(?:initial-)?(?:date_joined|last_login)_[01]"[^>]*>')


def _host_norm(text: str, port: int) -> str:
    # Absolute URLs built from the request's Host differ only by the server's port.
    return text.replace(f"127.0.0.1:{port}", "HOST")


def _cookie(value: str) -> tuple:
    parts = [p.strip() for p in value.split(";")]
    name, _, val = parts[0].partition("=")
    attrs = []
    for p in parts[1:]:
        k, eq, v = p.partition("=")
        k = k.strip().lower()
        if k == "expires":
            # a date computed from the clock: only its form is compared
            parsedate_to_datetime(v)
            v = "<date>"
        attrs.append((k, v.strip()) if eq else (k,))
    if name in VOLATILE_COOKIES and val not in ("", '""'):
        val = "<value>"
    return (name, val, tuple(sorted(attrs)))


def app_headers(r: harness.Response, port: int) -> list:
    out = []
    for k, v in r.headers:
        k = k.lower()
        if k in SERVER_HEADERS or k == "content-length":
            continue
        if k == "set-cookie":
            out.append((k, _cookie(v)))
        elif k == "expires":
            parsedate_to_datetime(v)  # Django's never_cache: "now", a date from the clock
            out.append((k, "<date>"))
        elif k == "allow":
            # Werkzeug builds it from a set: its order follows the process's hash seed.
            out.append((k, ", ".join(sorted(m.strip() for m in v.split(",")))))
        else:
            out.append((k, _host_norm(v, port)))
    return sorted(out, key=repr)


def norm_body(r: harness.Response, port: int) -> bytes:
    body = r.body.replace(f"127.0.0.1:{port}".encode(), b"HOST")
    body = PASSWORD_SUMMARY.sub(rb"\1<random>\2", body)
    body = CLOCK_INPUT.sub(lambda m: re.sub(rb'value="[^"]*"', b'value="<clock>"', m.group(0)), body)
    return CSRF_FIELD.sub(rb"\1<csrf>\2", body)


def assert_same(ra: harness.Response, rg: harness.Response, pa: int, pg: int,
                reference: str = "gunicorn"):
    """ra (mod_rwsgi) and rg (the reference server: gunicorn, or uvicorn for ASGI) are the
    same answer."""
    assert ra.complete and not ra.error, f"mod_rwsgi response incomplete: {ra!r}"
    assert rg.complete and not rg.error, f"{reference} response incomplete: {rg!r}"
    assert rg.headers.get("Server") == reference, rg
    assert (ra.status, ra.reason) == (rg.status, rg.reason), f"\nmod_rwsgi: {ra!r}\ngunicorn:  {rg!r}"
    assert app_headers(ra, pa) == app_headers(rg, pg), f"\nmod_rwsgi: {ra!r}\ngunicorn:  {rg!r}"
    la, lg = ra.headers.get("Content-Length"), rg.headers.get("Content-Length")
    if lg is not None:
        # the application's own (gunicorn adds none): mod_rwsgi must pass it as it is
        assert la == lg, f"Content-Length {la} != gunicorn's {lg}\nmod_rwsgi: {ra!r}"
    elif la is not None:
        # The application gave none and gunicorn streamed the body (chunked or to close);
        # httpd adds one when it holds the whole body at once: it must be the body's length.
        assert int(la) == len(ra.body) or ra.framing == "none", ra
    assert norm_body(ra, pa) == norm_body(rg, pg), f"\nmod_rwsgi: {ra!r}\ngunicorn:  {rg!r}"


def both(pair_, framework: str, steps):
    """Run `steps(client, server)` against mod_rwsgi and against gunicorn, each with its own
    cookie jar; `steps` returns a list of responses, compared pairwise. Returns (apache's
    responses, apache server)."""
    a, g = pair_(framework)
    ra = steps(Client(a), a)
    rg = steps(Client(g), g)
    assert len(ra) == len(rg)
    for i, (x, y) in enumerate(zip(ra, rg)):
        try:
            assert_same(x, y, a.port, g.port)
        except AssertionError as e:
            raise AssertionError(f"step {i}: {e}") from None
    return ra, a


def form(fields) -> tuple[bytes, list]:
    return (urllib.parse.urlencode(fields).encode(),
            [("Content-Type", "application/x-www-form-urlencoded")])


def multipart(fields, files) -> tuple[bytes, list]:
    boundary = "rwsgiBoundary7MA4YWxkTrZu0gW"
    out = []
    for k, v in fields:
        out.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'
                   .encode())
    for k, (filename, ctype, data) in files:
        out.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"; '
                   f'filename="{filename}"\r\nContent-Type: {ctype}\r\n\r\n'.encode() + data
                   + b"\r\n")
    out.append(f"--{boundary}--\r\n".encode())
    return b"".join(out), [("Content-Type", f"multipart/form-data; boundary={boundary}")]


def csrf_token(r: harness.Response) -> str:
    m = re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', r.body)
    assert m, f"no CSRF token in the form: {r!r}"
    return m.group(1).decode()


# --------------------------------------------------------------------------- Flask

def test_flask_runs_from_the_venv(pair, venv):
    a, _ = pair("flask")
    r = a.get(f"{MOUNT}/runtime", timeout=REQ_TIMEOUT)
    assert r.status == 200, r
    info = r.json()
    base = subprocess.run([harness.APP_PYTHON, "-c", "import sys; print(sys.base_prefix)"],
                          capture_output=True, text=True, check=True).stdout.strip()
    assert info["prefix"] == str(venv) and info["base_prefix"] == base
    assert info["flask"].startswith(str(venv) + "/lib/")
    # the venv alone: Debian's dist-packages are not on the path
    py = "python%d.%d" % harness.app_python_version()
    assert info["site_packages"] == [f"{venv}/lib/{py}/site-packages"]
    assert info["executable"].startswith(f"{venv}/bin/python") and info["child_prefix"] == str(venv)
    assert info["argv"] == ["mod_wsgi"]
    assert info["user"] == RUN_AS
    assert info["process_group"] == ("" if pair.mode == "embedded" else harness.DAEMON_GROUP)


def test_flask_json(pair):
    payload = json.dumps({"id": 42, "v": "é"}).encode()

    def steps(c, s):
        return [c.get(f"{MOUNT}/api/items/7?tag=a&tag=b%20c"),
                c.request("HEAD", f"{MOUNT}/api/items/7"),
                c.get(f"{MOUNT}/api/items/x"),
                c.request("POST", f"{MOUNT}/api/items", payload,
                          [("Content-Type", "application/json")])]

    (get, head, missing, post), _ = both(pair, "flask", steps)
    assert get.status == 200 and get.headers["Content-Type"] == "application/json"
    assert get.json() == {"id": 7, "name": "item 7", "tags": ["a", "b c"],
                          "script_root": MOUNT, "path": "/api/items/7"}
    assert head.status == 200 and head.body == b""
    assert missing.status == 404
    assert post.status == 201 and post.headers["Location"] == f"{MOUNT}/api/items/42"
    assert post.json() == {"created": {"id": 42, "v": "é"}, "length": len(payload)}


def test_flask_form_post_cookies_and_redirect(pair):
    def steps(c, s):
        body, hdrs = form([("name", "Zoë & <co>"), ("colour", "red"), ("colour", "blue")])
        return [c.request("POST", f"{MOUNT}/form", body, hdrs),
                c.get(f"{MOUNT}/whoami"),
                c.get(f"{MOUNT}/go")]

    (posted, who, go), a = both(pair, "flask", steps)
    assert posted.status == 200
    assert b"hello Zo\xc3\xab &amp; &lt;co&gt;" in posted.body
    assert b"<li>red</li><li>blue</li>" in posted.body
    names = sorted(c.split("=", 1)[0] for c in posted.headers.get_all("Set-Cookie"))
    assert names == ["session", "visitor"]
    assert who.json() == {"name": "Zoë & <co>"}  # the session cookie came back
    assert go.status == 302
    assert go.headers["Location"] == f"http://127.0.0.1:{a.port}{MOUNT}/whoami"


@pytest.mark.parametrize("framework", ["flask", "falcon"])
def test_multipart_upload(pair, framework):
    """multipart/form-data parsed by Werkzeug (Flask) and by Falcon's own parser: several
    fields and files, one large enough to be spooled to disk."""
    big = BLOB * 3                                   # 960,000 bytes
    note = "ünïcode\r\n".encode()
    body, hdrs = multipart([("title", "two files"), ("tag", "a"), ("tag", "é")],
                           [("doc", ("big.bin", "application/octet-stream", big)),
                            ("doc", ("note.txt", "text/plain", note))])

    def steps(c, s):
        return [c.request("POST", f"{MOUNT}/upload", body, hdrs)]

    (r,), _ = both(pair, framework, steps)
    assert r.status == 200, r
    got = r.json()
    if framework == "flask":
        assert got["fields"] == {"title": ["two files"], "tag": ["a", "é"]}
        assert [(f["filename"], f["size"]) for f in got["files"]] == \
            [("big.bin", len(big)), ("note.txt", len(note))]
        assert got["files"][0]["sha256"] == hashlib.sha256(big).hexdigest()
    else:
        assert [(p["name"], p["filename"], p["size"]) for p in got["parts"]] == \
            [("title", None, 9), ("tag", None, 1), ("tag", None, 2), ("doc", "big.bin", len(big)),
             ("doc", "note.txt", len(note))]
        assert got["parts"][3]["crc"] == zlib.crc32(big)


def test_flask_chunked_request_body(pair):
    """A chunked request body (no Content-Length): Werkzeug reads it to the end because the
    server sets wsgi.input_terminated."""
    payload = json.dumps({"id": 77, "blob": "q" * 50_000}).encode()

    def steps(c, s):
        return [c.request("POST", f"{MOUNT}/api/items", payload,
                          [("Content-Type", "application/json")], chunked=True, chunk_size=4096)]

    (r,), _ = both(pair, "flask", steps)
    assert r.status == 201 and r.json()["created"] == json.loads(payload)
    assert r.json()["length"] is None


def test_flask_sees_the_same_environ(pair):
    def steps(c, s):
        return [c.get(f"{MOUNT}/environ?a=1&b=%20", headers=[("Accept", "text/x; q=1"),
                                                            ("X-Custom", "v1")]),
                c.request("POST", f"{MOUNT}/environ", b"x=1",
                          [("Content-Type", "application/x-www-form-urlencoded")])]

    (get, post), a = both(pair, "flask", steps)
    keys = get.json()["keys"]
    assert keys["SERVER_PORT"] == ["str", "the port in Host"]
    assert keys["HTTP_X_CUSTOM"] == ["str", "v1"] and keys["REMOTE_ADDR"] == ["str", "127.0.0.1"]
    assert keys["QUERY_STRING"] == ["str", "a=1&b=%20"] and keys["PATH_INFO"] == ["str", "/environ"]
    assert keys["SCRIPT_NAME"] == ["str", MOUNT] and keys["wsgi.version"] == ["tuple", [1, 0]]
    assert post.json()["body"] == 3
    assert post.json()["keys"]["CONTENT_LENGTH"] == ["str", "3"]


def test_flask_mounted_at_the_root(pair):
    """WSGIScriptAlias / ...: SCRIPT_NAME is empty and URLs the application builds have no
    prefix (gunicorn serves it under /app only, so this is checked directly)."""
    a, _ = pair("flask")
    r = a.get("/api/items/7", timeout=REQ_TIMEOUT)
    assert r.status == 200 and r.json()["script_root"] == "" and r.json()["path"] == "/api/items/7"
    r = a.get("/go", timeout=REQ_TIMEOUT)
    assert r.status == 302 and r.headers["Location"] == f"http://127.0.0.1:{a.port}/whoami"
    r = a.request("POST", "/api/items", b'{"id": 1}', [("Content-Type", "application/json")],
                  timeout=REQ_TIMEOUT)
    assert r.status == 201 and r.headers["Location"] == "/api/items/1"
    r = a.get("/index.html", timeout=REQ_TIMEOUT)  # Flask's 404, not httpd's file
    assert r.status == 404 and r.body.startswith(b"<!doctype html>\n<html lang=en>\n<title>404")


def test_async_views(pair):
    """Async views under WSGI: each framework runs an event loop (asgiref) in a thread it
    starts itself."""
    (flask_r,), _ = both(pair, "flask", lambda c, s: [c.get(f"{MOUNT}/async/40")])
    assert flask_r.status == 200
    assert flask_r.json() == {"n": 40, "total": sum(i * i for i in range(40))}
    (django_r,), _ = both(pair, "django", lambda c, s: [c.get(f"{MOUNT}/async/?n=40")])
    assert django_r.status == 200 and django_r.json()["total"] == sum(i * i for i in range(40))


def test_flask_streaming(pair):
    def steps(c, s):
        return [c.get(f"{MOUNT}/stream?n=300"), c.get(f"{MOUNT}/stream?n=300", http10=True)]

    (r, old), _ = both(pair, "flask", steps)
    assert old.status == 200 and old.body == r.body  # HTTP/1.0: no chunking, ends at close
    assert r.status == 200 and "Content-Length" not in r.headers
    lines = r.body.decode().splitlines()
    assert len(lines) == 300 and lines[299].startswith("line 299 ")


def test_flask_send_file_conditional_and_ranges(pair):
    def steps(c, s):
        url = f"{MOUNT}/blob"
        return [c.get(url),
                c.request("HEAD", url),
                c.get(url, headers=[("If-None-Match", '"blob-v1"')]),
                c.get(url, headers=[("If-Modified-Since", "Tue, 14 Nov 2023 22:13:20 GMT")]),
                c.get(url, headers=[("Range", "bytes=1000-1999")]),
                c.get(url, headers=[("Range", "bytes=-700")]),
                c.get(url, headers=[("Range", "bytes=400000-")])]

    (full, head, inm, ims, r1, r2, r3), _ = both(pair, "flask", steps)
    assert full.status == 200 and full.body == BLOB
    assert full.headers["Content-Length"] == str(len(BLOB)) and full.headers["ETag"] == '"blob-v1"'
    assert full.headers["Last-Modified"] == "Tue, 14 Nov 2023 22:13:20 GMT"
    assert head.status == 200 and head.body == b"" and head.headers["Content-Length"] == str(len(BLOB))
    assert inm.status == 304 and ims.status == 304 and inm.body == ims.body == b""
    assert r1.status == 206 and r1.body == BLOB[1000:2000]
    assert r1.headers["Content-Range"] == f"bytes 1000-1999/{len(BLOB)}"
    assert r2.status == 206 and r2.body == BLOB[-700:]
    assert r3.status == 416


# An escaped, non-ASCII path and query: PATH_INFO carries the UTF-8 bytes as latin-1 (PEP 3333)
# and each framework decodes them again.
ESCAPED = "/echo-path/caf%C3%A9/%E2%82%AC%20x/a+b?q=%C3%A9t%C3%A9&q=%E2%82%AC+x&k=a%2Bb&e="


def test_flask_send_file_from_memory(pair):
    numbers = b"".join(b"%06d\n" % i for i in range(20_000))

    def steps(c, s):
        return [c.get(f"{MOUNT}/bytes"),
                c.get(f"{MOUNT}/bytes", headers=[("Range", "bytes=70-76")]),
                c.get(f"{MOUNT}/bytes", headers=[("If-None-Match", '"numbers-v1"')]),
                c.get(f"{MOUNT}/bytes", http10=True)]

    (full, part, cached, old), _ = both(pair, "flask", steps)
    assert full.status == 200 and full.body == numbers
    assert "numbers.txt" in full.headers["Content-Disposition"]
    assert part.status == 206 and part.body == b"000010\n"
    assert cached.status == 304 and cached.body == b""
    assert old.status == 200 and old.body == numbers


def test_flask_unicode_path_and_query(pair):
    def steps(c, s):
        return [c.get(f"{MOUNT}/api/items/5?tag=%C3%A9t%C3%A9&tag=%E2%82%AC+x"),
                c.get(f"{MOUNT}{ESCAPED}"),
                c.get(f"{MOUNT}/caf%C3%A9/%E2%82%AC")]

    (r, echo, missing), a = both(pair, "flask", steps)
    assert r.status == 200 and r.json()["tags"] == ["été", "€ x"]
    assert echo.status == 200
    got = echo.json()
    assert got["rest"] == "café/€ x/a+b" and got["path"] == "/echo-path/café/€ x/a+b"
    assert got["args"] == {"q": ["été", "€ x"], "k": ["a+b"], "e": [""]}
    assert got["url"].startswith(f"http://127.0.0.1:{a.port}{MOUNT}/echo-path/café/€%20x/a+b?")
    assert missing.status == 404


def test_flask_error_is_a_500(pair):
    def steps(c, s):
        return [c.get(f"{MOUNT}/boom")]

    (r,), a = both(pair, "flask", steps)
    assert r.status == 500
    # Flask logs the traceback to wsgi.errors, which is Apache's error log.
    assert a.wait_for_log(r"RuntimeError: flask app error on purpose", timeout=10)


# --------------------------------------------------------------------------- Django

def test_django_admin_login_with_csrf(pair):
    def steps(c, s):
        out = [c.get(f"{MOUNT}/admin/")]                       # -> login page
        login_url = f"{MOUNT}/admin/login/?next={MOUNT}/admin/"
        page = c.get(login_url)
        out.append(page)
        assert "csrftoken" in c.jar, page
        token = csrf_token(page)
        # without the token: refused by the CSRF middleware
        body, hdrs = form([("username", ADMIN_USER), ("password", ADMIN_PASSWORD)])
        out.append(c.request("POST", login_url, body, hdrs))
        # a wrong password: the form again, with an error
        body, hdrs = form([("csrfmiddlewaretoken", token), ("username", ADMIN_USER),
                           ("password", "wrong"), ("next", f"{MOUNT}/admin/")])
        out.append(c.request("POST", login_url, body, hdrs))
        body, hdrs = form([("csrfmiddlewaretoken", token), ("username", ADMIN_USER),
                           ("password", ADMIN_PASSWORD), ("next", f"{MOUNT}/admin/")])
        out.append(c.request("POST", login_url, body, hdrs))
        out.append(c.get(f"{MOUNT}/admin/"))                   # logged in
        out.append(c.get(f"{MOUNT}/admin/auth/user/"))
        # add a user through the admin: a redirect and a message in the "messages" cookie
        add = c.get(f"{MOUNT}/admin/auth/user/add/")
        out.append(add)
        body, hdrs = form([("csrfmiddlewaretoken", csrf_token(add)), ("username", "zoë"),
                           ("usable_password", "true"), ("password1", "Another-pw-42"),
                           ("password2", "Another-pw-42"), ("_save", "Save")])
        added = c.request("POST", f"{MOUNT}/admin/auth/user/add/", body, hdrs)
        out.append(added)
        out.append(c.get(urllib.parse.urlsplit(added.headers.get("Location", "/")).path))
        body, hdrs = form([("csrfmiddlewaretoken", csrf_token(add))])
        out.append(c.request("POST", f"{MOUNT}/admin/logout/", body, hdrs))
        out.append(c.get(f"{MOUNT}/admin/"))                   # logged out again
        return out

    (first, page, no_csrf, wrong, login, index, users, add, added, change, logout, after), _ = \
        both(pair, "django", steps)
    assert first.status == 302
    assert first.headers["Location"] == f"{MOUNT}/admin/login/?next={MOUNT}/admin/"
    assert page.status == 200 and b"<title>Log in | Django site admin</title>" in page.body
    assert no_csrf.status == 403 and b"CSRF verification failed" in no_csrf.body
    assert wrong.status == 200 and b"Please enter the correct username and password" in wrong.body
    assert login.status == 302 and login.headers["Location"] == f"{MOUNT}/admin/"
    assert "sessionid=" in " ".join(login.headers.get_all("Set-Cookie"))
    assert index.status == 200
    assert b"Site administration" in index.body and f"{ADMIN_USER}".encode() in index.body
    assert b"Log in | Django" not in index.body
    assert users.status == 200 and b"Select user to change" in users.body
    assert add.status == 200 and b"Add user" in add.body
    assert added.status == 302 and added.headers["Location"] == f"{MOUNT}/admin/auth/user/2/change/"
    assert "messages=" in " ".join(added.headers.get_all("Set-Cookie"))
    assert change.status == 200 and "was added successfully".encode() in change.body
    assert "zoë".encode() in change.body
    assert logout.status == 200 and b"Logged out" in logout.body
    assert after.status == 302 and "/admin/login/" in after.headers["Location"]


def test_django_file_upload(pair):
    small = bytes(range(256)) * 40                         # 10 KiB: kept in memory
    big = hashlib.sha256(b"rwsgi").digest() * 50_000       # 1.6 MB: a temporary file

    def steps(c, s):
        page = c.get(f"{MOUNT}/upload/")
        token = csrf_token(page)
        out = [page]
        for name, data in (("small.bin", small), ("big.bin", big)):
            body, hdrs = multipart([("csrfmiddlewaretoken", token), ("title", f"t {name}")],
                                   [("document", (name, "application/octet-stream", data))])
            out.append(c.request("POST", f"{MOUNT}/upload/", body, hdrs))
        body, hdrs = multipart([("csrfmiddlewaretoken", token), ("title", "no file")], [])
        out.append(c.request("POST", f"{MOUNT}/upload/", body, hdrs))   # invalid form
        return out

    (page, r_small, r_big, invalid), a = both(pair, "django", steps)
    assert page.status == 200 and b'enctype="multipart/form-data"' in page.body
    for r, data, name, handler in ((r_small, small, "small.bin", "InMemoryUploadedFile"),
                                   (r_big, big, "big.bin", "TemporaryUploadedFile")):
        assert r.status == 200, r
        info = r.json()
        digest = hashlib.sha256(data).hexdigest()
        assert info == {"title": f"t {name}", "name": name, "size": len(data),
                        "content_type": "application/octet-stream", "sha256": digest,
                        "stored": f"uploads/{digest[:16]}-{name}", "handler": handler}
        saved = a.site / "var" / "media" / info["stored"]
        assert saved.read_bytes() == data
    assert invalid.status == 400 and b"This field is required" in invalid.body


def test_django_streaming_response(pair):
    def steps(c, s):
        return [c.get(f"{MOUNT}/stream/?n=400"), c.request("HEAD", f"{MOUNT}/stream/?n=400")]

    (r, head), _ = both(pair, "django", steps)
    assert head.status == 200 and head.body == b"" and head.headers["X-Rows"] == "400"
    assert r.status == 200 and r.headers["X-Rows"] == "400"
    assert "Content-Length" not in r.headers
    lines = r.body.decode().splitlines()
    assert len(lines) == 400 and lines[-1].startswith("row 399: ")


def test_django_unicode_path_and_slash_redirect(pair):
    def steps(c, s):
        return [c.get(f"{MOUNT}{ESCAPED}"),
                c.get(f"{MOUNT}/admin"),             # APPEND_SLASH: a redirect to /app/admin/
                c.get(f"{MOUNT}/blob?x=%C3%A9")]      # ... keeping the query string

    (echo, admin, blob), a = both(pair, "django", steps)
    assert echo.status == 200
    got = echo.json()
    assert got["rest"] == "café/€ x/a+b"
    assert got["path"] == f"{MOUNT}/echo-path/café/€ x/a+b"
    assert got["path_info"] == "/echo-path/café/€ x/a+b"
    assert got["query"] == {"q": ["été", "€ x"], "k": ["a+b"], "e": [""]}
    assert got["uri"] == f"http://127.0.0.1:{a.port}{MOUNT}{ESCAPED}"
    assert admin.status == 301 and admin.headers["Location"] == f"{MOUNT}/admin/"
    assert blob.status == 301 and blob.headers["Location"] == f"{MOUNT}/blob/?x=%C3%A9"


def test_django_project_wsgi_py_as_the_script(pair, venv):
    """Django's documented set-up (WSGIScriptAlias to <project>/wsgi.py, the project directory
    on WSGIPythonPath / python-path=, WSGIProcessGroup in daemon mode)."""
    def steps(c, s):
        page = c.get(f"{MOUNT}/admin/login/?next={MOUNT}/admin/")
        body, hdrs = form([("csrfmiddlewaretoken", csrf_token(page)), ("username", ADMIN_USER),
                           ("password", ADMIN_PASSWORD), ("next", f"{MOUNT}/admin/")])
        return [page, c.request("POST", f"{MOUNT}/admin/login/", body, hdrs),
                c.get(f"{MOUNT}/admin/"), c.get(f"{MOUNT}/stream/?n=5")]

    (page, login, index, stream), a = both(pair, "django-docs", steps)
    info = a.get(f"{MOUNT}/runtime/", timeout=REQ_TIMEOUT).json()
    assert info == {"prefix": str(venv),
                    "process_group": harness.DAEMON_GROUP if pair.mode == "daemon" else ""}
    assert page.status == 200 and login.status == 302
    assert index.status == 200 and b"Site administration" in index.body
    assert stream.status == 200 and stream.body.decode().splitlines()[-1] == "row 4: " + "y" * 212


def test_django_file_response(pair):
    def steps(c, s):
        return [c.get(f"{MOUNT}/blob/"), c.request("HEAD", f"{MOUNT}/blob/"),
                c.request("HEAD", f"{MOUNT}/admin/login/")]

    (r, head, login_head), _ = both(pair, "django", steps)
    assert r.status == 200 and r.body == BLOB
    assert r.headers["Content-Length"] == str(len(BLOB))
    assert r.headers["Content-Disposition"] == "attachment; filename*=utf-8''blob%20%C3%A9.bin"
    assert head.status == 200 and head.body == b""
    assert login_head.status == 200 and login_head.body == b""


# --------------------------------------------------------------------------- keep-alive

class Connection:
    """Requests one after another on one persistent HTTP/1.1 connection."""

    def __init__(self, port: int):
        self.port = port
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=REQ_TIMEOUT)
        self.reader = harness._Reader(self.sock, time.monotonic())

    def request(self, method, path, body=b"", headers=()) -> harness.Response:
        head = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{self.port}"]
        head += [f"{k}: {v}" for k, v in headers]
        if body or method in ("POST", "PUT"):
            head.append(f"Content-Length: {len(body)}")
        self.sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode() + body)
        resp = harness.Response()
        harness._read_response(self.reader, resp, method, True)
        return resp

    def close(self):
        self.sock.close()


@pytest.mark.parametrize("framework", ["flask", "django", "falcon"])
def test_keepalive_with_unread_bodies(pair, framework):
    """Several requests on one connection, some whose body the application never reads (a 404,
    a 405, a CSRF refusal): the server must skip the rest of the body and answer the next
    request on the same connection."""
    big = b"z" * 300_000
    json_body = json.dumps({"id": 9, "name": "widget"}).encode()
    script = {
        "flask": [("POST", "/nowhere", big, []),
                  ("POST", "/api/items", json_body, [("Content-Type", "application/json")]),
                  ("PUT", "/api/items/1", big, [("Content-Type", "application/octet-stream")]),
                  ("GET", "/api/items/3", b"", []),
                  ("POST", "/api/items", json_body, [("Content-Type", "application/json"),
                                                     ("Expect", "100-continue")]),
                  ("GET", "/stream?n=30", b"", [])],
        "django": [("POST", "/upload/", big, [("Content-Type", "application/octet-stream")]),
                   ("POST", "/nowhere/", big, []),
                   ("GET", "/stream/?n=30", b"", []),
                   ("GET", "/blob/", b"", []),
                   ("GET", "/admin/login/", b"", [])],
        "falcon": [("POST", "/nowhere", big, []),
                   ("PATCH", "/things/1", big, []),
                   ("PUT", "/echo", big, [("Content-Type", "text/plain"),
                                          ("Expect", "100-continue")]),
                   ("POST", "/things", json_body, [("Content-Type", "application/json")]),
                   ("GET", "/things/4", b"", [])],
    }[framework]
    a, g = pair(framework)
    conn = Connection(a.port)
    try:
        ours = [conn.request(m, MOUNT + p, b, h) for m, p, b, h in script]
    finally:
        conn.close()
    # gunicorn (27, gthread) closes a connection whose request body the application left
    # unread, so its answers are taken on a fresh connection each.
    theirs = [harness.http_request(g.port, m, MOUNT + p, b or None, h, timeout=REQ_TIMEOUT)
              for m, p, b, h in script]
    for i, (x, y) in enumerate(zip(ours, theirs)):
        try:
            assert_same(x, y, a.port, g.port)
        except AssertionError as e:
            raise AssertionError(f"request {i} ({script[i][0]} {script[i][1]}): {e}") from None
        assert (x.headers.get("Connection") or "").lower() != "close", x
    answers = {a: ours}
    statuses = [r.status for r in answers[a]]
    assert statuses == {"flask": [404, 201, 405, 200, 201, 200],
                        "django": [403, 404, 200, 200, 200],
                        "falcon": [404, 405, 200, 201, 200]}[framework]


@pytest.mark.parametrize("framework", ["django", "falcon"])
def test_upload_waiting_for_100_continue(pair, framework):
    """The interim 100 Continue reaches a client that waits for it before sending the body
    (both modes: in daemon mode it goes out when the daemon starts reading)."""
    a, g = pair(framework)
    data = BLOB[:200_000]
    answers = []
    for srv in (a, g):
        if framework == "falcon":
            req = ("PUT", f"{MOUNT}/echo", data, [("Content-Type", "text/plain")])
        else:
            c = Client(srv)  # the CSRF cookie and token come from a GET first
            token = csrf_token(c.get(f"{MOUNT}/upload/"))
            body, hdrs = multipart([("csrfmiddlewaretoken", token), ("title", "expect")],
                                   [("document", ("e.bin", "application/octet-stream", data))])
            req = ("POST", f"{MOUNT}/upload/", body,
                   hdrs + [("Cookie", f"csrftoken={c.jar['csrftoken']}")])
        answers.append(harness.expect_continue(srv.port, *req, timeout=REQ_TIMEOUT))
    (ia, ra), (ig, rg) = answers
    assert ig == b"HTTP/1.1 100 Continue"
    assert ia == b"HTTP/1.1 100 Continue", f"mod_rwsgi sent no 100 Continue: {ra!r}"
    assert_same(ra, rg, a.port, g.port)
    assert ra.status == 200


def test_flask_through_mod_deflate(pair, venv, request):
    """Flask behind mod_deflate (Debian enables it by default): compressed answers whose
    content is gunicorn's, streamed responses and wsgi.file_wrapper included. A server of its
    own, in this setup's mode and MPM."""
    import gzip

    a0, g = pair("flask")
    srv = harness.Apache(mode=a0.mode, mpm=a0.mpm, modules=["filter", "deflate"],
                         name=f"fw-deflate-{a0.mode}-{a0.mpm}", daemon_options=a0.daemon_options)
    request.node._rwsgi_servers = [srv]
    try:
        site = make_site(srv.apps / "fw")
        srv.start((f"WSGIPythonHome {venv}\n" if srv.mode == "embedded" else "")
                  + "AddOutputFilterByType DEFLATE text/html text/plain application/json\n"
                  + srv.mount(MOUNT, site / "app" / "flask_app.wsgi"))
        gz = [("Accept-Encoding", "gzip")]
        for method, path in (("GET", "/api/items/7?tag=z"), ("GET", "/stream?n=500"),
                             ("GET", "/bytes"), ("HEAD", "/api/items/7")):
            ra = harness.http_request(srv.port, method, MOUNT + path, headers=gz, timeout=REQ_TIMEOUT)
            rg = harness.http_request(g.port, method, MOUNT + path, timeout=REQ_TIMEOUT)
            assert ra.complete and ra.status == rg.status, (ra, rg)
            if method == "HEAD":
                assert ra.body == b"" and ra.headers["Content-Type"] == rg.headers["Content-Type"]
                continue
            assert ra.headers.get("Content-Encoding") == "gzip", ra
            assert "Accept-Encoding" in ra.headers.get("Vary", ""), ra
            assert gzip.decompress(ra.body) == rg.body, (method, path)
            assert ra.headers["Content-Type"] == rg.headers["Content-Type"]
    finally:
        problems, saved = harness.close_servers([srv], False, LOG_DIR / f"fw-deflate-{a0.mode}")
    assert not problems, f"{problems}; logs in {saved}"


# --------------------------------------------------------------------------- concurrency

CONCURRENT = {  # framework -> requests (method, path, body, headers) every client sends
    "flask": [("GET", "/api/items/3?tag=x", None, []),
              ("GET", "/async/30", None, []),
              ("POST", "/api/items", b'{"id": 5}', [("Content-Type", "application/json")]),
              ("GET", "/stream?n=120", None, []),
              ("GET", "/blob", None, [("Range", "bytes=100-50099")])],
    "django": [("GET", "/admin/login/", None, []),
               ("GET", "/stream/?n=150", None, []),
               ("GET", "/blob/", None, []),
               ("GET", "/echo-path/x%C3%A9?a=1", None, []),
               ("GET", "/async/?n=25", None, [])],
    "falcon": [("GET", "/things/8", None, []),
               ("POST", "/things", b'{"name": "n"}', [("Content-Type", "application/json")]),
               ("PUT", "/echo", BLOB[:100_000], [("Content-Type", "text/plain")])],
}


@pytest.mark.parametrize("framework", sorted(CONCURRENT))
def test_concurrent_clients(pair, framework):
    """Clients in parallel threads (more than one request per server thread at a time): every
    answer is the one gunicorn gives to the same request alone."""
    import threading

    a, g = pair(framework)
    reqs = CONCURRENT[framework]
    expected = [harness.http_request(g.port, m, MOUNT + p, b, h, timeout=REQ_TIMEOUT)
                for m, p, b, h in reqs]
    results: dict[int, list] = {}

    def client(n):
        results[n] = [(i, harness.http_request(a.port, m, MOUNT + p, b, h, timeout=REQ_TIMEOUT))
                      for _ in range(3) for i, (m, p, b, h) in enumerate(reqs)]

    threads = [threading.Thread(target=client, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not any(t.is_alive() for t in threads), "clients did not finish"
    assert len(results) == 8
    for n, answers in results.items():
        for i, r in answers:
            try:
                assert_same(r, expected[i], a.port, g.port)
            except AssertionError as e:
                raise AssertionError(f"client {n}, {reqs[i][0]} {reqs[i][1]}: {e}") from None


@pytest.mark.parametrize("framework", sorted(CONCURRENT))
def test_graceful_restart_with_framework_loaded(pair, framework):
    """`apachectl graceful` with the framework imported: the old children or daemons finalise
    Python with it loaded (the module's teardown fails on any crash in the error log), and
    the new generation, with a fresh interpreter from the venv, answers the same."""
    a, g = pair(framework)
    m, p, b, h = CONCURRENT[framework][0]
    before = harness.http_request(a.port, m, MOUNT + p, b, h, timeout=REQ_TIMEOUT)
    a.graceful()
    after = harness.http_request(a.port, m, MOUNT + p, b, h, timeout=REQ_TIMEOUT)
    expected = harness.http_request(g.port, m, MOUNT + p, b, h, timeout=REQ_TIMEOUT)
    assert_same(before, expected, a.port, g.port)
    assert_same(after, expected, a.port, g.port)


# --------------------------------------------------------------------------- Falcon

def test_falcon_json_resources(pair):
    def steps(c, s):
        return [c.get(f"{MOUNT}/things/12?limit=3", headers=[("Accept", "application/json")]),
                c.get(f"{MOUNT}/things/abc"),
                c.request("DELETE", f"{MOUNT}/things"),
                c.request("DELETE", f"{MOUNT}/things/12")]

    (ok, missing, not_allowed, deleted), _ = both(pair, "falcon", steps)
    assert deleted.status == 204 and deleted.body == b"" and deleted.headers["X-Deleted"] == "12"
    assert ok.status == 200 and ok.headers["Content-Type"] == "application/json"
    assert ok.headers["Vary"] == "Accept" and ok.headers["Cache-Control"] == "max-age=60"
    assert ok.json() == {"id": 12, "name": "thing 12", "limit": 3,
                         "relative_uri": f"{MOUNT}/things/12?limit=3"}
    assert missing.status == 404
    assert not_allowed.status == 405 and "POST" in not_allowed.headers["Allow"]


def test_falcon_post_media(pair):
    thing = {"name": "widget", "parts": list(range(50)), "note": "ü" * 100}
    payload = json.dumps(thing).encode()
    blob = bytes(range(256)) * 1200   # 300 KiB through req.bounded_stream

    def steps(c, s):
        jh = [("Content-Type", "application/json")]
        return [c.request("POST", f"{MOUNT}/things", payload, jh),
                c.request("POST", f"{MOUNT}/things", b"{not json", jh),
                c.request("POST", f"{MOUNT}/things", b'{"nameless": 1}', jh),
                c.request("PUT", f"{MOUNT}/echo", blob, [("Content-Type", "application/x-blob")])]

    (created, bad_json, invalid, echo), _ = both(pair, "falcon", steps)
    tid = zlib.crc32(b"widget") % 100000
    assert created.status == 201 and created.headers["Location"] == f"{MOUNT}/things/{tid}"
    assert created.json() == {"id": tid, "stored": thing, "size": len(payload)}
    assert bad_json.status == 400 and "Invalid JSON" in bad_json.json()["title"]
    assert invalid.status == 400 and invalid.json()["title"] == "Invalid thing"
    assert echo.status == 200
    assert echo.text == f"{len(blob)} bytes, crc {zlib.crc32(blob)}, type application/x-blob"
