"""The mod_rwsgi demo application: a small page, a JSON view of the WSGI environ, and an
echo of a POST body. Served by scripts/demo.sh (rwsgi-express start-server)."""

import json
import os
import sys


def application(environ, start_response):
    path = environ.get("PATH_INFO", "/")
    if path == "/environ":
        safe = {k: v for k, v in environ.items() if isinstance(v, (str, int, bool, tuple))}
        body = json.dumps(safe, indent=2, sort_keys=True).encode()
        ctype = "application/json"
    elif path == "/echo" and environ["REQUEST_METHOD"] == "POST":
        body = environ["wsgi.input"].read()
        ctype = environ.get("CONTENT_TYPE") or "application/octet-stream"
    else:
        body = (
            "Hello from mod_rwsgi!\n"
            "Python %s, pid %d, Apache %s\n"
            "Try /environ, or POST to /echo.\n"
            % (sys.version.split()[0], os.getpid(), ".".join(map(str, environ["apache.version"])))
        ).encode()
        ctype = "text/plain; charset=utf-8"
    start_response("200 OK", [("Content-Type", ctype), ("Content-Length", str(len(body)))])
    return [body]
