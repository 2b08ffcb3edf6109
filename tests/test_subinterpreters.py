"""Application groups as sub-interpreters: each named group runs in its own interpreter (its
own sys.modules, module globals and per-thread state), %{GLOBAL} in the main one, in embedded
and daemon mode; the request objects work the same in a sub-interpreter; a group that cannot
start costs only its own requests."""

import concurrent.futures
import os
import re

import pytest

import harness
from test_frameworks import venv  # noqa: F401 (the framework venv fixture)

ONE_CHILD = """
StartServers 1
ServerLimit 1
MinSpareThreads 1
MaxSpareThreads 4
ThreadsPerChild 4
MaxRequestWorkers 4
"""
# prefork: one child, so every request meets the same interpreters.
ONE_PREFORK_CHILD = """
StartServers 1
MinSpareServers 1
MaxSpareServers 1
ServerLimit 1
MaxRequestWorkers 1
"""

THREAD_MPMS = pytest.mark.parametrize("mpm", harness.mpms("event", "prefork"))


def _server(apache_factory, mode, mpm="event", **kw):
    kw.setdefault("daemon_options", "processes=1 threads=2")
    return apache_factory(mode=mode, mpm=mpm, **kw)


def _one_child(srv):
    """Embedded mode: MPM sizing for a single child (daemon mode: the daemon is one process)."""
    if srv.mode != "embedded":
        return ""
    return ONE_PREFORK_CHILD if srv.mpm == "prefork" else ONE_CHILD


def _mounts(srv, groups):
    """One copy of interp.wsgi per URL, each in its application group (None: no option)."""
    conf = _one_child(srv)
    for url, group in groups:
        script = srv.app("interp.wsgi", dest=url.strip("/") + ".wsgi")
        opts = {} if group is None else {"application_group": group}
        conf += srv.mount(url, script, **opts)
    return conf


def _get(srv, path, body=None):
    r = srv.request("POST" if body else "GET", path, body=body)
    assert r.status == 200 and r.complete, (r, srv.error_log()[-3000:])
    return r.json()


@THREAD_MPMS
def test_named_groups_are_isolated(apache_factory, mode, mpm):
    srv = _server(apache_factory, mode, mpm)
    srv.start(_mounts(srv, [("/a", "alpha"), ("/b", "beta"), ("/g", "%{GLOBAL}")]))
    seen = {}
    for path in ["/a", "/b", "/a", "/g", "/b", "/a", "/g"] * 3:
        env = _get(srv, path)
        key = (env["pid"], path)
        prev = seen.get(key)
        # The module counter of each (process, group) grows by one per request of that group
        # only: no other group's requests touch it.
        assert env["count"] == (prev["count"] + 1 if prev else 1), (path, env, prev)
        assert env["marker_hits"] == env["count"]
        seen[key] = env
    by_path = {p: [e for (pid, q), e in seen.items() if q == p] for p in ("/a", "/b", "/g")}
    a, b, g = by_path["/a"][0], by_path["/b"][0], by_path["/g"][0]
    assert a["group"] == a["module_group"] == "alpha"
    assert b["group"] == b["module_group"] == "beta"
    assert g["group"] == g["module_group"] == ""
    assert len({a["sys_id"], b["sys_id"], g["sys_id"]}) == 3
    # Sub-interpreters use the bootstrap's classes; the main interpreter mod_rwsgi's own.
    assert a["input_type"] == b["input_type"] == g["input_type"] == "Input"
    assert a["input_module"] == b["input_module"] == "_mod_rwsgi_bootstrap"
    assert g["input_module"] == "mod_wsgi"
    assert a["file_wrapper"] == "FileWrapper"
    assert srv.wait_for_log(r"created the sub-interpreter of application group 'alpha'")
    assert srv.wait_for_log(r"interp.wsgi: errors line from group 'beta'")
    assert srv.wait_for_log(r"interp.wsgi: stdout line from group 'alpha'")


@pytest.mark.parametrize("group", ["shared", "%{GLOBAL}"])
def test_same_group_shares_one_interpreter(apache_factory, mode, group):
    srv = _server(apache_factory, mode)
    srv.start(_mounts(srv, [("/a", group), ("/b", group)]))
    envs = [_get(srv, p) for p in ["/a", "/b", "/a", "/b"]]
    # Two scripts, one interpreter: the shared marker module counts both.
    per_pid = {}
    for e in envs:
        per_pid.setdefault(e["pid"], []).append(e["marker_hits"])
    for hits in per_pid.values():
        assert hits == list(range(1, len(hits) + 1))
    assert len({e["sys_id"] for e in envs if e["pid"] == envs[0]["pid"]}) == 1


@THREAD_MPMS
def test_thread_alternating_global_and_group(apache_factory, mode, mpm):
    """One worker thread serves %{GLOBAL} and a named group in turn: each request runs in its
    own interpreter and each keeps its per-thread state (threading.local) across requests."""
    srv = _server(apache_factory, mode, mpm, daemon_options="processes=1 threads=1")
    conf = _mounts(srv, [("/g", "%{GLOBAL}"), ("/n", "named")])
    if mode == "embedded" and mpm != "prefork":
        conf = conf.replace("ThreadsPerChild 4", "ThreadsPerChild 1").replace(
            "MaxRequestWorkers 4", "MaxRequestWorkers 1").replace("MaxSpareThreads 4",
                                                                  "MaxSpareThreads 1")
    srv.start(conf)
    locals_ = {}
    for path in ["/g", "/n"] * 5:
        env = _get(srv, path, body=b"hello\nworld\n")
        assert env["input"] == "hello\nworld\n" and env["more_lines"] == 0
        assert env["module_group"] == ("" if path == "/g" else "named")
        key = (env["pid"], env["native"], path)
        assert env["local"] == locals_.get(key, 0) + 1, (path, env)
        locals_[key] = env["local"]
    assert max(locals_.values()) >= 2


def test_broken_group_does_not_stop_others(apache_factory, mode):
    """A group whose interpreter cannot start (its python-path bootstrap fails) gets 500s;
    the other groups keep serving."""
    srv = _server(apache_factory, mode)
    bad = srv.write_file("apps/bad.wsgi", "raise ImportError('boom in bad.wsgi')\n")
    conf = _mounts(srv, [("/a", "alpha")]) + srv.mount("/bad", bad, application_group="broken")
    srv.allow_log(r"RW0005")
    srv.allow_log(r"boom in bad.wsgi")
    srv.allow_log(r"ImportError")
    srv.allow_log(r"Traceback|File \"")
    srv.start(conf)
    assert srv.get("/bad").status == 500
    assert _get(srv, "/a")["group"] == "alpha"
    assert srv.get("/bad").status == 500
    assert _get(srv, "/a")["count"] >= 1


def _pyo3_server(apache_factory, mode, venv):
    """A server whose Python is the framework venv (which has rpds-py, a PyO3-built package),
    an app importing it, and the configuration line that selects the venv in embedded mode."""
    kw = {}
    if mode == "daemon":
        kw["daemon_options"] = f"processes=1 threads=2 python-home={venv}"
    srv = _server(apache_factory, mode, **kw)
    app = srv.write_file("apps/pyo3.wsgi", (
        "import rpds\n"
        "def application(environ, start_response):\n"
        "    body = repr(rpds.HashTrieMap({'k': 1})).encode()\n"
        "    start_response('200 OK', [('Content-Type', 'text/plain')])\n"
        "    return [body]\n"))
    head = f"WSGIPythonHome {venv}\n" if mode == "embedded" else ""
    return srv, app, head


def test_pyo3_extension_refused_by_a_sub_interpreter(apache_factory, mode, venv):
    """A PyO3-built package (rpds-py, from the framework venv) imported by the main
    interpreter first: the same import in a named group's sub-interpreter fails with one RW0019
    line naming the group and the fix; the group answers 500, %{GLOBAL} keeps serving."""
    srv, app, head = _pyo3_server(apache_factory, mode, venv)
    conf = (head + _one_child(srv)
            + srv.mount("/g", app, application_group="%{GLOBAL}")
            + srv.mount("/x", app, application_group="ext"))
    for p in (r"RW0005", r"RW0019", r"ImportError", r"Traceback|File \"|\^"):
        srv.allow_log(p)
    srv.start(conf)
    r = srv.get("/g")
    assert r.status == 200 and b"HashTrieMap" in r.body, r
    assert srv.get("/x").status == 500
    assert srv.wait_for_log(r"RW0019: an extension module refused to load in the "
                            r"sub-interpreter of application group 'ext'.*%\{GLOBAL\}")
    assert srv.get("/g").status == 200


@THREAD_MPMS
def test_stop_and_graceful_with_sub_interpreters_alive(apache_factory, mode, mpm):
    """Several threads have served two named groups; a graceful restart and a stop end them
    without a hang or a crash. In embedded mode (WSGIDestroyInterpreter On, the default) each
    sub-interpreter is ended before Python is finalised: its atexit callbacks run."""
    srv = _server(apache_factory, mode, mpm, daemon_options="processes=1 threads=4")
    marks = srv.data / "atexit"
    marks.mkdir()
    os.chmod(marks, 0o777)  # the children write here as www-data
    app = srv.write_file("apps/exit.wsgi", (
        "import atexit, os, threading\n"
        "import mod_wsgi\n"
        f"MARKS = {str(marks)!r}\n"
        "_local = threading.local()\n"
        "def _mark():\n"
        "    name = mod_wsgi.application_group or 'main'\n"
        "    with open(os.path.join(MARKS, '%s-%d' % (name, os.getpid())), 'w') as f:\n"
        "        f.write('ok')\n"
        "atexit.register(_mark)\n"
        "def application(environ, start_response):\n"
        "    _local.x = 1\n"
        "    start_response('200 OK', [('Content-Type', 'text/plain')])\n"
        "    return [b'ok']\n"))
    conf = (_one_child(srv)
            + srv.mount("/a", app, application_group="one")
            + srv.mount("/b", app, application_group="two"))
    srv.start(conf)
    with concurrent.futures.ThreadPoolExecutor(4) as ex:
        statuses = list(ex.map(lambda i: srv.get("/a" if i % 2 else "/b").status, range(40)))
    assert statuses == [200] * 40
    srv.graceful(probe_path="/a")
    assert srv.get("/b").status == 200
    srv.stop()
    if mode == "embedded":
        names = sorted(p.name.split("-")[0] for p in marks.iterdir())
        assert "one" in names and "two" in names, names


@pytest.mark.embedded_only
def test_groups_sharing_a_single_phase_extension_end_cleanly(apache_factory, mode):
    """Two groups import ctypes, whose C part (_ctypes) is a single-phase extension module on
    3.12: CPython copies the first importer's module dict into the second interpreter. Ending
    the first interpreter before the second crashed the exiting child on CPython 3.12.1 (fixed in
    3.12.7, gh-116510); mod_rwsgi ends sub-interpreters newest first, so the child exits
    cleanly on every Python (the harness fails the test on a 'Segmentation fault' line)."""
    srv = _server(apache_factory, mode)
    app = srv.write_file("apps/ctypes.wsgi", (
        "import ctypes, json\n"
        "def application(environ, start_response):\n"
        "    get = ctypes.pythonapi.Py_IsInitialized\n"
        "    get.restype = ctypes.c_int\n"
        "    start_response('200 OK', [('Content-Type', 'text/plain')])\n"
        "    body = [environ['mod_wsgi.application_group'], get()]\n"
        "    return [json.dumps(body).encode()]\n"))
    srv.start(_one_child(srv) + srv.mount("/first", app, application_group="first")
              + srv.mount("/second", app, application_group="second"))
    assert srv.get("/first").json() == ["first", 1]
    assert srv.get("/second").json() == ["second", 1]
    srv.stop()
    log = srv.error_log()
    assert not re.search(r"exit signal|Segmentation fault|Fatal Python error", log), log


def test_interpreter_limit(apache_factory, mode):
    """Group names that come from requests (%{ENV:} set from a header) cannot create
    interpreters without bound: past 32 per process a new group gets a 500 and one RW0018
    line, and the groups that exist keep serving."""
    srv = _server(apache_factory, mode)
    script = srv.app("interp.wsgi")
    conf = (_one_child(srv)
            + 'SetEnvIf X-Group "^(g[0-9]+)$" GRP=$1\n'
            + srv.mount("/e", script, application_group="%{ENV:GRP}"))
    srv.allow_log(r"RW0018")
    srv.start(conf)
    for i in range(32):
        r = srv.request("GET", "/e", headers={"X-Group": f"g{i}"})
        assert r.status == 200 and r.json()["group"] == f"g{i}", r
    r = srv.request("GET", "/e", headers={"X-Group": "g99"})
    assert r.status == 500
    assert srv.wait_for_log(r"RW0018: application group 'g99' needs a new sub-interpreter, but "
                            r"this process already has 32")
    r = srv.request("GET", "/e", headers={"X-Group": "g7"})
    assert r.status == 200 and r.json()["group"] == "g7"


def test_import_script_preloads_into_its_group(apache_factory, mode):
    """WSGIImportScript ... application-group=alpha runs in alpha's sub-interpreter at process
    start (created then): alpha's requests see what it imported, beta's and %{GLOBAL}'s not."""
    srv = _server(apache_factory, mode)
    pre = srv.write_file("apps/preload_alpha.py", (
        "import sys, types\n"
        "m = types.ModuleType('_rwsgi_preloaded')\n"
        "m.by = 'preload'\n"
        "sys.modules['_rwsgi_preloaded'] = m\n"))
    app = srv.write_file("apps/seen.wsgi", (
        "import sys\n"
        "def application(environ, start_response):\n"
        "    body = repr('_rwsgi_preloaded' in sys.modules).encode()\n"
        "    start_response('200 OK', [('Content-Type', 'text/plain')])\n"
        "    return [body]\n"))
    pg = "%{GLOBAL}" if mode == "embedded" else harness.DAEMON_GROUP
    conf = (_one_child(srv)
            + f"WSGIImportScript {pre} process-group={pg} application-group=alpha\n"
            + srv.mount("/a", app, application_group="alpha")
            + srv.mount("/b", app, application_group="beta")
            + srv.mount("/g", app, application_group="%{GLOBAL}"))
    srv.start(conf)
    assert srv.wait_for_log(r"imported WSGI script '.*preload_alpha.py'")
    assert srv.get("/a").body == b"True"
    assert srv.get("/b").body == b"False"
    assert srv.get("/g").body == b"False"


def test_script_reload_is_per_interpreter(apache_factory, mode):
    """A changed script: in embedded mode only its own interpreter re-executes it (another
    group's module state survives); in daemon mode the process restarts, as under mod_wsgi."""
    srv = _server(apache_factory, mode)
    conf = _mounts(srv, [("/a", "alpha"), ("/b", "beta")])
    srv.allow_log(r"changed")
    srv.start(conf)
    for _ in range(3):
        a, b = _get(srv, "/a"), _get(srv, "/b")
    assert a["count"] == 3 and b["count"] == 3
    script = srv.apps / "a.wsgi"
    st = script.stat()
    os.utime(script, ns=(st.st_atime_ns, st.st_mtime_ns + 2_000_000_000))
    a2 = harness.wait_for(lambda: _get(srv, "/a"), timeout=10)
    assert a2["count"] == 1, a2
    b2 = _get(srv, "/b")
    if mode == "embedded":
        assert b2["count"] == 4 and b2["pid"] == b["pid"], b2
    else:
        assert b2["count"] == 1 and b2["pid"] != b["pid"], b2


DJANGO_SETTINGS = """\
from pathlib import Path
BASE = Path(__file__).resolve().parent
SECRET_KEY = "test-only-{label}"
DEBUG = False
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "site_pkg.urls"
INSTALLED_APPS = []
MIDDLEWARE = []
DATABASES = {{}}
USE_TZ = True
TEMPLATES = [{{"BACKEND": "django.template.backends.django.DjangoTemplates",
              "DIRS": [BASE / "templates"]}}]
SITE_LABEL = "{label}"
"""
DJANGO_URLS = """\
from django.conf import settings
from django.shortcuts import render
from django.urls import path

def index(request):
    return render(request, "page.html", {"label": settings.SITE_LABEL})

urlpatterns = [path("", index)]
"""
DJANGO_WSGI = """\
import os, sys
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
# Assigned, not setdefault: the process environment is shared by all interpreters.
os.environ["DJANGO_SETTINGS_MODULE"] = "site_pkg.settings"
from django.core.wsgi import get_wsgi_application
application = get_wsgi_application()
"""


@THREAD_MPMS
def test_two_django_projects_in_one_process(apache_factory, mode, mpm, venv):
    """Two Django projects with the same package name and different settings and templates,
    mounted with two WSGIScriptAlias lines and no WSGIApplicationGroup (mod_wsgi's default,
    %{RESOURCE}) in one httpd child (embedded) or one daemon process, served alternately under
    concurrency: each always answers with its own settings and its own template."""
    kw = {"daemon_options": f"processes=1 threads=4 python-home={venv}"}
    srv = _server(apache_factory, mode, mpm, **kw)
    conf = (f"WSGIPythonHome {venv}\n" if mode == "embedded" else "") + _one_child(srv)
    for label in ("one", "two"):
        root = f"apps/{label}"
        srv.write_file(f"{root}/site_pkg/__init__.py", "")
        srv.write_file(f"{root}/site_pkg/settings.py", DJANGO_SETTINGS.format(label=label))
        srv.write_file(f"{root}/site_pkg/urls.py", DJANGO_URLS)
        srv.write_file(f"{root}/site_pkg/templates/page.html",
                       f"site {{{{ label }}}} from the template of {label}\n")
        wsgi = srv.write_file(f"{root}/wsgi.py", DJANGO_WSGI)
        # No application group: mod_wsgi's default, %{RESOURCE}, one per mount.
        conf += srv.mount(f"/{label}", wsgi)
    srv.start(conf)
    paths = ["/one/", "/two/"] * 30
    with concurrent.futures.ThreadPoolExecutor(6) as ex:
        answers = list(ex.map(lambda p: (p, srv.get(p)), paths))
    for path, r in answers:
        label = path.strip("/")
        assert r.status == 200, (path, r, srv.error_log()[-2000:])
        assert r.body == f"site {label} from the template of {label}\n".encode(), (path, r.body)


def test_default_groups_and_the_one_group_rule(apache_factory, mode):
    """No WSGIApplicationGroup: two aliases in one process are two sub-interpreters named as
    mod_wsgi names them; one alias alone in its process runs in the main interpreter and still
    reports mod_wsgi's name."""
    srv = _server(apache_factory, mode)
    srv.start(_mounts(srv, [("/a", None), ("/b", None)]))
    a, b = _get(srv, "/a"), _get(srv, "/b")
    assert a["group"] == f"127.0.0.1:{srv.port}|/a" and b["group"] == f"127.0.0.1:{srv.port}|/b"
    assert a["module_group"] == a["group"] and a["sys_id"] != b["sys_id"]
    assert a["input_module"] == b["input_module"] == "_mod_rwsgi_bootstrap"
    srv.stop()

    one = _server(apache_factory, mode)
    one.start(_mounts(one, [("/a", None)]))
    a = _get(one, "/a")
    assert a["group"] == f"127.0.0.1:{one.port}|/a"
    assert a["input_module"] == "mod_wsgi" and a["module_group"] == "", a


def test_pyo3_extension_alone_in_its_process_runs(apache_factory, mode, venv):
    """The same PyO3-built package works without %{GLOBAL} when its application is the only
    one in its process (the one-group rule runs it in the main interpreter)."""
    srv, app, head = _pyo3_server(apache_factory, mode, venv)
    srv.start(head + _one_child(srv) + srv.mount("/x", app))
    r = srv.get("/x")
    assert r.status == 200 and b"HashTrieMap" in r.body, (r, srv.error_log()[-2000:])


def test_groups_created_concurrently(apache_factory, mode):
    """Six groups whose first requests arrive together (so their interpreters are created at
    the same time by different threads), then a stop: every answer right, no crash at exit
    (the harness fails the test on a crash line). Repeated on fresh servers."""
    for _ in range(3):
        srv = _server(apache_factory, mode, daemon_options="processes=1 threads=6")
        conf = _mounts(srv, [(f"/c{i}", None) for i in range(6)])
        if mode == "embedded":
            conf = conf.replace("ThreadsPerChild 4", "ThreadsPerChild 6").replace(
                "MaxRequestWorkers 4", "MaxRequestWorkers 6").replace("MaxSpareThreads 4",
                                                                      "MaxSpareThreads 6")
        srv.start(conf)
        with concurrent.futures.ThreadPoolExecutor(6) as ex:
            got = list(ex.map(lambda i: (i, srv.get(f"/c{i}")), list(range(6)) * 3))
        for i, r in got:
            assert r.status == 200, (i, r, srv.error_log()[-3000:])
            assert r.json()["group"].endswith(f"|/c{i}")
        srv.stop()


def test_recycling_with_sub_interpreters(apache_factory, mode):
    """Processes that serve two groups are recycled over and over (embedded:
    MaxConnectionsPerChild, so each exiting child ends its sub-interpreters; daemon:
    maximum-requests): every request is answered, no crash line, new processes serve."""
    srv = _server(apache_factory, mode, daemon_options="processes=1 threads=2 maximum-requests=4")
    conf = _mounts(srv, [("/a", None), ("/b", None)])
    if mode == "embedded":
        conf += "MaxConnectionsPerChild 4\n"
    srv.start(conf)
    pids = set()
    for i in range(24):
        env = _get(srv, "/a" if i % 2 else "/b")
        pids.add(env["pid"])
    assert len(pids) >= 3, pids


def test_per_interpreter_gil(apache_factory, mode):
    """WSGIPerInterpreterGIL On: on a Python 3.12+ build each named group gets an interpreter
    with its own GIL, which serves concurrent requests (input, errors, print, write) while
    %{GLOBAL} stays on the main one; before 3.12 apachectl -t refuses it (RW0044)."""
    srv = _server(apache_factory, mode)
    conf = "WSGIPerInterpreterGIL On\n" + _mounts(
        srv, [("/a", "alpha"), ("/b", "beta"), ("/g", "%{GLOBAL}")])
    if harness.module_python() < (3, 12):
        rc, out = srv.configtest(conf)
        assert rc != 0 and "RW0044" in out, out
        return
    srv.start(conf)
    with concurrent.futures.ThreadPoolExecutor(4) as ex:
        got = list(ex.map(lambda p: (p, _get(srv, p, body=b"x\ny\n")), ["/a", "/b", "/g"] * 10))
    for path, env in got:
        assert env["group"] == {"/a": "alpha", "/b": "beta", "/g": ""}[path]
        assert env["input"] == "x\ny\n"
    assert srv.wait_for_log(r"created the sub-interpreter of application group 'alpha' with "
                            r"its own GIL")
