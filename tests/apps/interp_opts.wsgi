# Reports what <WSGIInterpreterOptions> changed in the interpreter serving the request: whether
# a module only on a section's WSGIPythonPath is importable, where its directory sits on
# sys.path, and whether writing sys.stdout is allowed.
import json
import sys


def application(environ, start_response):
    try:
        import rwsgi_optmod

        found = rwsgi_optmod.WHERE
    except ImportError:
        found = None
    try:
        print("interp_opts.wsgi: stdout from %r" % environ["mod_wsgi.application_group"])
        stdout = "ok"
    except OSError as e:
        stdout = str(e)
    body = json.dumps({
        "group": environ["mod_wsgi.application_group"],
        "found": found,
        "path": sys.path,
        "stdout": stdout,
        "switch": sys.getswitchinterval(),
    }).encode()
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(body)))])
    return [body]
