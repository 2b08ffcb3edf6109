"""Faults and restarts against a real Apache (RELIABILITY.md, "Faults, restarts and soak"):
a daemon SIGKILLed under load (only in-flight requests fail; time to recovery is measured and
printed as a FIGURE line), an application that segfaults (daemon: only its daemon dies;
embedded: the httpd child dies and is replaced), clients that disconnect in the middle of a
64 MiB response or upload, a client reading 1 byte/ms while other requests flow, ten graceful
restarts under load, and `stop` leaving no process, socket or IPC object behind.

Every request has a socket timeout, every loop a bound in count and time, every thread is
joined with a deadline. Nothing here asserts a duration: times are printed (run pytest with -s
to see the FIGURE lines) and recorded in RELIABILITY.md.
"""

from __future__ import annotations

import os
import re
import socket
import struct
import threading
import time

import pytest

import harness
from test_daemon import (KeepAliveClient, daemon_pids, default_comm, get_ok, join_all, log_tail,
                         ok, run_clients)

APP = "faults.wsgi"
GROUP = "fault"
MIB = 1 << 20


def figure(name: str, **values):
    """A measured figure for RELIABILITY.md (visible with pytest -s)."""
    print(f"\nFIGURE {name}: " + " ".join(f"{k}={v}" for k, v in values.items()), flush=True)


def serve(apache_factory, mode: str, mpm: str | None = None,
          daemon_opts: str = "processes=2 threads=5", extra: str = "") -> harness.Apache:
    """A started server mounting faults.wsgi at /f: in daemon mode in its own group `fault`."""
    srv = apache_factory(mode=mode, mpm=mpm)
    app = srv.app(APP)
    if mode == "daemon":
        conf = (f"WSGIDaemonProcess {GROUP} {daemon_opts}\n"
                + srv.mount("/f", app, process_group=GROUP))
    else:
        conf = srv.mount("/f", app)
    srv.start(conf + extra)
    get_ok(srv, "/f/pid")
    return srv


def group_pids(srv, n: int, exclude=frozenset(), timeout: float = 10.0):
    """The `fault` group's daemon pids once there are n of them (none in `exclude`)."""
    name = default_comm(GROUP)

    def whole():
        p = daemon_pids(srv, name)
        return p if len(p) == n and not (p & set(exclude)) else None

    return harness.wait_for(whole, timeout=timeout, interval=0.01)


def rst_close(sock: socket.socket):
    """Close with SO_LINGER 0: the peer sees a reset at once, as when a client is killed."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def raw_connect(srv, head: str, rcvbuf: int | None = None, timeout: float = 20.0):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.settimeout(timeout)
    s.connect(("127.0.0.1", srv.port))
    s.sendall(head.encode("latin-1"))
    return s


def get_head(srv, path: str) -> str:
    return f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{srv.port}\r\nConnection: close\r\n\r\n"


def all_ok(srv, path: str, n: int, timeout: float = 15.0) -> list:
    """n sequential requests; the ones that failed."""
    bad = []
    for _ in range(n):
        r = srv.get(path, timeout=timeout)
        if not ok(r):
            bad.append(r)
    return bad


# --------------------------------------------------------------------------- SIGKILL + recovery

@pytest.mark.embedded_only  # daemon-only: runs once, its server is in daemon mode
def test_sigkill_daemon_under_load_only_inflight_fail(apache_factory):
    """Complements test_daemon.py::test_sigkill_daemon_under_load_is_replaced: counts the
    requests in flight at the kill, checks that no request started after the kill fails and
    none hangs, and measures the time until the group is whole and serving again."""
    srv = serve(apache_factory, "daemon")
    before = group_pids(srv, 2)
    assert before, log_tail(srv)
    victim = min(before)
    lock = threading.Lock()
    inflight = [0]
    results: list[tuple[float, float, harness.Response]] = []
    kill_at = [None]
    n_threads, per_thread = 6, 60

    def client(i):
        for _ in range(per_thread):
            with lock:
                inflight[0] += 1
            t0 = time.monotonic()
            r = srv.get("/f/sleep?s=0.02", timeout=15)
            t1 = time.monotonic()
            with lock:
                inflight[0] -= 1
                results.append((t0, t1, r))

    threads = run_clients(n_threads, client)
    harness.wait_for(lambda: len(results) >= 60, timeout=20)
    with lock:
        os.kill(victim, 9)
        kill_at[0] = time.monotonic()
        in_flight_at_kill = inflight[0]
    after = group_pids(srv, 2, exclude={victim}, timeout=15)
    whole_at = time.monotonic()
    assert after, f"the group was not whole again within 15 s\n{log_tail(srv)}"
    join_all(threads, timeout=60)
    k = kill_at[0]
    failed = [r for _, _, r in results if not ok(r)]
    failed_after = [r for t0, _, r in results if t0 > k and not ok(r)]
    hung = [r for _, _, r in results if r.timed_out]
    assert len(results) == n_threads * per_thread
    assert not hung, hung[:3]
    assert len(failed) <= in_flight_at_kill, \
        f"{len(failed)} failed, {in_flight_at_kill} in flight: {failed[:3]}\n{log_tail(srv)}"
    assert not failed_after, f"requests started after the kill failed: {failed_after[:3]}"
    for r in failed:  # a 502 or an aborted response, never a wrong success
        assert r.status in (0, 502) or not r.complete, r
    assert srv.wait_for_log(
        rf"RW0016: daemon process {victim} of group '{GROUP}' exited \(exit status or signal 9\)",
        timeout=5), log_tail(srv)
    bad = all_ok(srv, "/f/pid", 50)
    assert not bad, bad[:3]
    # How the load spreads after recovery (information only): the httpd children keep their
    # daemon connections, which all lead to the survivor now, and a daemon accepts beyond its
    # thread count, so the replacement may get none of these.
    conc: list[harness.Response] = []
    join_all(run_clients(10, lambda i: conc.append(srv.get("/f/sleep?s=0.5", timeout=15))))
    assert len(conc) == 10 and all(ok(r) for r in conc), conc
    new = after - before
    by_new = sum(1 for r in conc if int(r.body) in new)
    # The replacement serves: with the survivor gone too, every request goes to it (or to the
    # survivor's own replacement), and none fails.
    survivor = (before - {victim}).pop()
    os.kill(survivor, 9)
    served = set()
    for _ in range(20):
        r = srv.get("/f/pid", timeout=15)
        assert ok(r), f"{r}\n{log_tail(srv)}"
        served.add(int(r.body))
    assert not served & before, (served, before)
    assert harness.pid_alive(next(iter(new)))
    figure("sigkill-recovery", in_flight=in_flight_at_kill, failed=len(failed),
           requests=len(results),
           last_failure_s=f"{max((t1 - k for _, t1, r in results if not ok(r)), default=0):.3f}",
           group_whole_s=f"{whole_at - k:.3f}",
           concurrent_after_recovery_served_by_replacement=f"{by_new}/10")


# --------------------------------------------------------------------------- segfault

SEGV_LOG = [r"Segmentation fault", r"exit signal", r"Fatal Python error: Segmentation fault"]


@pytest.mark.embedded_only  # daemon-only: runs once, its server is in daemon mode
def test_segfaulting_app_daemon_mode_kills_only_its_daemon(apache_factory):
    srv = apache_factory(mode="daemon")
    for p in SEGV_LOG:
        srv.allow_log(p)
    app = srv.app(APP)
    srv.start(f"WSGIDaemonProcess {GROUP} processes=2 threads=2\n"
              "WSGIDaemonProcess other processes=1 threads=2\n"
              + srv.mount("/f", app, process_group=GROUP)
              + srv.mount("/o", app, process_group="other"))
    get_ok(srv, "/f/pid")
    other = int(get_ok(srv, "/o/pid").body)
    before = group_pids(srv, 2)
    assert before
    http_children = {p for p in srv.child_pids() if p not in daemon_pids(srv)}
    assert http_children
    r = srv.get("/f/segv", timeout=20)
    assert r.status == 502, f"{r}\n{log_tail(srv)}"
    assert srv.wait_for_log(
        rf"RW0016: daemon process \d+ of group '{GROUP}' exited \(exit status or signal 11\)",
        timeout=10), log_tail(srv)
    crashed = int(re.search(rf"RW0016: daemon process (\d+) of group '{GROUP}'",
                            srv.error_log()).group(1))
    assert crashed in before
    after = group_pids(srv, 2, exclude={crashed}, timeout=15)
    assert after, f"the crashed daemon was not replaced\n{log_tail(srv)}"
    assert after & before == before - {crashed}, (before, after)
    # The httpd children and the other group's daemon were not touched.
    assert all(harness.pid_alive(p) for p in http_children), http_children
    assert int(get_ok(srv, "/o/pid").body) == other
    assert not all_ok(srv, "/f/pid", 20)
    # Apache reports the daemon's signal too (AH00052), but no other process died.
    died = set(map(int, re.findall(r"AH00052: child pid (\d+) exit signal", srv.error_log())))
    assert died == {crashed}, died


@pytest.mark.embedded_only
@pytest.mark.parametrize("mpm", harness.mpms("event", "prefork"))
def test_segfaulting_app_embedded_mode_child_dies_server_serves(apache_factory, mode, mpm):
    """Embedded mode runs the application inside the httpd child, so a segfault kills that
    child (and any request it was serving): the client sees the connection dropped, Apache
    logs AH00052 and starts a replacement, and the server keeps serving."""
    srv = apache_factory(mode="embedded", mpm=mpm)
    for p in SEGV_LOG:
        srv.allow_log(p)
    srv.start(srv.mount("/f", srv.app(APP)))
    get_ok(srv, "/f/pid")
    r = srv.get("/f/segv", timeout=20)
    assert r.status == 0 and not r.complete and not r.timed_out, r
    assert srv.wait_for_log(r"AH00052: child pid \d+ exit signal Segmentation fault", timeout=10)
    dead = int(re.search(r"AH00052: child pid (\d+) exit signal", srv.error_log()).group(1))
    assert not harness.pid_alive(dead)
    bad = all_ok(srv, "/f/pid", 20)
    assert not bad, f"{bad[:3]}\n{log_tail(srv)}"
    assert harness.wait_for(lambda: srv.child_pids(), timeout=10)


# --------------------------------------------------------------------------- hung application

@pytest.mark.embedded_only  # daemon-only: runs once, its server is in daemon mode
def test_hung_app_is_recycled_by_request_timeout(apache_factory):
    """An application stuck in a time.sleep loop (see also test_daemon.py::
    test_request_timeout_restarts_stuck_process, a single long sleep): request-timeout ends its
    process, the hung request gets an error instead of hanging, and other requests, sent while
    it hangs, are all served."""
    srv = serve(apache_factory, "daemon",
                daemon_opts="processes=1 threads=4 request-timeout=2 graceful-timeout=1 "
                            "shutdown-timeout=1")
    hung: list[harness.Response] = []
    t = run_clients(1, lambda i: hung.append(srv.get("/f/hang?tag=h", timeout=60)))
    marker = srv.state / "hang-h"
    text = harness.wait_for_record(marker, timeout=10)
    assert text, log_tail(srv)
    hung_pid = int(text.split()[0])
    others = []
    for _ in range(300):  # until the hung request ends (bounded: 300 x 0.1 s + requests)
        if hung:
            break
        others.append(srv.get("/f/pid", timeout=15))
        time.sleep(0.1)
    join_all(t, timeout=60)
    h = hung[0]
    assert not ok(h) and not h.timed_out, h
    assert srv.wait_for_log(r"request-timeout", timeout=5), log_tail(srv)
    assert harness.wait_for(lambda: not harness.pid_alive(hung_pid), timeout=10)
    bad = [r for r in others if not ok(r)]
    assert others and not bad, f"{len(bad)} of {len(others)} failed: {bad[:3]}"
    r = get_ok(srv, "/f/pid")
    assert int(r.body) != hung_pid
    figure("hung-app-request-timeout-2s", hung_request_status=h.status,
           hung_request_ended_after_s=f"{h.elapsed:.2f}", other_requests_served=len(others),
           failed=len(bad))


# --------------------------------------------------------------------------- client disconnects

def test_client_disconnect_mid_64mib_response_closes_app_iterable(apache_factory, mode):
    # daemon: one process with one thread, so a worker not freed would block the next request
    srv = serve(apache_factory, mode, daemon_opts="processes=1 threads=1")
    size = 64 * MIB
    for i in range(3):
        tag = f"d{i}"
        s = raw_connect(srv, get_head(srv, f"/f/stream?size={size}&tag={tag}"))
        got = 0
        try:
            while got < MIB:
                data = s.recv(65536)
                assert data, f"connection closed after {got} bytes\n{log_tail(srv)}"
                got += len(data)
        finally:
            rst_close(s)
        rec = srv.state / f"close-{tag}"
        # The whole line: the file exists from the app's open() on, before its write.
        text = harness.wait_for_record(rec, timeout=30)
        assert text, \
            f"close() of the iterable was not called after the client left\n{log_tail(srv)}"
        m = re.match(r"closed after (\d+) pieces", text)
        assert m and int(m.group(1)) < size // 65536, text
        bad = all_ok(srv, "/f/pid", 5)
        assert not bad, f"after disconnect {i}: {bad[:3]}\n{log_tail(srv)}"
    figure(f"disconnect-mid-response-{mode}",
           pieces_sent_of_1024=[int(re.search(r"\d+", (srv.state / f"close-d{i}").read_text())
                                    .group(0)) for i in range(3)])


def test_client_disconnect_mid_64mib_upload_raises_in_app(apache_factory, mode):
    srv = serve(apache_factory, mode, daemon_opts="processes=1 threads=1")
    size = 64 * MIB
    for i in range(3):
        tag = f"u{i}"
        s = raw_connect(srv, f"POST /f/upload?tag={tag} HTTP/1.1\r\nHost: 127.0.0.1:{srv.port}\r\n"
                             f"Content-Length: {size}\r\nContent-Type: application/octet-stream\r\n"
                             "Connection: close\r\n\r\n")
        try:
            piece = b"u" * 65536
            for _ in range(16):  # 1 MiB of the promised 64
                s.sendall(piece)
            # Reset only once the application runs (a reset before Apache read the request
            # would discard it unseen).
            assert harness.wait_for_file(srv.state / f"started-{tag}", timeout=20), \
                log_tail(srv)
            time.sleep(0.2)  # let it read what was sent
        finally:
            rst_close(s)
        rec = srv.state / f"upload-{tag}"
        line = (harness.wait_for_record(rec, timeout=30) or "").strip()
        assert line, f"the application never saw the upload end\n{log_tail(srv)}"
        m = re.match(r"error (\w+) oserror=(\w+) (\d+)$", line)
        assert m, f"the application did not get an error: {line!r}"
        assert m.group(2) == "True", f"not an OSError: {line!r}"
        assert int(m.group(3)) < size
        bad = all_ok(srv, "/f/pid", 5)
        assert not bad, f"after disconnect {i}: {bad[:3]}\n{log_tail(srv)}"
    figure(f"disconnect-mid-upload-{mode}",
           outcomes=[(srv.state / f"upload-u{i}").read_text().strip().replace(" ", "_")
                     for i in range(3)])


# --------------------------------------------------------------------------- slow client

@pytest.mark.parametrize("mpm", harness.mpms("event", "prefork"))
def test_slow_reader_does_not_block_other_requests(apache_factory, mode, mpm):
    srv = serve(apache_factory, mode, mpm=mpm)
    size = 32 * MIB  # more than loopback socket buffers hold
    slow = raw_connect(srv, get_head(srv, f"/f/big?size={size}"), rcvbuf=4096)
    done: list[tuple[float, harness.Response]] = []
    n_others = 20

    def others(i):
        for _ in range(n_others // 2):
            r = srv.get("/f/pid", timeout=15)
            done.append((time.monotonic(), r))

    got = 0
    threads = []
    try:
        assert slow.recv(1), "the slow request got no byte"
        got = 1
        t0 = time.monotonic()
        threads = run_clients(2, others)
        # 1 byte per ms: at least 200 ms, then until the others are done (bounded: 30 s)
        for i in range(30000):
            b = slow.recv(1)
            assert b, f"the slow response ended after {got} bytes"
            got += 1
            time.sleep(0.001)
            if time.monotonic() - t0 >= 0.2 and len(done) >= n_others:
                break
        slow_open_until = time.monotonic()
        slow_ms = (slow_open_until - t0) * 1000
    finally:
        rst_close(slow)
    join_all(threads, timeout=60)
    assert got < size
    assert len(done) == n_others
    bad = [r for _, r in done if not ok(r)]
    assert not bad, bad[:3]
    assert all(t <= slow_open_until for t, _ in done)
    figure(f"slow-reader-{mode}-{mpm}", slow_bytes_read=got, slow_open_ms=f"{slow_ms:.0f}",
           others_completed_meanwhile=len(done))
    assert not all_ok(srv, "/f/pid", 5)


# --------------------------------------------------------------------------- graceful x10

@pytest.mark.parametrize("mpm", harness.mpms("event", "worker", "prefork"))
def test_ten_graceful_restarts_under_load_fail_no_request(apache_factory, mode, mpm):
    """Two clients on fresh connections and two on kept-alive ones (a kept connection that
    the server closed before any byte of the answer is retried: that is HTTP keep-alive's
    documented race, counted separately) while ten `apache2 -k graceful` run."""
    srv = serve(apache_factory, mode, mpm=mpm)
    stop = threading.Event()
    lock = threading.Lock()
    good, bad, retries = [0], [], [0]
    end = time.monotonic() + 300  # bound even if the main thread dies

    def record(r):
        with lock:
            if isinstance(r, harness.Response) and ok(r):
                good[0] += 1
            else:
                bad.append(repr(r)[:200])

    def close_client(i):
        while not stop.is_set() and time.monotonic() < end:
            try:
                record(srv.get("/f/pid", timeout=15))
            except OSError as e:  # a refused or reset connection is a failure too
                record(e)

    def keepalive_client(i):
        c = KeepAliveClient(srv.port, timeout=15)
        try:
            while not stop.is_set() and time.monotonic() < end:
                try:
                    record(c.get("/f/pid"))
                except OSError as e:
                    record(e)
                    c.close()
        finally:
            with lock:
                retries[0] += c.retries
            c.close()

    threads = run_clients(2, close_client) + run_clients(2, keepalive_client)
    try:
        time.sleep(0.5)
        for _ in range(10):
            srv.graceful(probe_path="/f/pid")
            time.sleep(0.3)
    finally:
        stop.set()
        join_all(threads, timeout=60)
    figure(f"graceful-x10-{mode}-{mpm}", requests=good[0] + len(bad), failed=len(bad),
           keepalive_retries=retries[0])
    assert good[0] >= 50, (good, bad[:3])
    assert not bad, f"{len(bad)} failed of {good[0] + len(bad)}: {bad[:3]}\n{log_tail(srv)}"


# --------------------------------------------------------------------------- stop leaves nothing

def descendants(pid: int) -> dict[int, int]:
    """pid -> starttime of a process and all its descendants (walked through /proc PPIDs)."""
    out = {}
    st = harness._proc_stat(pid)
    if st is None:
        return out
    out[pid] = st[2]
    todo = [pid]
    for _ in range(10000):
        if not todo:
            break
        p = todo.pop()
        for c, start in harness.children_of(p):
            if c not in out:
                out[c] = start
                todo.append(c)
    return out


def sysv_ipc() -> set[tuple[str, str]]:
    """(kind, id) of every System V shared memory segment, semaphore set and message queue."""
    out = set()
    for kind in ("shm", "sem", "msg"):
        try:
            lines = open(f"/proc/sysvipc/{kind}").read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            if len(f) > 1:
                out.add((kind, f[1]))
    return out


def dev_shm() -> set[str]:
    try:
        return set(os.listdir("/dev/shm"))
    except OSError:
        return set()


@pytest.mark.parametrize("mpm", harness.mpms("event", "prefork"))
def test_stop_leaves_no_process_socket_or_ipc(apache_factory, mode, mpm):
    """Every process of the server (parent, httpd children, daemons, anything they started)
    is gone after stop, as are the daemon sockets, the pid file and any System V IPC object or
    /dev/shm entry created while it ran. Other servers may run on this machine at the same
    time, so an IPC object counts only if it appeared after start and is still there after
    stop; the harness config uses `Mutex file:` (no semaphores are expected at all)."""
    ipc0, shm0 = sysv_ipc(), dev_shm()
    srv = serve(apache_factory, mode, mpm=mpm)
    assert not all_ok(srv, "/f/pid", 10)
    if mode == "daemon":
        assert group_pids(srv, 2)
    ipc1, shm1 = sysv_ipc(), dev_shm()
    procs = descendants(srv.parent_pid)
    expected = 1 + (1 if mpm == "event" else 2) + (4 if mode == "daemon" else 0)
    assert len(procs) >= expected, procs
    socks = sorted((srv.root / "run").glob("*.sock"))
    assert bool(socks) == (mode == "daemon"), socks
    srv.stop()
    assert not srv.problems, srv.problems
    left = [p for p, st in procs.items() if harness._same_process_alive(p, st)]
    assert not left, left
    run_left = sorted(p.name for p in (srv.root / "run").iterdir())
    assert not [n for n in run_left if n.endswith(".sock") or n == "httpd.pid"], run_left
    ipc_left = (ipc1 - ipc0) & sysv_ipc()
    shm_left = (shm1 - shm0) & dev_shm()
    assert not ipc_left, ipc_left
    assert not shm_left, shm_left
    figure(f"stop-{mode}-{mpm}", processes=len(procs), sockets=len(socks),
           run_dir_after=run_left, ipc_new_during_run=sorted(ipc1 - ipc0),
           dev_shm_new_during_run=sorted(shm1 - shm0))


# --------------------------------------------------------------------------- panic containment

PANIC_LOG = [r"RW0999", r"panicked", r"test panic at"]
PANIC_GROUP = harness.DAEMON_GROUP
PANIC_WHERE = {
    "start": "while starting a daemon process",
    "dispatcher": "in the dispatcher thread",
    "worker": "in a worker's request",
    "monitor": "in the monitor thread",
}


@pytest.mark.embedded_only  # daemon-only: runs once per point, its server is in daemon mode
@pytest.mark.parametrize("point", sorted(PANIC_WHERE))
def test_panic_in_daemon_is_contained(apache_factory, point):
    """A panic at each daemon entry (the test-only hook RWSGI_TEST_PANIC=POINT:MARKER makes
    exactly one, src/daemon/guard.rs): one RW0999 line naming it, the httpd parent untouched,
    never a second httpd parent, and the group serves again from another process (a panic
    after start-up recycles the process gracefully; one at start-up ends that process)."""
    srv = apache_factory(mode="daemon", daemon_options="processes=1 threads=2")
    for p in PANIC_LOG:
        srv.allow_log(p)
    marker = srv.state / f"panic-{point}"
    srv.extra_env["RWSGI_TEST_PANIC"] = f"{point}:{marker}"
    srv.start(srv.mount("/f", srv.app(APP)))
    parent = srv.parent_pid
    first = srv.get("/f/pid", timeout=20)
    line = (rf"\[pid (\d+):tid \d+\] RW0999: daemon group '{PANIC_GROUP}': panic "
            rf"{PANIC_WHERE[point]}: test panic at '{point}'")
    found = harness.wait_for(lambda: re.search(line, srv.error_log()), timeout=15)
    assert found, log_tail(srv)
    panicked = int(found.group(1))
    assert marker.exists()
    if point == "worker":
        # The request in whose worker it panicked: its connection closed after Accepted.
        assert first.status == 502, first
    if point != "start":
        assert srv.wait_for_log(rf"\[pid {panicked}:tid \d+\] daemon process of group "
                                rf"'{PANIC_GROUP}' stopping: a panic in", timeout=10), log_tail(srv)
    # Service continues, from a process that is not the panicked one.
    assert harness.wait_for(lambda: ok(srv.get("/f/pid", timeout=20)), timeout=30), log_tail(srv)
    pids = set()
    for _ in range(10):
        r = srv.get("/f/pid", timeout=20)
        assert ok(r), f"{r}\n{log_tail(srv)}"
        pids.add(int(r.body))
    assert panicked not in pids, (panicked, pids)
    assert harness.wait_for(lambda: not harness.pid_alive(panicked), timeout=15)
    assert ok(srv.get("/index.html"))
    # One RW0999 line, and nothing of httpd's own code ran in the panicked process: the
    # parent is the one that started, and no second one wrote the pid file.
    assert len(re.findall(r"RW0999", srv.error_log())) == 1, log_tail(srv)
    assert srv.parent_pid == parent and harness.pid_alive(parent)
    assert int(srv.pid_file.read_text().split()[0]) == parent
