"""Drop-in compatibility: the same configuration and application served by Debian's mod_wsgi
(libapache2-mod-wsgi-py3) and by mod_rwsgi, only the LoadModule line differing, must give the
same environ and the same responses. Also: the two modules refuse to run together."""

import re

import pytest

import harness

# About embedded mode itself or plain Apache: not repeated in daemon mode.
pytestmark = pytest.mark.embedded_only

MOD_WSGI = harness.MODULES_DIR / "mod_wsgi.so"

# A typical mod_wsgi embedded-mode configuration, used unchanged with both modules.
CONFIG = """\
WSGIApplicationGroup %{GLOBAL}
WSGIPassAuthorization On
WSGIScriptReloading On
WSGIScriptAlias /app @APPS@/echo.wsgi
WSGIScriptAlias /resp @APPS@/response.wsgi
<Directory @APPS@>
    Require all granted
</Directory>
"""

# Keys whose values legitimately differ between the two servers or the two requests.
VOLATILE = {"REMOTE_PORT", "__pid__", "__thread__", "HTTP_HOST", "SERVER_PORT", "SCRIPT_FILENAME",
            "DOCUMENT_ROOT", "CONTEXT_DOCUMENT_ROOT", "__types__"}
# mod_wsgi 4.9 still calls ap_add_cgi_vars()/ap_add_common_vars(); mod_wsgi 6 (which
# mod_rwsgi follows) builds the CGI variables itself and leaves these out. GATEWAY_INTERFACE
# is not among them: mod_rwsgi sets it as mod_wsgi 4 and wsgiref do (compared below).
ONLY_IN_MOD_WSGI_4 = {"PATH_TRANSLATED", "SERVER_SIGNATURE", "PATH"}


def _serve(apache_factory, use_mod_wsgi):
    if use_mod_wsgi and not MOD_WSGI.exists():
        pytest.fail(f"{MOD_WSGI} is missing: install libapache2-mod-wsgi-py3 (scripts/deps.sh)")
    srv = apache_factory(load_module=not use_mod_wsgi)
    srv.app("echo.wsgi")
    srv.app("response.wsgi")
    pre = f"LoadModule wsgi_module {MOD_WSGI}\n" if use_mod_wsgi else ""
    srv.start(pre + CONFIG)
    return srv


def _environ(srv):
    r = srv.request("POST", "/app/a//b?x=1&y=%20z", body=b"payload",
                    headers={"Authorization": "Basic dTpw", "X-Custom": "v", "X_Bad": "1",
                             "Content-Type": "text/plain", "Cookie": "a=1"})
    assert r.status == 200 and r.complete, r
    env = r.json()
    return {k: v for k, v in env.items()
            if not k.startswith(("mod_wsgi.", "mod_rwsgi.", "apache.")) and k not in VOLATILE}


def test_environ_matches_mod_wsgi(apache_factory):
    theirs = _environ(_serve(apache_factory, use_mod_wsgi=True))
    ours = _environ(_serve(apache_factory, use_mod_wsgi=False))
    for k in ONLY_IN_MOD_WSGI_4:
        theirs.pop(k, None)
    # Compare the objects by type only (their reprs name the implementing module).
    for env in (theirs, ours):
        for k in ("wsgi.input", "wsgi.errors", "wsgi.file_wrapper"):
            assert k in env, k
            env.pop(k)
    missing = sorted(set(theirs) - set(ours))
    extra = sorted(set(ours) - set(theirs))
    assert not missing, f"keys mod_wsgi sets that mod_rwsgi does not: {missing}"
    assert not extra, f"keys mod_rwsgi sets that mod_wsgi does not: {extra}"
    # Both name themselves in the server banner, each with its own name and version.
    assert re.fullmatch(r"Apache/2\.4\.\d+ \(Debian\) mod_wsgi/[\d.]+ Python/3\.\d+",
                        theirs.pop("SERVER_SOFTWARE")), theirs
    assert re.fullmatch(r"Apache/2\.4\.\d+ \(Debian\) mod_rwsgi/[\d.]+ Python/3\.\d+",
                        ours.pop("SERVER_SOFTWARE")), ours
    diff = {k: (theirs[k], ours[k]) for k in theirs if theirs[k] != ours[k]}
    assert not diff, f"values that differ (mod_wsgi, mod_rwsgi): {diff}"


@pytest.mark.parametrize("path", ["/resp/ok", "/resp/status-custom", "/resp/write",
                                  "/resp/close-list", "/resp/exc-info-before-headers",
                                  "/resp/cl-less", "/resp/error-before-start",
                                  "/resp/filewrapper-bytesio"])
def test_responses_match_mod_wsgi(apache_factory, path):
    results = []
    for use_mod_wsgi in (True, False):
        srv = _serve(apache_factory, use_mod_wsgi)
        r = srv.request("GET", path)
        results.append((r.status, r.reason, r.headers.get("Content-Type"), r.body, r.complete))
        srv.stop()
    assert results[0] == results[1], f"mod_wsgi: {results[0]!r}\nmod_rwsgi: {results[1]!r}"


def test_refuses_to_run_next_to_mod_wsgi(apache_factory):
    if not MOD_WSGI.exists():
        pytest.fail(f"{MOD_WSGI} is missing: install libapache2-mod-wsgi-py3 (scripts/deps.sh)")
    srv = apache_factory()
    rc, out = srv.configtest(f"LoadModule wsgi_module {MOD_WSGI}\n")
    assert rc != 0
    assert "RW0003" in out and "mod_wsgi and mod_rwsgi are both loaded" in out, out
    assert "a2dismod wsgi" in out
