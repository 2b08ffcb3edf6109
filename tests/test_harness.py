"""Self-tests of the harness against plain Apache (no mod_rwsgi loaded)."""

import pytest

import harness

# About embedded mode itself or plain Apache: not repeated in daemon mode.
pytestmark = pytest.mark.embedded_only


@pytest.mark.parametrize("mpm", harness.mpms("event", "prefork"))
def test_plain_apache_start_graceful_stop(apache_factory, mpm):
    srv = apache_factory(mpm=mpm, load_module=False)
    srv.start()
    r = srv.get("/index.html")
    assert r.status == 200 and r.complete and r.body == b"rwsgi test root\n", r
    parent = srv.parent_pid
    assert harness.pid_alive(parent)
    assert srv.child_pids(), "no children found via /proc"
    for _ in range(2):
        srv.graceful()
        assert srv.get("/index.html").status == 200
    kids = srv.child_pids()
    srv.stop()
    assert not harness.pid_alive(parent)
    assert not any(harness.pid_alive(k) for k in kids)
    assert "caught SIGTERM, shutting down" in srv.error_log()


def test_plain_apache_configtest_and_http_client(apache_factory):
    srv = apache_factory(load_module=False)
    rc, out = srv.configtest("ThisIsNotADirective 1\n")
    assert rc != 0 and "ThisIsNotADirective" in out
    rc, out = srv.configtest("")
    assert rc == 0, out
    srv.start()
    r = srv.get("/missing")
    assert r.status == 404 and r.complete
    r = srv.request("HEAD", "/index.html")
    assert r.status == 200 and r.body == b"" and r.framing == "none"
    r = srv.get("/index.html", http10=True)
    assert r.status == 200 and r.version == "HTTP/1.1" and r.body.startswith(b"rwsgi")


def test_log_violation_detection(apache_factory):
    srv = apache_factory(load_module=False)
    srv.log_path.write_text("[Mon Jan 01 00:00:00 2024] [core:crit] [pid 1] something\n"
                            "[x] [rwsgi:error] thread 'x' panicked at src/lib.rs\n")
    assert len(srv.log_violations()) == 2
    srv.allow_log(r"core:crit")
    assert len(srv.log_violations()) == 1
    srv.log_path.write_text("")  # the fixture's own teardown check must pass
