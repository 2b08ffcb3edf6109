"""Example WSGI application shipped in the mod_rwsgi Docker image (/srv/app/app.wsgi; served by
the daemon process group `app`, or embedded in the httpd children with -DRWSGI_EMBEDDED). Mount
your own directory on /srv/app with an app.wsgi in it to replace it."""

import sys


def application(environ, start_response):
    group = environ.get("mod_wsgi.process_group") or ""
    mode = "daemon (process group %s)" % group if group else "embedded"
    body = (
        "Hello from mod_rwsgi!\n"
        "mode: %s\n"
        "python: %s\n"
        "path: %s\n" % (mode, sys.version.split()[0], environ.get("PATH_INFO") or "/")
    ).encode("utf-8")
    start_response("200 OK", [("Content-Type", "text/plain; charset=utf-8"),
                              ("Content-Length", str(len(body)))])
    return [body]
