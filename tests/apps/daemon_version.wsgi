# Reports its pid and a version string; tests/test_daemon.py rewrites VERSION and bumps the
# file's mtime to check that a changed script restarts the group's daemon processes.
import json
import os

VERSION = "v1"


def application(environ, start_response):
    body = json.dumps({"pid": os.getpid(), "version": VERSION}).encode()
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(body)))])
    return [body]
