"""Security regressions, one per class of mod_wsgi's CVEs and per trust boundary of daemon mode:

- CVE-2014-0242 (a response's Content-Type read from freed memory under threads): many threads
  setting distinct Content-Types never see each other's;
- CVE-2014-0240 / CVE-2014-8583 (a failed setuid, or supplementary groups, not checked): a daemon
  whose user, group or supplementary groups cannot be set never runs the application, and a
  running daemon holds exactly the credentials configured (no root uid/gid/groups left over);
- CVE-2022-2255 (an untrusted proxy's X-Client-IP passed through): every proxy header of a
  configured kind is stripped unless it comes from a trusted proxy, and header names with '_'
  cannot stand in for dashed ones;
- the daemon socket: only the httpd child user can connect, and a connection must present this
  server's secret and generation (the current one, or the one before a graceful restart) before
  anything runs.

Already covered elsewhere: the socket's mode 0600 and owner (test_daemon.py), an unknown user=
backing off (test_daemon.py), X_Foo vs X-Foo and httpoxy (test_environ.py), the basic trusted /
untrusted X-Forwarded-For cases (test_environ.py).
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import re
import socket
import stat
import struct
import subprocess
import threading
import time

import pytest

import harness

WWW = "www-data"
WWW_UID = pwd.getpwnam(WWW).pw_uid
WWW_GID = grp.getgrnam(WWW).gr_gid

# Marks every run of the application (and its import) in the state dir, so a test can prove
# that something never ran.
MARK_APP = """\
import os
STATE = "@STATE@"
with open(os.path.join(STATE, "imported"), "a") as f:
    f.write("%d\\n" % os.getpid())


def application(environ, start_response):
    tag = environ.get("QUERY_STRING", "") or "none"
    with open(os.path.join(STATE, "ran-" + tag), "a") as f:
        f.write("%d\\n" % os.getpid())
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ran " + tag.encode()]
"""


def ran(srv, tag: str) -> bool:
    return (srv.state / f"ran-{tag}").exists()


def sockets(srv) -> list:
    return sorted((srv.root / "run").glob("rwsgi.*.sock"))


# --------------------------------------------------------------------- 1. Content-Type never crosses

def test_concurrent_content_types_never_cross(apache_factory, mode):
    """CVE-2014-0242 class: 20 client threads x 50 requests, each asking for its own
    Content-Type, on the event MPM (20 worker threads) and in daemon mode on one daemon with
    threads=15. Every response must carry exactly what its request asked for.
    (test_threads.py runs a smaller version on every MPM.)"""
    srv = apache_factory(mpm="event")
    script = srv.app("response.wsgi")
    if mode == "daemon":
        conf = ("WSGIDaemonProcess ct processes=1 threads=15\n"
                + srv.mount("/r", script, process_group="ct"))
    else:
        conf = srv.mount("/r", script)
    srv.start(conf)
    assert srv.get("/r/ok").status == 200
    crossed, failed, served = [], [], []
    lock = threading.Lock()

    def worker(n):
        for i in range(50):
            rid = f"{n}x{i}"
            r = srv.get(f"/r/ctype?id={rid}", timeout=60)
            with lock:
                if r.status != 200 or not r.complete:
                    failed.append(f"{rid}: {r!r}")
                elif (r.headers.get("Content-Type") != f"application/x-rwsgi-{rid}"
                      or r.headers.get("X-Rwsgi-Id") != rid
                      or not r.body.startswith(f"id={rid} ".encode())):
                    crossed.append(f"{rid}: {r.headers.get('Content-Type')!r} {r.body[:40]!r}")
                else:
                    served.append(r.body.split()[2])   # thread=...

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(600)
    assert not any(t.is_alive() for t in threads), "client threads hung"
    assert not crossed, f"{len(crossed)} crossed Content-Types: {crossed[:5]}"
    assert not failed, f"{len(failed)} failed requests: {failed[:5]}"
    assert len(served) == 1000
    # The requests really ran on several threads at once.
    assert len(set(served)) > 1, set(served)


# --------------------------------------------------------------------- 2. user / group / groups

def _proc_ids(pid: int) -> dict:
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("Uid", "Gid", "Groups"):
                out[k] = [int(x) for x in v.split()]
    return out


def _daemon_pids(srv) -> list[int]:
    out = []
    for pid in srv.child_pids():
        try:
            with open(f"/proc/{pid}/comm") as f:
                if f.read().startswith("wsgi:"):
                    out.append(pid)
        except OSError:
            pass
    return out


@pytest.mark.embedded_only   # daemon-specific: the servers run in daemon mode
@pytest.mark.parametrize("opt,needle", [
    ("group=rwsgi-no-such-group", "rwsgi-no-such-group"),
    ("supplementary-groups=rwsgi-no-such-group", "rwsgi-no-such-group"),
    ("user=rwsgi-no-such-user", "rwsgi-no-such-user"),
    ("supplementary-groups=www-data,rwsgi-no-such-group", "rwsgi-no-such-group"),
])
def test_unsettable_identity_never_runs_the_app(apache_factory, opt, needle):
    """CVE-2014-0240 / CVE-2014-8583 class: a daemon that cannot take the configured group,
    supplementary groups or user stops before Python: the application is never imported nor
    run (marker files), the request gets a 503, and the log names what failed."""
    srv = apache_factory(mode="daemon")
    app = srv.write_file("apps/mark.wsgi", MARK_APP)
    srv.allow_log(re.escape(needle))
    srv.start(f"WSGIDaemonProcess bad processes=1 threads=2 connect-timeout=1 {opt}\n"
              f"WSGIImportScript {app} process-group=bad application-group=%{{GLOBAL}}\n"
              + srv.mount("/m", app, process_group="bad", application_group="%{GLOBAL}"))
    r = srv.get("/m/?tag=x", timeout=20)
    assert r.status == 503, r
    assert srv.wait_for_log(rf"RW0013: daemon group 'bad': .*{re.escape(needle)}", timeout=10), \
        srv.error_log()[-2000:]
    assert not (srv.state / "imported").exists(), "the application was imported"
    assert not ran(srv, "x"), "the application ran"
    # The daemon never got as far as running anything as root either: no daemon process of
    # the group is alive with uid 0 (they exit at once).
    for pid in _daemon_pids(srv):
        try:
            ids = _proc_ids(pid)
        except OSError:
            continue
        assert 0 not in ids["Uid"], (pid, ids)


@pytest.mark.embedded_only
def test_daemon_holds_exactly_the_configured_credentials(apache_factory):
    """CVE-2014-8583 class: real, effective, saved and filesystem uid/gid are the configured
    user's, and the supplementary groups are exactly initgroups(user) by default, or exactly the
    configured list with supplementary-groups= - never root's."""
    srv = apache_factory(mode="daemon")
    app = srv.write_file("apps/mark.wsgi", MARK_APP)
    srv.start("WSGIDaemonProcess dflt processes=1 threads=1\n"
              "WSGIDaemonProcess supp processes=1 threads=1 supplementary-groups=nogroup\n"
              + srv.mount("/d", app, process_group="dflt")
              + srv.mount("/s", app, process_group="supp"))
    for url, tag in (("/d/", "d"), ("/s/", "s")):
        r = srv.get(f"{url}?{tag}")
        assert r.status == 200, r
    pid_d = int((srv.state / "ran-d").read_text().split()[0])
    pid_s = int((srv.state / "ran-s").read_text().split()[0])
    d, s = _proc_ids(pid_d), _proc_ids(pid_s)
    assert d["Uid"] == [WWW_UID] * 4 and d["Gid"] == [WWW_GID] * 4, d
    assert sorted(d["Groups"]) == sorted(set(os.getgrouplist(WWW, WWW_GID))), d
    assert s["Uid"] == [WWW_UID] * 4 and s["Gid"] == [WWW_GID] * 4, s
    nogroup = grp.getgrnam("nogroup").gr_gid
    assert sorted(s["Groups"]) == sorted({WWW_GID, nogroup}), s   # the list + the primary gid
    assert 0 not in d["Groups"] + s["Groups"]


# --------------------------------------------------------------------- 3. proxy headers

ECHO_KEYS = ("REMOTE_ADDR", "HTTP_HOST", "SERVER_NAME", "SERVER_PORT", "SCRIPT_NAME",
             "wsgi.url_scheme", "HTTPS")
# Every proxy header mod_wsgi 6 knows, with the CGI variable it would set.
PROXY_HEADERS = [
    ("X-Forwarded-For", "203.0.113.1"), ("X-Client-IP", "203.0.113.2"),
    ("X-Real-IP", "203.0.113.3"), ("X-Forwarded-Host", "evil.example"),
    ("X-Host", "evil2.example"), ("X-Forwarded-Server", "evil3.example"),
    ("X-Forwarded-Port", "4443"), ("X-Script-Name", "/evil"),
    ("X-Forwarded-Script-Name", "/evil2"), ("X-Forwarded-Proto", "https"),
    ("X-Forwarded-Scheme", "https"), ("X-Scheme", "https"), ("X-Forwarded-HTTPS", "on"),
    ("X-Forwarded-SSL", "on"), ("X-HTTPS", "on"),
]
# One trusted header per kind (client address, host, server, port, script name, scheme).
TRUST_ALL_KINDS = ("X-Forwarded-For X-Forwarded-Host X-Forwarded-Server X-Forwarded-Port "
                   "X-Script-Name X-Forwarded-Proto")


def _env(srv, path, headers):
    r = srv.get(path, headers=headers)
    assert r.status == 200 and r.complete, r
    return r.json()


def _http_key(name: str) -> str:
    return "HTTP_" + name.upper().replace("-", "_")


def test_untrusted_proxy_headers_are_stripped(apache_factory, mode):
    """CVE-2022-2255 class, extending test_environ.py: with one trusted header of each kind
    configured, a client that is not a trusted proxy can set none of the 15 proxy headers, and
    none of them changes REMOTE_ADDR, the host, port, script name or scheme."""
    srv = apache_factory()
    script = srv.app("echo.wsgi")
    srv.start(srv.mount("/plain", script) + srv.mount("/untrusted", script)
              + "<Location /untrusted>\n"
              f"  WSGITrustedProxyHeaders {TRUST_ALL_KINDS}\n"
              "  WSGITrustedProxies 10.0.0.1 192.0.2.0/24\n"
              "</Location>\n")
    base = _env(srv, "/untrusted/", [])
    env = _env(srv, "/untrusted/", PROXY_HEADERS)
    for name, value in PROXY_HEADERS:
        assert _http_key(name) not in env, (name, env.get(_http_key(name)))
    for k in ECHO_KEYS:
        assert env.get(k) == base.get(k), (k, env.get(k), base.get(k))
    assert env["REMOTE_ADDR"] == "127.0.0.1" and env["wsgi.url_scheme"] == "http"
    assert all(v not in json.dumps(env) for _, v in PROXY_HEADERS if "." in v or "/" in v)
    # Without WSGITrustedProxyHeaders nothing is interpreted (as mod_wsgi): the headers are
    # plain request headers and change no CGI variable.
    env = _env(srv, "/plain/", PROXY_HEADERS)
    assert env["REMOTE_ADDR"] == "127.0.0.1" and env["wsgi.url_scheme"] == "http"
    assert env["HTTP_HOST"] == base["HTTP_HOST"] and env["SCRIPT_NAME"] == "/plain"


def test_trusted_header_strips_its_synonyms(apache_factory, mode):
    """From a trusted proxy, the configured header wins and its synonyms are removed: trusting
    X-Real-IP removes X-Forwarded-For and X-Client-IP (the CVE-2022-2255 case), trusting
    X-Forwarded-Proto removes X-Scheme, X-Forwarded-SSL, X-HTTPS ..."""
    srv = apache_factory()
    script = srv.app("echo.wsgi")
    srv.start(srv.mount("/t", script)
              + "<Location /t>\n"
              "  WSGITrustedProxyHeaders X-Real-IP X-Forwarded-Proto X-Forwarded-Host\n"
              "  WSGITrustedProxies 127.0.0.1\n"
              "</Location>\n")
    env = _env(srv, "/t/", PROXY_HEADERS)
    assert env["REMOTE_ADDR"] == "203.0.113.3", env["REMOTE_ADDR"]
    assert env["wsgi.url_scheme"] == "https"
    assert env["HTTP_HOST"] == "evil.example"
    kept = {"X-Real-IP", "X-Forwarded-Proto", "X-Forwarded-Host"}
    # kinds not configured at all (server, port, script name) pass through as plain headers
    untouched = {"X-Forwarded-Server", "X-Forwarded-Port", "X-Script-Name",
                 "X-Forwarded-Script-Name"}
    for name, _ in PROXY_HEADERS:
        if name in kept or name in untouched:
            continue
        assert _http_key(name) not in env, name


def test_underscore_headers_cannot_spoof_dashed_ones(apache_factory, mode):
    """X_Forwarded_For, Content_Length, Content_Type, X_Real_IP, Authorization_ ... never reach
    the environ, so they cannot stand in for the dashed header a proxy or auth module set
    (extends test_environ.py's X_Foo case to the headers that matter)."""
    srv = apache_factory()
    script = srv.app("echo.wsgi")
    srv.start(srv.mount("/t", script, pass_authorization="On")
              + "<Location /t>\n"
              "  WSGITrustedProxyHeaders X-Forwarded-For X-Real-IP X-Forwarded-Proto\n"
              "  WSGITrustedProxies 127.0.0.1\n"
              "</Location>\n")
    spoof = [("X_Forwarded_For", "198.51.100.71"), ("X_Real_IP", "198.51.100.72"),
             ("X_Forwarded_Proto", "https-spoof"), ("Content_Length", "987654"),
             ("Content_Type", "spoof/type"), ("Authorization_", "Basic c3Bvb2Y6c3Bvb2Y="),
             ("Remote_User", "spoofed-user"), ("Host_", "spoof-host.example")]
    env = _env(srv, "/t/", spoof)
    dump = json.dumps(env)
    for name, value in spoof:
        assert value not in dump, (name, value)
    assert env["REMOTE_ADDR"] == "127.0.0.1"
    assert env["wsgi.url_scheme"] == "http"
    assert env.get("CONTENT_LENGTH", "") in ("", "0") and "CONTENT_TYPE" not in env
    assert "HTTP_AUTHORIZATION" not in env and "REMOTE_USER" not in env
    # The dashed originals still work from the trusted proxy (the test is not vacuous).
    env = _env(srv, "/t/", [("X-Real-IP", "203.0.113.9"), ("Authorization", "Basic eDp5")])
    assert env["REMOTE_ADDR"] == "203.0.113.9" and env["HTTP_AUTHORIZATION"] == "Basic eDp5"


# --------------------------------------------------------------------- 4. the daemon socket

# Runs as another user (setpriv): connects to a UNIX socket, sends the hex bytes given, and
# reads frames until End/Fail/Reject+EOF, EOF or 10 s. Prints JSON.
TALK = r"""
import json, socket, struct, sys
path, data = sys.argv[1], bytes.fromhex(sys.argv[2])
out = {"frames": [], "eof": False}
s = socket.socket(socket.AF_UNIX)
s.settimeout(10)
try:
    s.connect(path)
except OSError as e:
    out["connect_errno"] = e.errno
    print(json.dumps(out)); sys.exit(0)
if data:
    s.sendall(data)
buf = b""
done = False
try:
    while True:
        while len(buf) >= 5:
            n, kind = struct.unpack(">IB", buf[:5])
            if len(buf) < 4 + n:
                break
            out["frames"].append([kind, buf[5:4 + n].hex()])
            buf = buf[4 + n:]
            if kind in (0x14, 0x15) or (kind == 0x17 and not data):
                done = True
        if done:
            break
        d = s.recv(65536)
        if not d:
            out["eof"] = True
            break
        buf += d
except socket.timeout:
    out["timeout"] = True
print(json.dumps(out))
"""

WELCOME, ACCEPTED, HEAD, CHUNK, END, FAIL, REJECT = 0x17, 0x18, 0x11, 0x12, 0x14, 0x15, 0x16


def talk_as(user: str, path, data: bytes = b"") -> dict:
    g = grp.getgrgid(pwd.getpwnam(user).pw_gid).gr_name
    p = subprocess.run(["setpriv", f"--reuid={user}", f"--regid={g}", "--clear-groups",
                        "/usr/bin/python3", "-c", TALK, str(path), data.hex()],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
    assert p.returncode == 0, p.stderr.decode()
    return json.loads(p.stdout)


def frame(kind: int, payload: bytes) -> bytes:
    return struct.pack(">IB", len(payload) + 1, kind) + payload


# The wire protocol's version, read from src/protocol/mod.rs (so a version bump cannot leave
# these tests talking the old one), and the size of the typed request facts (RequestMeta) that
# open a Request payload.
PROTOCOL_VERSION = int(re.search(
    r"pub const PROTOCOL_VERSION: u16 = (\d+);",
    (harness.TESTS_DIR.parent / "src" / "protocol" / "mod.rs").read_text()).group(1))
META_LEN = 39


def hello(secret: bytes, generation: int, version: int = PROTOCOL_VERSION) -> bytes:
    return frame(0x01, b"RWSG" + struct.pack(">H", version) + secret
                 + struct.pack(">I", generation))


def request_frame(request) -> bytes:
    """A Request frame of (meta bytes, environ pairs)."""
    meta, env = request
    assert len(meta) == META_LEN
    out = meta + struct.pack(">I", len(env))
    for k, v in env:
        out += struct.pack(">H", len(k)) + k + struct.pack(">I", len(v)) + v
    return frame(0x02, out)


def parse_capture(data: bytes):
    """(secret, generation, (meta bytes, env pairs)) from the bytes an httpd child sent:
    Hello + Request."""
    n, kind = struct.unpack(">IB", data[:5])
    assert kind == 0x01 and n == 27 and data[5:9] == b"RWSG", data[:40]
    secret, generation = data[11:27], struct.unpack(">I", data[27:31])[0]
    rest = data[31:]
    n, kind = struct.unpack(">IB", rest[:5])
    assert kind == 0x02 and len(rest) >= 4 + n, (kind, n, len(rest))
    p = rest[5:4 + n]
    meta, p = p[:META_LEN], p[META_LEN:]
    count = struct.unpack(">I", p[:4])[0]
    i, env = 4, []
    for _ in range(count):
        kl = struct.unpack(">H", p[i:i + 2])[0]
        k = p[i + 2:i + 2 + kl]
        i += 2 + kl
        vl = struct.unpack(">I", p[i:i + 4])[0]
        v = p[i + 4:i + 4 + vl]
        i += 4 + vl
        env.append((k, v))
    return secret, generation, (meta, env)


def with_tag(request, tag: str):
    meta, env = request
    return meta, [(k, tag.encode() if k == b"QUERY_STRING" else v) for k, v in env]


def capture_credentials(srv, sock_path, url: str):
    """Learn this server's real credentials the way only the httpd child can know them: put
    a listening socket in place of the daemon's, let one request's child connect and send its
    Hello and Request, then put the daemon's socket back (the request is retried on it)."""
    hidden = sock_path.with_name(sock_path.name + ".hidden")
    os.rename(sock_path, hidden)
    fake = socket.socket(socket.AF_UNIX)
    got = b""
    result = {}
    conn = None
    try:
        fake.bind(str(sock_path))
        os.chmod(sock_path, 0o666)
        fake.listen(1)
        fake.settimeout(20)
        t = threading.Thread(target=lambda: result.setdefault("r", srv.get(url, timeout=40)))
        t.start()
        conn, _ = fake.accept()
        conn.settimeout(10)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                parse_capture(got)
                break
            except (AssertionError, struct.error, IndexError):
                pass
            d = conn.recv(65536)
            if not d:
                break
            got += d
    finally:
        # Put the daemon's socket back in one atomic step, before the child sees this
        # connection close and retries: the retry can only reach the real daemon.
        os.rename(hidden, sock_path)
        if conn is not None:
            conn.close()
        fake.close()
    t.join(60)
    return parse_capture(got), result.get("r")


@pytest.mark.embedded_only
def test_daemon_socket_refuses_other_local_users(apache_factory):
    """Only the httpd child user can connect to a daemon socket: `nobody` gets EACCES, while
    www-data connects and is greeted by the daemon (the check is not vacuous)."""
    srv = apache_factory(mode="daemon")
    app = srv.write_file("apps/mark.wsgi", MARK_APP)
    srv.start(srv.mount("/m", app))
    assert srv.get("/m/?warm").status == 200
    socks = sockets(srv)
    assert socks
    for p in socks:
        st = os.lstat(p)
        assert stat.S_IMODE(st.st_mode) == 0o600 and st.st_uid == WWW_UID, (p, oct(st.st_mode))
        out = talk_as("nobody", p)
        assert out.get("connect_errno") == 13, out   # EACCES
        out = talk_as(WWW, p)
        assert "connect_errno" not in out and out["frames"][:1] == [[WELCOME, ""]], out


def _group_socket(srv) -> "os.PathLike":
    """The socket of the group 'sec' (not the harness's default group): its number follows
    the order of WSGIDaemonProcess lines, and render_conf puts the default group first."""
    socks = sockets(srv)
    assert len(socks) == 2, socks
    return max(socks, key=lambda p: int(p.name.split(".")[2]))


def _captured_server(apache_factory):
    """A daemon-mode server with group 'sec' serving the marker app at /m, and the real
    credentials and environ one of its httpd children sent (see capture_credentials)."""
    srv = apache_factory(mode="daemon")
    app = srv.write_file("apps/mark.wsgi", MARK_APP)
    srv.start("WSGIDaemonProcess sec processes=1 threads=2\n"
              + srv.mount("/m", app, process_group="sec"))
    sock = _group_socket(srv)
    captured, r = capture_credentials(srv, sock, "/m/?captured")
    return srv, sock, captured, r


def _one_refusal_line(srv, start: int, what: str):
    """Exactly one RW0015 line was logged since `start`."""
    assert harness.wait_for(lambda: "RW0015" in srv.error_log()[start:], timeout=10), \
        (what, srv.error_log()[start:])
    lines = [l for l in srv.error_log()[start:].splitlines() if "RW0015" in l]
    assert len(lines) == 1, (what, lines)


def _refused(out):
    return out["frames"] == [[WELCOME, ""], [REJECT, "01"]] and out["eof"]


def _accepted(out):
    kinds = [k for k, _ in out["frames"]]
    return kinds[:3] == [WELCOME, ACCEPTED, HEAD] and kinds[-1] == END \
        and out["frames"][2][1][:4] == "00c8"   # status 200


@pytest.mark.embedded_only
def test_forged_credentials_are_refused(apache_factory):
    """A local process running as the httpd user (the only one that can connect) still cannot
    have the daemon run anything without this server's secret: a wrong secret, a wrong
    generation, another protocol version, a Request without Hello and garbage are each refused
    and the connection closed, with one RW0015 line each, and the application never runs. The
    same encoder with the real credentials (captured from an httpd child) is served: the
    refusals are not an artefact of the test's encoder."""
    srv, sock, (secret, gen, env), r = _captured_server(apache_factory)
    assert r is not None and r.status == 200, r   # the child retried on the real daemon
    assert ran(srv, "captured")

    out = talk_as(WWW, sock, hello(secret, gen) + request_frame(with_tag(env, "control")))
    assert _accepted(out), out
    assert ran(srv, "control")

    flipped = bytes([secret[0] ^ 1]) + secret[1:]
    attempts = {
        "wrong-secret": hello(flipped, gen),
        "zero-secret": hello(bytes(16), gen),
        "next-generation": hello(secret, gen + 1),
        "old-generation-number": hello(secret, gen - 1),
        "previous-version": hello(secret, gen, version=PROTOCOL_VERSION - 1),
        "next-version": hello(secret, gen, version=PROTOCOL_VERSION + 1),
        "no-hello": b"",
        "garbage": b"GET / HTTP/1.0\r\n\r\n",
    }
    for tag, head in attempts.items():
        start = len(srv.error_log())
        data = head + request_frame(with_tag(env, tag)) if tag != "garbage" else head
        out = talk_as(WWW, sock, data)
        if tag in ("no-hello", "garbage"):
            assert out["frames"] == [[WELCOME, ""]] and out["eof"], (tag, out)
        else:
            assert _refused(out), (tag, out)
        _one_refusal_line(srv, start, tag)
        assert not ran(srv, tag), f"{tag}: the application ran"
    # The server itself still serves.
    assert srv.get("/m/?after").status == 200 and ran(srv, "after")


@pytest.mark.embedded_only
def test_previous_generation_accepted_older_refused(apache_factory):
    """What the design promises across graceful restarts: the new daemons also accept the
    previous generation's credentials (its httpd children may still hold keep-alive
    connections), and nothing older. Real credentials captured in generation N are served
    after one graceful restart and refused after a second one."""
    srv, sock, (secret, gen, env), r = _captured_server(apache_factory)
    assert r is not None and r.status == 200, r

    srv.graceful(probe_path="/m/?probe1")
    assert _group_socket(srv) == sock, "the socket changed across the graceful restart"
    out = talk_as(WWW, sock, hello(secret, gen) + request_frame(with_tag(env, "previous")))
    assert _accepted(out), out
    assert ran(srv, "previous")

    srv.graceful(probe_path="/m/?probe2")
    start = len(srv.error_log())
    out = talk_as(WWW, sock, hello(secret, gen) + request_frame(with_tag(env, "stale")))
    assert _refused(out), out
    _one_refusal_line(srv, start, "stale")
    assert not ran(srv, "stale")
    assert srv.get("/m/?after").status == 200
