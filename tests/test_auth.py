"""mod_wsgi's auth phases through Python: WSGIAuthUserScript behind `AuthBasicProvider wsgi`
and `AuthDigestProvider wsgi`, WSGIAuthGroupScript behind `Require wsgi-group`,
WSGIGroupAuthoritative, and WSGIAccessScript, driven by curl (`-u`, `--digest`) as a browser
would. The scripts always run in the httpd child; the application behind them runs in
embedded or daemon mode. An error in a script is a 500 and a log line, never a way in."""

import json
import re
import subprocess

import pytest

import harness

AUTH_CONFIG = """\
{mount}
<Location /app/basic>
    AuthType Basic
    AuthName "rwsgi basic"
    AuthBasicProvider wsgi
    WSGIAuthUserScript {auth}
    Require valid-user
</Location>
<Location /app/digest>
    AuthType Digest
    AuthName "rwsgi digest"
    AuthDigestDomain /app/digest
    AuthDigestProvider wsgi
    WSGIAuthUserScript {auth}
    Require valid-user
</Location>
<Location /app/group>
    AuthType Basic
    AuthName "rwsgi group"
    AuthBasicProvider wsgi
    WSGIAuthUserScript {auth}
    WSGIAuthGroupScript {auth} application-group=authz
    Require wsgi-group admins
</Location>
<LocationMatch "^/app/not-banned(-soft)?$">
    AuthType Basic
    AuthName "rwsgi not banned"
    AuthBasicProvider wsgi
    WSGIAuthUserScript {auth}
    WSGIAuthGroupScript {auth}
    <RequireAll>
        Require valid-user
        Require not wsgi-group banned
    </RequireAll>
</LocationMatch>
<Location /app/not-banned-soft>
    WSGIGroupAuthoritative Off
</Location>
<Location /app/access>
    WSGIAccessScript {auth}
</Location>
<Location /app/no-script>
    AuthType Basic
    AuthName "rwsgi none"
    AuthBasicProvider wsgi
    Require valid-user
</Location>
"""


@pytest.fixture
def asrv(apache_factory, mode):
    srv = apache_factory(modules=["auth_basic", "auth_digest", "authz_user"])
    app = srv.app("echo.wsgi")
    auth = srv.app("auth_scripts.wsgi")
    srv.start(AUTH_CONFIG.format(mount=srv.mount("/app", app).strip(), auth=auth))
    srv.allow_log(r"AUTH-SAW|RW0007|RW0025|RW0006|Traceback|RuntimeError|  File |    |"
                  r"AH01617|AH01618|AH01790|AH01630|AH01631|AH01797|AH01795")
    return srv


def curl(srv, path, *args) -> tuple[int, dict | None, str]:
    """(status, the echoed environ when 200, WWW-Authenticate) for a GET with curl."""
    out = subprocess.run(
        [b"curl", b"-s", b"-D", b"-", b"--max-time", b"20",
         *[a if isinstance(a, bytes) else a.encode() for a in args],
         f"http://127.0.0.1:{srv.port}{path}".encode()],
        capture_output=True, timeout=60)
    assert out.returncode == 0, out
    text = out.stdout.decode("latin-1")
    # With --digest the first answer is the 401 challenge: take the last response.
    head, _, body = text.rpartition("HTTP/1.1 ")[2].partition("\r\n\r\n")
    status = int(head.split(" ", 1)[0])
    challenge = next((line.split(":", 1)[1].strip() for line in head.split("\r\n")
                      if line.lower().startswith("www-authenticate:")), "")
    return status, (json.loads(body) if status == 200 else None), challenge


def saw(srv, what: str) -> list[str]:
    assert srv.wait_for_log(r"AUTH-SAW " + what), srv.error_log()[-3000:]
    return [line for line in srv.error_log().splitlines() if "AUTH-SAW " + what in line]


def test_basic_provider(asrv):
    status, _, challenge = curl(asrv, "/app/basic")
    assert status == 401 and challenge == 'Basic realm="rwsgi basic"', (status, challenge)
    status, env, _ = curl(asrv, "/app/basic/x", "-u", "alice:secret")
    assert status == 200 and env["REMOTE_USER"] == "alice" and env["AUTH_TYPE"] == "Basic", env
    # The script's environ: the request's, without the credentials or a body, in the main
    # interpreter of the httpd child (application-group defaults to %{GLOBAL}).
    line = saw(asrv, "check_password user='alice'")[0]
    for part in ("group=''", "interp=main", "authorization=False", "input=False",
                 "remote=127.0.0.1", "uri=/app/basic/x"):
        assert part in line, line
    assert curl(asrv, "/app/basic", "-u", "alice:wrong")[0] == 401
    assert curl(asrv, "/app/basic", "-u", "nobody:x")[0] == 401  # None: no such user
    # A str answer is the user name to use.
    status, env, _ = curl(asrv, "/app/basic", "-u", "renamed:pw")
    assert status == 200 and env["REMOTE_USER"] == "alice-renamed", env


def test_credentials_that_are_not_utf8(asrv):
    # Latin-1 bytes reach check_password as latin-1 text (no crash, no UnicodeDecodeError).
    status, env, _ = curl(asrv, "/app/basic", "-u", b"\xff\xfe:latin")
    assert status == 200 and env["REMOTE_USER"] == "\u00ff\u00fe", env
    # (httpd escapes the line's non-ASCII bytes: the script wrote 'ÿþ' in UTF-8.)
    saw(asrv, re.escape(r"check_password user='\xc3\xbf\xc3\xbe'"))
    status, _, _ = curl(asrv, "/app/basic", "-u", b"\xc3(\x80:\xff")
    assert status == 401
    assert curl(asrv, "/app/basic", "-u", "alice:secret")[0] == 200


def test_errors_never_let_a_request_in(asrv):
    status, env, _ = curl(asrv, "/app/basic", "-u", "boom:x")
    assert status == 500 and env is None
    assert asrv.wait_for_log(r"RW0007: exception occurred in check_password\(\) of "
                             r"WSGIAuthUserScript '.*auth_scripts.wsgi'")
    assert asrv.wait_for_log(r"RuntimeError: check-password-boom")
    assert curl(asrv, "/app/basic", "-u", "weird:x")[0] == 500
    assert asrv.wait_for_log(r"RW0025: check_password\(\) of WSGIAuthUserScript .* must return "
                             r"True, False, None or the user name as a str, not int")
    # A provider with no script where it is used.
    assert curl(asrv, "/app/no-script", "-u", "alice:secret")[0] == 500
    assert asrv.wait_for_log(r"RW0025: AuthBasicProvider/AuthDigestProvider wsgi is used here "
                             r"but no WSGIAuthUserScript applies")
    # The server keeps serving.
    assert curl(asrv, "/app/basic", "-u", "alice:secret")[0] == 200


def test_digest_provider(asrv):
    status, _, challenge = curl(asrv, "/app/digest")
    assert status == 401 and challenge.startswith('Digest realm="rwsgi digest"'), challenge
    for user, pw in (("alice", "secret"), ("bob", "hunter2")):  # the hash as str, as bytes
        status, env, _ = curl(asrv, "/app/digest/y", "--digest", "-u", f"{user}:{pw}")
        assert status == 200 and env["REMOTE_USER"] == user and env["AUTH_TYPE"] == "Digest"
    saw(asrv, "get_realm_hash user='alice' realm='rwsgi digest'")
    assert curl(asrv, "/app/digest", "--digest", "-u", "alice:wrong")[0] == 401
    assert curl(asrv, "/app/digest", "--digest", "-u", "nobody:x")[0] == 401


def test_group_provider(asrv):
    # alice is in "Admins" (names compare without case, as httpd's tables do).
    status, env, _ = curl(asrv, "/app/group", "-u", "alice:secret")
    assert status == 200 and env["REMOTE_USER"] == "alice"
    line = saw(asrv, "groups_for_user user='alice'")[0]
    assert "group='authz'" in line and "interp=sub" in line, line  # application-group=authz
    # bob is authenticated but not an admin: httpd answers 401 (AuthzSendForbiddenOnFailure Off).
    assert curl(asrv, "/app/group", "-u", "bob:hunter2")[0] == 401
    assert curl(asrv, "/app/group")[0] == 401  # no user yet: authentication first
    # An exception or a wrong answer from groups_for_user is a 500, never a way in.
    assert curl(asrv, "/app/group", "-u", "gboom:x")[0] == 500
    assert asrv.wait_for_log(r"RuntimeError: groups-boom")
    assert curl(asrv, "/app/group", "-u", "gweird:x")[0] == 500
    assert asrv.wait_for_log(r"RW0025: groups_for_user\(\) of WSGIAuthGroupScript .* must "
                             r"return group names as str or bytes, not int")


def test_group_authoritative(asrv):
    # `Require not wsgi-group banned`: a user outside the group is "denied", which the
    # negation turns into "granted". WSGIGroupAuthoritative Off changes nothing (as mod_wsgi
    # under httpd 2.4, where <RequireAll>/<RequireAny> combine the answers).
    for path in ("/app/not-banned", "/app/not-banned-soft"):
        assert curl(asrv, path, "-u", "alice:secret")[0] == 200, path
        assert curl(asrv, path)[0] == 401, path


def test_access_script(asrv):
    status, env, _ = curl(asrv, "/app/access?ok")
    assert status == 200 and env["QUERY_STRING"] == "ok"
    line = saw(asrv, "allow_access host='127.0.0.1'")[0]
    assert "interp=main" in line and "authorization=False" in line, line
    assert curl(asrv, "/app/access?deny")[0] == 403
    assert curl(asrv, "/app/access?none")[0] == 200  # no verdict: the Require lines decide
    assert curl(asrv, "/app/access?boom")[0] == 500
    assert asrv.wait_for_log(r"RuntimeError: access-boom")
    assert curl(asrv, "/app/access?weird")[0] == 500
    assert asrv.wait_for_log(r"RW0025: allow_access\(\) of WSGIAccessScript .* must return "
                             r"True, False or None, not str")
    assert curl(asrv, "/app/access?ok")[0] == 200


@pytest.mark.embedded_only  # about httpd's own files: the application's mode plays no part
def test_htaccess_protects_static_files(apache_factory):
    """The auth directives work from .htaccess (AllowOverride AuthConfig) and protect any
    URL, here a static file Apache serves itself."""
    srv = apache_factory(modules=["auth_basic", "authz_user"])
    auth = srv.app("auth_scripts.wsgi")
    srv.write_file("htdocs/private/page.txt", "private page\n")
    srv.write_file("htdocs/private/.htaccess",
                   f"AuthType Basic\nAuthName \"rwsgi htaccess\"\nAuthBasicProvider wsgi\n"
                   f"WSGIAuthUserScript {auth}\nRequire valid-user\n")
    srv.start(f"<Directory {srv.root}/htdocs/private>\n    AllowOverride AuthConfig\n"
              "</Directory>\n")
    srv.allow_log(r"AUTH-SAW|AH01617|AH01618")
    assert curl(srv, "/private/page.txt")[0] == 401
    out = subprocess.run(["curl", "-s", "-u", "alice:secret", "--max-time", "20",
                          f"http://127.0.0.1:{srv.port}/private/page.txt"],
                         capture_output=True, timeout=60)
    assert out.stdout == b"private page\n", out
    assert curl(srv, "/private/page.txt", "-u", "alice:nope")[0] == 401
