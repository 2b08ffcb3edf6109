"""pytest fixtures for the mod_rwsgi integration tests.

Run (as root, Apache children drop to www-data):
  cd /work/main && cargo build --release && /usr/bin/python3 -m pytest -q tests

Environment:
  RWSGI_SO        path of libmod_rwsgi.so (default <repo>/target/release/libmod_rwsgi.so)
  RWSGI_PYTHON    the interpreter that module was built for (default /usr/bin/python3); the
                  session stops at once when the module links another Python X.Y
  RWSGI_MPMS      comma list of MPMs for thread-sensitive tests (default event,worker,prefork)
  RWSGI_MODES     comma list of modes (default embedded,daemon)
  RWSGI_LOG_DIR   where logs of failing tests are saved (default /tmp/rwsgi-test-logs)
  RWSGI_KEEP=1    keep every temporary ServerRoot
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402

ALL_MPMS = ["event", "worker", "prefork"]
MPMS = [m.strip() for m in os.environ.get("RWSGI_MPMS", ",".join(ALL_MPMS)).split(",") if m.strip()]
MODES = [m.strip() for m in os.environ.get("RWSGI_MODES", "embedded,daemon").split(",") if m.strip()]
DEFAULT_MPM = "event" if "event" in MPMS or not MPMS else MPMS[0]
LOG_DIR = Path(os.environ.get("RWSGI_LOG_DIR", "/tmp/rwsgi-test-logs"))


@pytest.fixture(params=MPMS)
def mpm(request):
    """MPM for thread-sensitive tests (event, worker and prefork by default)."""
    return request.param


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "embedded_only: the test is about embedded mode itself (or runs no WSGI app), so it is "
        "not repeated in daemon mode",
    )
    config.addinivalue_line(
        "markers",
        "daemon_only: the test is about a daemon process itself (its options, its death), so "
        "it is not repeated in embedded mode",
    )


def pytest_sessionstart(session):
    """A module built for another Python than RWSGI_PYTHON would fail most tests one by one;
    say it once instead."""
    if not harness.SO_PATH.is_file():
        return  # the tests that need the module say so (harness.check_so)
    built = harness.module_python()
    wanted = harness.app_python_version()
    if built != wanted:
        pytest.exit(f"{harness.SO_PATH} links Python {built[0]}.{built[1]} but RWSGI_PYTHON "
                    f"({harness.APP_PYTHON}) is {wanted[0]}.{wanted[1]}: build with "
                    f"PYO3_PYTHON={harness.APP_PYTHON} or set RWSGI_PYTHON to the module's "
                    "interpreter (scripts/test.sh does both from PYTHON=)", returncode=2)


def pytest_generate_tests(metafunc):
    """Every test that starts a server runs in each mode (embedded, daemon), unless marked
    embedded_only."""
    if "mode" in metafunc.fixturenames:
        modes = MODES
        if metafunc.definition.get_closest_marker("embedded_only"):
            modes = [m for m in MODES if m == "embedded"] or ["embedded"]
        elif metafunc.definition.get_closest_marker("daemon_only"):
            modes = [m for m in MODES if m == "daemon"] or ["daemon"]
        metafunc.parametrize("mode", modes)


def _safe(nodeid: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", nodeid)[-150:]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)
    servers = getattr(item, "_rwsgi_servers", None)
    if rep.failed and servers and rep.when == "call":
        dest = LOG_DIR / _safe(item.nodeid)
        for i, srv in enumerate(servers):
            d = srv.save_logs(dest / f"server{i}")
            tail = "\n".join(srv.error_log().splitlines()[-60:])
            rep.sections.append((f"rwsgi server{i} ({srv.mpm}) logs saved to {d}",
                                 f"ServerRoot {srv.root}\n--- last error-log lines:\n{tail}"))


@pytest.fixture
def apache_factory(request, mode):
    """Factory creating Apache objects; all are stopped and their error logs checked at
    teardown. Usage: srv = apache_factory(mpm="prefork", modules=["deflate"])."""
    servers: list[harness.Apache] = []
    request.node._rwsgi_servers = servers
    mode_ = mode

    def make(mpm: str | None = None, **kw) -> harness.Apache:
        kw.setdefault("mode", mode_)
        try:
            srv = harness.Apache(mpm=mpm or DEFAULT_MPM, name=request.node.name, **kw)
        except harness.ModuleMissing as e:
            pytest.fail(str(e), pytrace=False)
        servers.append(srv)
        return srv

    yield make

    failed = any(getattr(request.node, "rep_" + w, None) is not None
                 and getattr(request.node, "rep_" + w).failed for w in ("setup", "call"))
    problems, saved = harness.close_servers(servers, failed, LOG_DIR / _safe(request.node.nodeid))
    if problems:
        pytest.fail("\n".join(problems) + f"\nlogs saved to {saved}", pytrace=False)


@pytest.fixture
def apache(apache_factory):
    """One event-MPM server (not started)."""
    return apache_factory()


@pytest.fixture
def apache_mpm(apache_factory, mpm):
    """One server on the parametrized MPM (not started)."""
    return apache_factory(mpm=mpm)
