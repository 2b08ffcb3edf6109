"""Misbehaving WSGI applications (tests/apps/badapps.wsgi), one test per class of misbehaviour,
in embedded and daemon mode. The oracle for each: the client sees a 500 or an aborted
(truncated) response, never a clean end of a broken response; the error log has exactly ONE
line with an RW code at warning level or above for that request (and its traceback, if any);
the NEXT request on the same server is served normally; nothing crashes (the harness fails a
test on any crash, panic or `Fatal Python error` in the log).

Already covered elsewhere and not repeated here: bad headers that the app catches itself,
status out of range, exc_info before the headers, close() on success, the file_wrapper on a
BytesIO, client disconnect after one chunk (tests/test_response.py); concurrent requests never
crossing (tests/test_threads.py, tests/test_security.py).

One server per mode serves every single-request class (the requests run one after another, so
the error log written between a request and the next one belongs to it); tests that need their
own MPM or processes start their own server.
"""

from __future__ import annotations

import re
import socket

import pytest

import harness
from conftest import LOG_DIR, MODES, MPMS

APP = "badapps.wsgi"
# A line mod_rwsgi logged at warning level or above carries an RW code.
CODED = re.compile(r"\[rwsgi:(warn|error|crit|alert|emerg)\].*?\b(RW\d{4})\b")


# Threaded (event) and single-threaded (prefork) children; prefork matters for embedded mode.
SHARED_MPMS = [m for m in ("event", "prefork") if m in MPMS] or [MPMS[0]]


@pytest.fixture(scope="module", params=[(mo, mp) for mo in MODES for mp in SHARED_MPMS],
                ids=lambda p: f"{p[0]}-{p[1]}")
def shared(request):
    """One started server per mode and MPM, shared by the single-request tests of this
    module."""
    mode, mpm = request.param
    srv = harness.Apache(mpm=mpm, mode=mode, name=f"badapps-{mode}-{mpm}")
    srv.start(srv.mount("/b", srv.app(APP)))
    yield srv
    problems, saved = harness.close_servers([srv], False, LOG_DIR / f"test_badapps-{mode}-{mpm}")
    if problems:
        pytest.fail("\n".join(problems) + f"\nlogs saved to {saved}", pytrace=False)


@pytest.fixture
def srv(request, shared):
    request.node._rwsgi_servers = [shared]   # logs attached to a failure report (conftest)
    return shared


def coded_lines(text: str) -> list[tuple[str, str]]:
    return [(m.group(2), line) for line in text.splitlines() if (m := CODED.search(line))]


def check_bad(srv, path: str, expect: str, code: str, method: str = "GET", body=None):
    """Send one bad request and check the oracle; returns its response.

    expect: "500" (nothing of the response went out), "aborted" (a 200 head, then the
    connection closed short of a clean end) or "truncated" (a complete response cut at the
    application's own Content-Length) or "complete" (a clean 200: the error is only logged)."""
    start = len(srv.error_log())
    r = srv.request(method, path, body=body, timeout=30)
    assert not r.timed_out, f"{path}: the server hung: {r!r}"
    if expect == "500":
        assert r.status == 500 and r.complete, f"{path}: {r!r}"
    elif expect == "aborted":
        assert r.status == 200 and not r.complete, f"{path}: expected an aborted response: {r!r}"
    elif expect in ("truncated", "complete"):
        assert r.status == 200 and r.complete, f"{path}: {r!r}"
    else:
        raise AssertionError(expect)
    assert b"X-Injected" not in r.raw_head and "X-Bad" not in r.headers, r.raw_head
    # The line may come from a daemon process a moment after the client saw the end.
    assert harness.wait_for(lambda: coded_lines(srv.error_log()[start:]), timeout=10), \
        f"{path}: no RW-coded log line\n{srv.error_log()[start:]}"
    nxt = srv.get("/b/ok")
    assert nxt.status == 200 and nxt.complete and nxt.body.startswith(b"ok pid="), \
        f"the request after {path} was not served: {nxt!r}"
    found = coded_lines(srv.error_log()[start:])
    assert [c for c, _ in found] == [code], \
        f"{path}: expected exactly one {code} line, got:\n" + "\n".join(l for _, l in found)
    return r


# (route, expected outcome, RW code). RW0008: the app broke the WSGI protocol in a way only the
# server sees; RW0007: an exception (start_response raising on a bad status/header is one).
CLASSES = [
    # the body iterable
    ("str-item", "500", "RW0008"),
    ("none-item", "500", "RW0008"),
    ("bytearray-item", "500", "RW0008"),       # PEP 3333: bytes only (mod_wsgi agrees)
    ("memoryview-item", "500", "RW0008"),
    ("returns-none", "500", "RW0008"),
    ("returns-int", "500", "RW0008"),
    ("no-start-response", "500", "RW0008"),
    ("no-start-response-empty", "500", "RW0008"),
    # the status
    ("status-nondigit", "500", "RW0007"),
    ("status-no-reason", "500", "RW0007"),     # PEP 3333 requires the reason phrase
    ("status-not-str", "500", "RW0007"),
    ("status-crlf", "500", "RW0007"),
    # the headers
    ("hdr-nonlatin1", "500", "RW0007"),
    ("hdr-crlf-value", "500", "RW0007"),
    ("hdr-crlf-name", "500", "RW0007"),
    ("hdr-colon", "500", "RW0007"),
    ("hdr-space", "500", "RW0007"),
    ("hdr-name-not-str", "500", "RW0007"),
    ("hdr-value-not-str", "500", "RW0007"),
    ("hdr-not-list", "500", "RW0007"),
    ("hdr-item-not-tuple", "500", "RW0007"),
    ("hdr-huge?n=10000", "500", "RW0007"),            # 10,000 headers
    ("hdr-huge?n=2&size=600000", "500", "RW0007"),    # 1.2 MB of header values
    # exceptions and start_response misuse
    ("raise-before-start", "500", "RW0007"),
    ("raise-in-iter-before-first-byte?tag=ib", "500", "RW0007"),
    ("raise-in-iter-after-first-byte?tag=ia", "aborted", "RW0007"),
    ("raise-in-close?tag=ic", "complete", "RW0007"),  # logged; the body was produced
    ("start-response-twice", "500", "RW0007"),
    ("exc-info-after-headers", "aborted", "RW0007"),
    ("file-wrapper-non-file", "500", "RW0007"),
    ("exc-str-raises", "500", "RW0007"),
    ("exc-non-utf8", "500", "RW0007"),
    ("system-exit-after-start", "500", "RW0007"),
    # Content-Length lies
    ("cl-more?tag=cm", "aborted", "RW0008"),
    ("cl-less?tag=cx", "truncated", "RW0008"),
]


@pytest.mark.parametrize("route,expect,code", CLASSES, ids=[c[0].split("?")[0] for c in CLASSES])
def test_bad_app(srv, route, expect, code):
    r = check_bad(srv, f"/b/{route}", expect, code)
    if "tag=" in route:
        # close() is called whatever went wrong (PEP 3333)
        tag = route.split("tag=")[1]
        assert harness.wait_for_file(srv.state / f"close-{tag}", 10), f"close() not called: {route}"
        (srv.state / f"close-{tag}").unlink()
    if route.startswith("raise-in-iter-after") or route.startswith("exc-info-after"):
        assert r.body in (b"first-chunk;", b"first;"), r
    if route.startswith("cl-more"):
        assert r.headers.get("Content-Length") == "100" and r.body == b"short", r
    if route.startswith("cl-less"):
        assert r.body == b"hello", r
    if route.startswith("raise-in-close"):
        assert r.body == b"body-before-close", r


HOP_BY_HOP = [("Connection", "close"), ("Transfer-Encoding", "chunked"), ("Keep-Alive", "timeout=5"),
              ("Upgrade", "h2c"), ("TE", "trailers"), ("Trailer", "X-T"),
              ("Proxy-Authenticate", "Basic")]


@pytest.mark.parametrize("name,value", HOP_BY_HOP, ids=[h[0] for h in HOP_BY_HOP])
def test_hop_by_hop_header(srv, name, value):
    check_bad(srv, f"/b/hdr-hop?name={name}&value={value}", "500", "RW0007")


@pytest.mark.parametrize("route", ["sys-exit", "keyboard-interrupt"])
def test_sys_exit_and_keyboard_interrupt_do_not_end_the_process(srv, route):
    """mod_wsgi ignores a SystemExit raised by a request (and logs it). Here SystemExit and
    KeyboardInterrupt are logged with their traceback (RW0007) and answered with a 500; the
    process that ran the app keeps running."""
    check_bad(srv, f"/b/{route}?tag={route}", "500", "RW0007")
    pid = int((srv.state / f"ran-{route}").read_text().split()[0])
    assert harness.pid_alive(pid), f"the process {pid} that ran the app is gone"
    assert pid in srv.child_pids(), (pid, srv.child_pids())


def test_head_at_the_size_bound_is_sent(srv):
    """The bound behind hdr-huge: 1024 headers (what one daemon Head frame carries) still go
    out complete, in both modes."""
    r = srv.get("/b/hdr-huge?n=1023&size=20")   # + Content-Type
    assert r.status == 200 and r.complete and r.body == b"huge-head-body", r
    assert len([k for k, _ in r.headers if k.startswith("X-H")]) == 1023


def test_write_during_iteration_is_allowed(srv):
    """Not an error: write() from inside the iterable sends in order (as mod_wsgi does)."""
    start = len(srv.error_log())
    r = srv.get("/b/write-after-iteration-started")
    assert r.status == 200 and r.complete and r.body == b"first;written;last", r
    assert coded_lines(srv.error_log()[start:]) == []


def test_write_after_the_request_ended_raises(srv):
    """write() kept by a thread past the end of its request raises in that thread; nothing
    reaches any client and the server keeps serving."""
    r = srv.get("/b/write-after-end?tag=wae")
    assert r.status == 200 and r.complete and r.body == b"kept", r
    (srv.state / "go-wae").touch()   # (write_file would make the state dir 0755)
    late = harness.wait_for_record(srv.state / "late-wae", 25)
    assert late and late.startswith("raised:RuntimeError:"), late
    assert srv.get("/b/ok").status == 200


def test_reading_input_past_content_length(srv):
    """read(1 MiB) twice and readline() on a 10-byte body: the 10 bytes, then b'' - no hang,
    no error."""
    start = len(srv.error_log())
    r = srv.request("POST", "/b/read-past-length", body=b"0123456789", timeout=30)
    assert r.status == 200 and r.complete, r
    assert r.body == b"10:b'0123456789':b'':b''", r
    assert coded_lines(srv.error_log()[start:]) == []


def test_app_closing_stdout_and_stderr(srv):
    """sys.stdout/sys.stderr.close() does not break logging, for this request or later ones."""
    r = srv.get("/b/close-stdout?tag=cs")
    assert r.status == 200 and r.complete, r
    assert srv.wait_for_log(r"RWSGI-after-stdout-close cs")
    assert srv.wait_for_log(r"RWSGI-after-stderr-close cs")
    for _ in range(4):   # whichever process or thread serves it
        assert srv.get("/b/print?tag=pr").status == 200
    assert srv.wait_for_log(r"RWSGI-print pr", count=4)
    assert srv.wait_for_log(r"RWSGI-eprint pr", count=4)


# --------------------------------------------------------------------- a generator that never ends

def _endless_and_leave(srv, tag: str):
    s = socket.create_connection(("127.0.0.1", srv.port), timeout=20)
    try:
        s.sendall(f"GET /b/endless?tag={tag} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        got = b""
        while len(got) < 4096:
            data = s.recv(65536)
            assert data, "the server closed before sending any body"
            got += data
        assert got.startswith(b"HTTP/1.1 200"), got[:100]
    finally:
        s.close()


@pytest.mark.parametrize("mpm", harness.mpms("event", "prefork"))
def test_endless_generator_stops_when_the_client_leaves(apache_factory, mode, mpm):
    """The client reads a little of an endless response and leaves. The server must notice,
    stop iterating and call close(); repeated more times than the server has threads, so a
    thread left spinning would show as a hang."""
    srv = apache_factory(mpm=mpm)
    srv.start(srv.mount("/b", srv.app(APP)))
    assert srv.get("/b/ok").status == 200
    rounds = 12   # > ThreadsPerChild 10 / daemon threads 10 / prefork MaxRequestWorkers 5
    for i in range(rounds):
        tag = f"end{i}"
        _endless_and_leave(srv, tag)
        assert harness.wait_for_file(srv.state / f"close-{tag}", 30), \
            f"round {i}: close() never called after the client left"
        text = harness.wait_for_record(srv.state / f"endless-closed-{tag}", 10)
        assert text, f"round {i}: the generator's finally clause never ran"
        blocks = int(text)
        assert blocks < 6000, "the generator ran to its safety limit: nobody stopped it"
        assert not (srv.state / f"endless-ran-out-{tag}").exists()
    r = srv.get("/b/ok")
    assert r.status == 200 and r.complete, r
    # One RW0010 (client went away, info level) per round, nothing at warning level or above.
    assert srv.wait_for_log(r"RW0010: client closed the connection", count=rounds)
    assert len(re.findall(r"RW0010", srv.error_log())) == rounds
    assert coded_lines(srv.error_log()) == []
