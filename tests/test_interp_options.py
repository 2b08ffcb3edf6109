"""<WSGIInterpreterOptions>: options scoped to the interpreters a section selects
(WSGIPythonPath in one group's interpreter only, WSGIRestrictStdout for one group, the
one-group rule's main interpreter answering to its group's section), in embedded and daemon
mode; and what `apachectl -t` refuses (directives not allowed inside, bad selectors, a
section in a <VirtualHost>, WSGIPerInterpreterGIL On on a Python 3.11 build)."""

import os
import re

import pytest

import harness

from test_subinterpreters import ONE_CHILD


def _server(apache_factory, mode):
    return apache_factory(mode=mode, daemon_options="processes=1 threads=2")


def _mounts(srv, groups):
    conf = ONE_CHILD if srv.mode == "embedded" else ""
    for url, group in groups:
        script = srv.app("interp_opts.wsgi", dest=url.strip("/") + ".wsgi")
        conf += srv.mount(url, script, application_group=group)
    return conf


def _optlib(srv, name):
    srv.write_file(f"{name}/rwsgi_optmod.py", f"WHERE = {name!r}\n")
    return srv.root / name


def _get(srv, path):
    r = srv.request("GET", path)
    assert r.status == 200 and r.complete, (r, srv.error_log()[-3000:])
    return r.json()


def test_python_path_only_in_the_selected_group(apache_factory, mode):
    srv = _server(apache_factory, mode)
    lib, base = _optlib(srv, "optlib"), srv.root / "baselib"
    base.mkdir()
    conf = _mounts(srv, [("/a", "alpha"), ("/b", "beta"), ("/g", "%{GLOBAL}")])
    conf += f"""
WSGIPythonPath {base}
<WSGIInterpreterOptions application-group=alpha>
    WSGIPythonPath {lib}
</WSGIInterpreterOptions>
"""
    srv.start(conf)
    for _ in range(2):
        a, b, g = _get(srv, "/a"), _get(srv, "/b"), _get(srv, "/g")
        assert a["group"] == "alpha" and a["found"] == "optlib", a
        assert b["found"] is None and str(lib) not in b["path"], b
        assert g["found"] is None and str(lib) not in g["path"], g
        # A section's directories go in front of the server-level ones.
        assert a["path"].index(str(lib)) < a["path"].index(str(base)), a["path"]
        assert str(base) in b["path"] and str(base) in g["path"]


def test_sections_layer_most_specific_first(apache_factory, mode):
    """Every matching section adds its directories; the most specific ends up first."""
    srv = _server(apache_factory, mode)
    own, everyone = _optlib(srv, "ownlib"), _optlib(srv, "alllib")
    process = "%{GLOBAL}" if mode == "embedded" else harness.DAEMON_GROUP
    conf = _mounts(srv, [("/a", "alpha"), ("/b", "beta")])
    conf += f"""
<WSGIInterpreterOptions process-group={process} application-group=alpha>
    WSGIPythonPath {own}
</WSGIInterpreterOptions>
<WSGIInterpreterOptions>
    WSGIPythonPath {everyone}
</WSGIInterpreterOptions>
<WSGIInterpreterOptions process-group=elsewhere>
    WSGIRestrictStdout On
</WSGIInterpreterOptions>
"""
    srv.start(conf)
    a, b = _get(srv, "/a"), _get(srv, "/b")
    assert a["found"] == "ownlib" and b["found"] == "alllib", (a, b)
    assert a["path"].index(str(own)) < a["path"].index(str(everyone))
    # The process-group=elsewhere section selects no interpreter here.
    assert a["stdout"] == b["stdout"] == "ok"


def test_restrict_stdout_for_one_group(apache_factory, mode):
    srv = _server(apache_factory, mode)
    conf = _mounts(srv, [("/a", "alpha"), ("/b", "beta"), ("/g", "%{GLOBAL}")])
    conf += """
<WSGIInterpreterOptions application-group=alpha>
    WSGIRestrictStdout On
</WSGIInterpreterOptions>
"""
    srv.start(conf)
    a, b, g = _get(srv, "/a"), _get(srv, "/b"), _get(srv, "/g")
    assert a["stdout"] == "sys.stdout access restricted by mod_wsgi", a
    assert b["stdout"] == "ok" and g["stdout"] == "ok", (b, g)
    assert srv.wait_for_log(r"interp_opts.wsgi: stdout from 'beta'")
    assert "stdout from 'alpha'" not in srv.error_log()


def test_switch_interval_scoped_to_a_group_is_skipped(apache_factory, mode):
    """Under the shared GIL the switch interval is the process's: the server-level value is
    set, one scoped to a named group is not (as mod_wsgi), and the parent says so once."""
    srv = _server(apache_factory, mode)
    conf = _mounts(srv, [("/a", "alpha"), ("/b", "beta")])
    conf += """
WSGISwitchInterval 0.002
<WSGIInterpreterOptions application-group=alpha>
    WSGISwitchInterval 0.0005
</WSGIInterpreterOptions>
"""
    if mode == "daemon":
        conf = conf.replace("WSGISwitchInterval 0.002", "")
        srv.daemon_options += " switch-interval=0.002"
    srv.start(conf)
    a, b = _get(srv, "/a"), _get(srv, "/b")
    assert a["switch"] == b["switch"] == pytest.approx(0.002), (a, b)
    assert srv.wait_for_log(r"application-group=alpha: WSGISwitchInterval 0.0005 is not applied")
    assert srv.error_log().count("WSGISwitchInterval 0.0005 is not applied") == 1


def test_group_in_the_main_interpreter_gets_its_section(apache_factory, mode):
    """The one-group rule runs a process's only group in its main interpreter: a section
    naming that group applies there, as it would to mod_wsgi's sub-interpreter."""
    srv = _server(apache_factory, mode)
    lib = _optlib(srv, "solelib")
    conf = _mounts(srv, [("/a", "alpha")])
    conf += f"""
<WSGIInterpreterOptions application-group=alpha>
    WSGIPythonPath {lib}
    WSGIRestrictStdout On
</WSGIInterpreterOptions>
"""
    srv.start(conf)
    a = _get(srv, "/a")
    assert a["group"] == "alpha" and a["found"] == "solelib", a
    assert a["stdout"] == "sys.stdout access restricted by mod_wsgi", a


@pytest.mark.embedded_only
def test_valid_sections_pass_configtest(apache_factory, mode):
    srv = apache_factory()
    rc, out = srv.configtest("""
<WSGIInterpreterOptions>
    WSGIPythonPath /tmp
</WSGIInterpreterOptions>
<WSGIInterpreterOptions process-group=%{GLOBAL} application-group=alpha>
    WSGIPythonPath /tmp:/srv
    WSGIRestrictStdin On
    WSGIRestrictStdout On
    WSGIRestrictSignal Off
    WSGISwitchInterval 0.002
    WSGIPerInterpreterGIL Off
</WSGIInterpreterOptions>
<WSGIInterpreterOptions application-group=%{GLOBAL}>
</WSGIInterpreterOptions>
""")
    assert rc == 0, out
    assert "Syntax OK" in out


@pytest.mark.embedded_only
@pytest.mark.parametrize("fragment,needles", [
    ("<WSGIInterpreterOptions application-group=a>\n  ServerName x\n</WSGIInterpreterOptions>\n",
     ["RW0001", "ServerName is not allowed inside <WSGIInterpreterOptions>", "WSGIPythonPath",
      "Move it outside", "line "]),
    ("<WSGIInterpreterOptions>\n  WSGIPythonHome /usr\n</WSGIInterpreterOptions>\n",
     ["RW0001", "WSGIPythonHome is not allowed inside"]),
    ("<WSGIInterpreterOptions>\n  <Directory /tmp>\n  </Directory>\n</WSGIInterpreterOptions>\n",
     ["RW0001", "<Directory is not allowed inside"]),
    ("<WSGIInterpreterOptions colour=red>\n</WSGIInterpreterOptions>\n",
     ["RW0001", "unknown selector 'colour'", "process-group=NAME"]),
    ("<WSGIInterpreterOptions a=b\n</WSGIInterpreterOptions>\n",
     ["RW0001", "no closing '>'"]),
    ("<WSGIInterpreterOptions alpha>\n</WSGIInterpreterOptions>\n",
     ["RW0001", "not of the form key=value"]),
    ("<WSGIInterpreterOptions application-group=%{ENV:X}>\n</WSGIInterpreterOptions>\n",
     ["RW0001", "only %{GLOBAL} or a plain name"]),
    ("<WSGIInterpreterOptions>\n  WSGIRestrictStdout maybe\n</WSGIInterpreterOptions>\n",
     ["RW0001", "WSGIRestrictStdout", "On or"]),
    ("<WSGIInterpreterOptions>\n  WSGISwitchInterval 0\n</WSGIInterpreterOptions>\n",
     ["RW0001", "WSGISwitchInterval", "seconds > 0"]),
    ("<VirtualHost 127.0.0.1:1>\n<WSGIInterpreterOptions>\n</WSGIInterpreterOptions>\n"
     "</VirtualHost>\n",
     ["RW0001", "main server configuration only", "outside <VirtualHost>"]),
    # httpd's own message: the section is never handed to the module.
    ("<WSGIInterpreterOptions>\n  WSGIPythonPath /tmp\n",
     ["<WSGIInterpreterOptions> was not closed"]),
])
def test_bad_sections_fail_configtest(apache_factory, mode, fragment, needles):
    srv = apache_factory()
    rc, out = srv.configtest(fragment)
    assert rc != 0, out
    for n in needles:
        assert n in out, (n, out)
    assert "Syntax OK" not in out


@pytest.mark.embedded_only
@pytest.mark.parametrize("fragment", [
    "WSGIPerInterpreterGIL On\n",
    "<WSGIInterpreterOptions application-group=a>\n  WSGIPerInterpreterGIL On\n"
    "</WSGIInterpreterOptions>\n",
])
def test_per_interpreter_gil_on_needs_312(apache_factory, mode, fragment):
    """Before Python 3.12 `WSGIPerInterpreterGIL On` fails `apachectl -t` with one RW0044
    line; a 3.12+ build accepts it (test_subinterpreters.py serves own-GIL groups there)."""
    srv = apache_factory()
    rc, out = srv.configtest(fragment)
    if harness.module_python() >= (3, 12):
        assert rc == 0 and "RW" not in out, out
        return
    assert rc != 0, out
    lines = [l for l in out.splitlines() if "RW" in l]
    assert len(lines) == 1, out
    line = lines[0]
    assert re.search(r"RW0044: WSGIPerInterpreterGIL On needs Python 3\.12 or later", line), line
    build = "%d.%d" % harness.app_python_version()
    assert re.search(rf"built for Python {re.escape(build)} \(/\S+python3", line), line
    assert "WSGIPerInterpreterGIL Off" in line, line


def test_unreadable_section_python_path_is_reported(apache_factory, mode):
    """A section's WSGIPythonPath directory that the interpreter's user (www-data) cannot
    reach is reported at `apachectl -t` with RW0042, as the server-level ones are."""
    srv = _server(apache_factory, mode)
    secret = srv.root / "secret"
    (secret / "lib").mkdir(parents=True)
    os.chmod(secret, 0o700)
    conf = _mounts(srv, [("/a", "alpha"), ("/b", "beta")])
    conf += f"""
<WSGIInterpreterOptions application-group=alpha>
    WSGIPythonPath {secret}/lib
</WSGIInterpreterOptions>
"""
    rc, out = srv.configtest(conf)
    lines = [l for l in out.splitlines() if "RW0042" in l]
    assert lines and all("<WSGIInterpreterOptions> WSGIPythonPath entry" in l for l in lines), out
    assert str(secret) in lines[0], out
