# The auth phases' scripts of tests/test_auth.py: WSGIAuthUserScript (check_password,
# get_realm_hash), WSGIAuthGroupScript (groups_for_user) and WSGIAccessScript (allow_access).
# Each writes what it saw to wsgi.errors, so the tests read the environ it got from the log.
import hashlib
import sys

USERS = {"alice": "secret", "bob": "hunter2", "\u00ff\u00fe": "latin", "gboom": "x",
         "gweird": "x"}
GROUPS = {"alice": ["Admins", b"staff"], "bob": ["staff"], "carol": []}


def _where():
    try:
        import _xxsubinterpreters as interpreters
    except ImportError:  # Python 3.13+
        import _interpreters as interpreters
    return "sub" if interpreters.get_current() != interpreters.get_main() else "main"


def _saw(environ, what):
    environ["wsgi.errors"].write(
        f"AUTH-SAW {what} group={environ['mod_wsgi.application_group']!r} "
        f"interp={_where()} authorization={'HTTP_AUTHORIZATION' in environ} "
        f"input={'wsgi.input' in environ} remote={environ.get('REMOTE_ADDR')} "
        f"uri={environ.get('REQUEST_URI')}\n")


def check_password(environ, user, password):
    _saw(environ, f"check_password user={user!r}")
    if user == "boom":
        raise RuntimeError("check-password-boom")
    if user == "weird":
        return 42
    if user == "renamed":
        return "alice-renamed" if password == "pw" else False
    if user not in USERS:
        return None
    return USERS[user] == password


def get_realm_hash(environ, user, realm):
    _saw(environ, f"get_realm_hash user={user!r} realm={realm!r}")
    if user not in USERS:
        return None
    digest = hashlib.md5(f"{user}:{realm}:{USERS[user]}".encode("latin-1")).hexdigest()
    return digest.encode() if user == "bob" else digest


def groups_for_user(environ, user):
    _saw(environ, f"groups_for_user user={user!r}")
    if user == "gboom":
        raise RuntimeError("groups-boom")
    if user == "gweird":
        return [1, 2]
    return GROUPS.get(user, [])


def allow_access(environ, host):
    _saw(environ, f"allow_access host={host!r}")
    q = environ.get("QUERY_STRING", "")
    if "deny" in q:
        return False
    if "boom" in q:
        raise RuntimeError("access-boom")
    if "none" in q:
        return None
    if "weird" in q:
        return "yes"
    return True
