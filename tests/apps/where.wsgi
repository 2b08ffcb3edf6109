# Reports the interpreter's identity and writes marker lines through wsgi.errors, print() and
# sys.stderr (query "tag=..."), for the virtual-host logging and WSGIPythonHome tests.
import json
import os
import sys


def application(environ, start_response):
    tag = environ.get("QUERY_STRING", "").partition("tag=")[2] or "none"
    environ["wsgi.errors"].write("errors-line %s\n" % tag)
    print("print-line %s" % tag)
    sys.stderr.write("stderr-line %s\n" % tag)
    try:
        import venvmarker  # installed only in the test's virtual environment
        marker = venvmarker.VALUE
    except ImportError:
        marker = None
    body = json.dumps({
        "prefix": sys.prefix,
        "base_prefix": sys.base_prefix,
        "executable": sys.executable,
        "marker": marker,
        "pid": os.getpid(),
    }).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]
