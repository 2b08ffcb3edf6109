# An application wrapped in wsgiref.validate.validator: any WSGI protocol violation by the
# server raises AssertionError (500 and a traceback in the error log), and an iterable that
# the server never closes prints "Iterator garbage collected without being closed".
import json
from wsgiref.validate import validator


def inner(environ, start_response):
    path = environ.get("PATH_INFO", "")
    body = b""
    if environ["REQUEST_METHOD"] == "POST":
        n = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(n)
        rest = environ["wsgi.input"].read(1)
        lines = environ["wsgi.input"].readlines()
        assert rest == b"" and lines == [], (rest, lines)
    environ["wsgi.errors"].write("validated app saw %s %s\n" % (environ["REQUEST_METHOD"], path))
    environ["wsgi.errors"].writelines(["validated writelines\n"])
    environ["wsgi.errors"].flush()
    if path == "/stream":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return (b"part%d;" % i for i in range(5))
    if path == "/write":
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"written;")
        return [b"returned"]
    if path == "/empty":
        start_response("204 No Content", [])
        return []
    out = json.dumps({"method": environ["REQUEST_METHOD"], "len": len(body),
                      "body": body.decode("latin-1")}).encode()
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(out)))])
    return [out]


application = validator(inner)
