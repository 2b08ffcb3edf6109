"""Application groups as sub-interpreters: each named group runs in its own interpreter (its
own sys.modules, module globals and per-thread state), %{GLOBAL} in the main one, in embedded
and daemon mode; the request objects work the same in a sub-interpreter; a group that cannot
start costs only its own requests."""

import concurrent.futures
import os

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


def _server(apache_factory, mode, **kw):
    kw.setdefault("daemon_options", "processes=1 threads=2")
    return apache_factory(mode=mode, **kw)


def _mounts(srv, groups):
    """One copy of interp.wsgi per URL, each in its application group (None: no option)."""
    conf = ONE_CHILD if srv.mode == "embedded" else ""
    for url, group in groups:
        script = srv.app("interp.wsgi", dest=url.strip("/") + ".wsgi")
        opts = {} if group is None else {"application_group": group}
        conf += srv.mount(url, script, **opts)
    return conf


def _get(srv, path, body=None):
    r = srv.request("POST" if body else "GET", path, body=body)
    assert r.status == 200 and r.complete, (r, srv.error_log()[-3000:])
    return r.json()


def test_named_groups_are_isolated(apache_factory, mode):
    srv = _server(apache_factory, mode)
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
    assert a["input_type"] == b["input_type"] == "Input"
    assert a["file_wrapper"] == "FileWrapper"
    assert srv.wait_for_log(r"created the sub-interpreter of application group 'alpha'")
    assert srv.wait_for_log(r"interp.wsgi: errors line from group 'beta'")
    assert srv.wait_for_log(r"interp.wsgi: stdout line from group 'alpha'")


def test_same_group_shares_one_interpreter(apache_factory, mode):
    srv = _server(apache_factory, mode)
    srv.start(_mounts(srv, [("/a", "shared"), ("/b", "shared")]))
    envs = [_get(srv, p) for p in ["/a", "/b", "/a", "/b"]]
    # Two scripts, one interpreter: the shared marker module counts both.
    per_pid = {}
    for e in envs:
        per_pid.setdefault(e["pid"], []).append(e["marker_hits"])
    for hits in per_pid.values():
        assert hits == list(range(1, len(hits) + 1))
    assert len({e["sys_id"] for e in envs if e["pid"] == envs[0]["pid"]}) == 1


def test_thread_alternating_global_and_group(apache_factory, mode):
    """One worker thread serves %{GLOBAL} and a named group in turn: each request runs in its
    own interpreter and each keeps its per-thread state (threading.local) across requests."""
    srv = _server(apache_factory, mode, daemon_options="processes=1 threads=1")
    conf = _mounts(srv, [("/g", "%{GLOBAL}"), ("/n", "named")])
    if mode == "embedded":
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


def test_pyo3_extension_refused_by_a_sub_interpreter(apache_factory, mode, venv):
    """A PyO3-built package (rpds-py, from the framework venv) imported by the main
    interpreter first: the same import in a named group's sub-interpreter fails with one RW0019
    line naming the group and the fix; the group answers 500, %{GLOBAL} keeps serving."""
    env = venv
    kw = {}
    if mode == "daemon":
        kw["daemon_options"] = f"processes=1 threads=2 python-home={env}"
    srv = _server(apache_factory, mode, **kw)
    app = srv.write_file("apps/pyo3.wsgi", (
        "import rpds\n"
        "def application(environ, start_response):\n"
        "    body = repr(rpds.HashTrieMap({'k': 1})).encode()\n"
        "    start_response('200 OK', [('Content-Type', 'text/plain')])\n"
        "    return [body]\n"))
    head = f"WSGIPythonHome {env}\n" if mode == "embedded" else ""
    conf = (head + (ONE_CHILD if mode == "embedded" else "")
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


def test_stop_and_graceful_with_sub_interpreters_alive(apache_factory, mode):
    """Several threads have served two named groups; a graceful restart and a stop end them
    without a hang or a crash. In embedded mode (WSGIDestroyInterpreter On, the default) each
    sub-interpreter is ended before Python is finalised: its atexit callbacks run."""
    srv = _server(apache_factory, mode, daemon_options="processes=1 threads=4")
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
    conf = ((ONE_CHILD if mode == "embedded" else "")
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


def test_interpreter_limit(apache_factory, mode):
    """Group names that come from requests (%{ENV:} set from a header) cannot create
    interpreters without bound: past 32 per process a new group gets a 500 and one RW0018
    line, and the groups that exist keep serving."""
    srv = _server(apache_factory, mode)
    script = srv.app("interp.wsgi")
    conf = ((ONE_CHILD if mode == "embedded" else "")
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
