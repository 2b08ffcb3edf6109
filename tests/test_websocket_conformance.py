"""WebSocket conformance with a real client library: the cases of
tests/frameworks/ws_conformance.py (modelled on Autobahn|Testsuite sections 1, 2, 5, 6, 7 and
9, driven by `websockets` from the framework venv) against tests/apps/asgi_app.py served by
mod_rwsgi (embedded and daemon mode, ws:// and wss:// through mod_ssl) and by uvicorn, each
outcome compared with uvicorn's. The cases a library will not send (bad opcodes, RSV bits,
unmasked frames, invalid UTF-8, bad close codes) are raw-socket tests in test_asgi.py."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

import harness
import test_frameworks as fw
from test_asgi_frameworks import Uvicorn
from test_frameworks import venv  # noqa: F401  (the session fixture)

CLIENT = harness.TESTS_DIR / "frameworks" / "ws_conformance.py"


def _run_client(venv_: Path, base: str) -> dict:
    r = subprocess.run([str(venv_ / "bin" / "python"), str(CLIENT), base, "--insecure"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"the client failed against {base}:\n{r.stdout}\n{r.stderr}"
    return json.loads(r.stdout)


@pytest.fixture(scope="module")
def reference(venv):  # noqa: F811
    """The outcomes against uvicorn serving the same application (once per module)."""
    root = Path(tempfile.mkdtemp(prefix="rwsgi-uvicorn-ws-", dir="/tmp"))
    app_dir = root / "app"
    (app_dir / "state").mkdir(parents=True)
    for d in (root, app_dir, app_dir / "state"):
        d.chmod(0o777 if d.name == "state" else 0o755)
    text = (harness.APPS_SRC / "asgi_app.py").read_text()
    (app_dir / "asgi_app.py").write_text(text.replace("@STATE@", str(app_dir / "state"))
                                         .replace("@DATA@", str(app_dir)))
    (app_dir / "asgi_app.py").chmod(0o644)
    u = Uvicorn(venv, root, "asgi_app", target="asgi_app:application", probe="/pid")
    try:
        yield _run_client(venv, f"ws://127.0.0.1:{u.port}")
    finally:
        u.stop()
        shutil.rmtree(root, ignore_errors=True)


EXPECTED = {
    "2_pings": [[0, True], [1, True], [125, True]],
    "5_fragmented_text": "fragmented",
    "5_fragmented_binary": True,
    "6_utf8": True,
    "6_utf8_fragments": True,
    "9_small_in_order": True,
    "9_large": True,
    "7_close_normal": [1000, "done here"],
    "7_server_close": ["bye", 4001, "done"],
    "9_too_big": 1009,
    "subprotocol": "chat.v1",
    "deny": 403,
}


def test_websocket_conformance(apache_factory, mode, venv, reference):  # noqa: F811
    srv = apache_factory(modules=["ssl", "socache_shmcb"])
    script = srv.app("asgi_app.py")
    tls, tls_port = srv.tls_fragment()
    srv.start(tls + srv.mount("/api", script))
    for base in (f"ws://127.0.0.1:{srv.port}/api", f"wss://127.0.0.1:{tls_port}/api"):
        got = _run_client(venv, base)
        # Every size of every kind echoed, as the reference does.
        for key in ("1_text_sizes", "1_binary_sizes"):
            assert all(ok for _, ok in got[key]), (base, key, got[key])
        for key, want in EXPECTED.items():
            assert got[key] == want, (base, key, got[key])
        # Answer for answer what uvicorn answers (the timing aside).
        for key in set(got) | set(reference):
            if key != "9_seconds":
                assert got.get(key) == reference.get(key), (base, key, got.get(key),
                                                             reference.get(key))
        srv.allow_log(r"WebSocket|message larger")
