"""Thread-sensitive behaviour, run on every MPM in RWSGI_MPMS (event, worker, prefork)."""

import threading
from collections import defaultdict

import pytest


def test_threading_local_persists_per_thread(apache_mpm, mode):
    srv = apache_mpm
    srv.start(srv.mount("/t", srv.app("threadlocal.wsgi")))
    seen = defaultdict(list)
    for _ in range(40):
        r = srv.get("/t/")
        assert r.status == 200 and r.complete, r
        d = r.json()
        seen[(d["pid"], d["native"])].append(d["count"])
    # 40 sequential requests over at most 20 threads: some thread served several requests,
    # and a persistent thread state keeps its threading.local between them.
    assert max(max(v) for v in seen.values()) > 1, dict(seen)
    for key, counts in seen.items():
        assert counts == list(range(counts[0], counts[0] + len(counts))), (key, counts)


def test_multithread_flag(apache_mpm, mode):
    srv = apache_mpm
    srv.start(srv.mount("/t", srv.app("threadlocal.wsgi")))
    d = srv.get("/t/").json()
    if mode == "daemon":
        # mod_wsgi's daemon rules: threads != 1, and processes= given at all.
        assert d["multithread"] is True, d
        assert d["multiprocess"] is True, d
    else:
        assert d["multithread"] is (srv.mpm != "prefork"), d
        assert d["multiprocess"] is True, d
    assert d["run_once"] is False


def test_concurrent_requests_never_cross(apache_mpm, mode):
    srv = apache_mpm
    srv.start(srv.mount("/r", srv.app("response.wsgi")))
    # Concurrent *first* loads are covered by test_concurrent_first_requests_import_once.
    assert srv.get("/r/ok").status == 200
    errors = []
    lock = threading.Lock()

    def worker(n):
        for i in range(20):
            rid = f"{n}-{i}"
            r = srv.get(f"/r/ctype?id={rid}")
            problem = None
            if r.status != 200 or not r.complete:
                problem = f"bad response {r!r}"
            elif r.headers.get("Content-Type") != f"application/x-rwsgi-{rid}":
                problem = f"{rid}: Content-Type {r.headers.get('Content-Type')!r}"
            elif r.headers.get("X-Rwsgi-Id") != rid:
                problem = f"{rid}: X-Rwsgi-Id {r.headers.get('X-Rwsgi-Id')!r}"
            elif not r.body.startswith(f"id={rid} ".encode()):
                problem = f"{rid}: body {r.body!r}"
            if problem:
                with lock:
                    errors.append(problem)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not any(t.is_alive() for t in threads), "client threads hung"
    assert not errors, errors[:10]


def test_concurrent_first_requests_import_once(apache_factory, mode):
    """8 simultaneous first requests to a slow-to-import script on one threaded child: all
    get 200 and the script body runs once per process."""
    srv = apache_factory(mpm="event")
    srv.start(srv.mount("/l", srv.app("loadonce.wsgi")))
    barrier = threading.Barrier(8)
    results = []

    def one():
        barrier.wait(10)
        results.append(srv.get("/l"))

    threads = [threading.Thread(target=one) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    bad = [r for r in results if r.status != 200 or not r.body.startswith(b"loaded-once")]
    assert len(results) == 8 and not bad, bad[:3]
    pids = (srv.state / "imports").read_text().split()
    assert len(pids) == len(set(pids)), f"script imported more than once per process: {pids}"


def test_concurrent_slow_requests_overlap(apache_factory):
    """On a threaded MPM, one child serves slow requests in parallel (GIL released while
    sleeping/doing I/O): 5 requests of 1 s finish in well under 5 s."""
    srv = apache_factory(mpm="event")
    srv.start(srv.mount("/r", srv.app("response.wsgi")))
    srv.get("/r/ok")
    results = []

    def one():
        results.append(srv.get("/r/sleep?t=1"))

    import time
    t0 = time.monotonic()
    threads = [threading.Thread(target=one) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    elapsed = time.monotonic() - t0
    assert all(r.status == 200 and r.body == b"slept\n" for r in results), results
    assert elapsed < 3.5, f"requests were serialised: {elapsed:.1f}s"
