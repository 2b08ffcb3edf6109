"""docker/rwsgi-image.sh (the only build/install steps of docker/Dockerfile) run against a second,
non-Debian Apache: a relocated httpd:2.4-style tree with its own apxs (tests/layouts.py). The
module is built against that tree's headers (through its apxs), installed with the example app
and conf/extra/rwsgi.conf, and the tree's httpd serves the app in daemon mode (the image's
default) and embedded mode (-DRWSGI_EMBEDDED).

The build goes to its own target directory (RWSGI_IMAGE_TARGET, default target/image-test) so the
test never rebuilds the module the other tests load.
"""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

import pytest

import harness
import layouts

SCRIPT = harness.REPO / "docker" / "rwsgi-image.sh"
TARGET_DIR = Path(os.environ.get("RWSGI_IMAGE_TARGET", str(harness.REPO / "target" / "image-test")))
BUILD_TIMEOUT = 3600


def _seed_target_dir():
    """Start the image build from a copy of the main build's release directory when there is
    one: the dependencies (pyo3, bindgen, ...) are the same, so only mod_rwsgi itself is
    compiled again for the tree's headers (minutes saved on 2 cores). A copy, not links, so
    the module the other tests load is never touched."""
    main = harness.REPO / "target" / "release"
    if not (TARGET_DIR / "release").exists() and main.is_dir():
        TARGET_DIR.mkdir(parents=True, exist_ok=True)
        shutil.copytree(main, TARGET_DIR / "release", symlinks=True)


def _script(tree: layouts.RelocatedTree, step: str, destdir: Path | None = None):
    env = {
        "APXS": str(tree.apxs),
        "CARGO_TARGET_DIR": str(TARGET_DIR),
        "RWSGI_APP_DIR": str(tree.root / "srv" / "app"),
    }
    if destdir is not None:
        env["DESTDIR"] = str(destdir)
    rc, out = layouts.run(["sh", SCRIPT, step], env=env, timeout=BUILD_TIMEOUT)
    assert rc == 0, f"rwsgi-image.sh {step} failed:\n{out[-4000:]}"
    return out


def _copy_staged(staging: Path, tree: layouts.RelocatedTree) -> list[str]:
    """What the Dockerfile's `COPY --from=builder /staging/ /` does, for staged files that all
    lie inside the tree (checked). Returns the copied paths."""
    copied = []
    for dirpath, _, filenames in os.walk(staging):
        for name in filenames:
            src = Path(dirpath) / name
            dest = Path("/") / src.relative_to(staging)
            assert dest.is_relative_to(tree.root), dest
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest)
            copied.append(str(dest.relative_to(tree.root)))
    return sorted(copied)


@pytest.fixture(scope="module")
def tree():
    """The relocated tree set up the way docker/Dockerfile does it: `build`, `install` staged
    under DESTDIR, the staged files copied onto the tree; then `install` once more directly
    (the step must be repeatable)."""
    t = layouts.RelocatedTree("image")
    staging = t.root.with_name(t.root.name + "-staging")
    try:
        _seed_target_dir()
        _script(t, "build")
        _script(t, "install", destdir=staging)
        # Staging leaves the tree itself alone.
        assert not (t.root / "modules" / "mod_rwsgi.so").exists()
        assert "rwsgi.conf" not in t.conf_path.read_text()
        t.staged = _copy_staged(staging, t)
        _script(t, "install")
        yield t
    finally:
        t.stop()
        shutil.rmtree(staging, ignore_errors=True)
        if not os.environ.get("RWSGI_KEEP"):
            t.cleanup()


def test_build_used_the_trees_apxs_and_headers(tree):
    # bindgen reports every header it read: they must come from the tree's include/, i.e. from
    # `apxs -q INCLUDEDIR` of that Apache, never from Debian's /usr/include/apache2.
    outputs = sorted(TARGET_DIR.glob("release/build/mod_rwsgi-*/output"),
                     key=lambda p: p.stat().st_mtime)
    assert outputs, f"no build-script output under {TARGET_DIR}"
    headers = [line.split("=", 1)[1] for line in outputs[-1].read_text().splitlines()
               if line.startswith("cargo:rerun-if-changed=") and line.endswith(".h")]
    assert f"{tree.root}/include/httpd.h" in headers
    assert not [h for h in headers if h.startswith("/usr/include/apache2/")], headers
    built = TARGET_DIR / "release" / "libmod_rwsgi.so"
    installed = tree.root / "modules" / "mod_rwsgi.so"
    assert installed.read_bytes() == built.read_bytes()


def test_install_layout(tree):
    r = tree.root
    assert tree.staged == ["conf/extra/rwsgi.conf", "conf/httpd.conf", "modules/mod_rwsgi.so",
                           "srv/app/app.wsgi"]
    so = r / "modules" / "mod_rwsgi.so"
    conf = r / "conf" / "extra" / "rwsgi.conf"
    app = r / "srv" / "app" / "app.wsgi"
    for path in (so, conf, app):
        assert path.is_file(), path
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path
    text = conf.read_text()
    assert f"LoadModule rwsgi_module {r}/modules/mod_rwsgi.so" in text
    assert f"WSGIScriptAlias / {r}/srv/app/app.wsgi" in text
    assert "@" not in text.replace("%{GROUP}", "").replace("%{GLOBAL}", "")
    httpd_conf = (r / "conf" / "httpd.conf").read_text().splitlines()
    # Staged, then installed again: included once.
    assert httpd_conf.count(f"Include {r}/conf/extra/rwsgi.conf") == 1
    # Not a Debian layout: no mods-available/ appears.
    assert not (r / "conf" / "mods-available").exists()
    assert app.read_bytes() == (harness.REPO / "docker" / "app" / "app.wsgi").read_bytes()


def test_example_app_served(tree, mode):
    tree.defines = ["RWSGI_EMBEDDED"] if mode == "embedded" else []
    rc, out = tree.configtest()
    assert rc == 0 and "Syntax OK" in out, out
    tree.start()
    try:
        expected = "embedded" if mode == "embedded" else "daemon (process group app)"
        for path in ("/", "/some/where"):
            r = tree.get(path)
            assert r.status == 200, (r, tree.error_log()[-3000:])
            lines = r.text.splitlines()
            assert lines[0] == "Hello from mod_rwsgi!", r.text
            assert lines[1] == f"mode: {expected}", r.text
            assert lines[3] == f"path: {path}", r.text
    finally:
        tree.stop()
    assert not tree.problems, tree.problems
    bad = tree.log_violations()
    assert not bad, bad
    # The server is gone and removed its pid file.
    assert tree.parent_pid and not harness.pid_alive(tree.parent_pid)
    assert not tree.pid_file.exists()


def test_dockerfile_steps_are_the_script_steps():
    """Every RUN of docker/Dockerfile is a step of docker/rwsgi-image.sh (so this test file runs
    what the image runs) or the final `httpd -t`; the staged install is what the final stage
    copies."""
    text = (harness.REPO / "docker" / "Dockerfile").read_text()
    runs = [line.split(None, 1)[1] for line in text.splitlines() if line.startswith("RUN ")]
    steps = []
    for cmd in runs:
        if cmd == "httpd -t":
            continue
        words = cmd.split()
        assert words[-3:-1] in (["sh", "docker/rwsgi-image.sh"],
                                ["sh", "/usr/local/bin/rwsgi-image.sh"]), cmd
        steps.append((words[-1], [w for w in words[:-3] if "=" in w]))
    assert steps == [
        ("build-deps", []),
        ("build", ["APXS=/usr/local/apache2/bin/apxs"]),
        ("install", ["APXS=/usr/local/apache2/bin/apxs", "DESTDIR=/staging"]),
        ("runtime-deps", []),
    ], steps
    assert "COPY --from=builder /staging/ /" in text
    assert runs[-1] == "httpd -t"
    assert text.count("FROM httpd:2.4") == 2
