# Benchmark application for scripts/bench.sh (bench/bench.py): the same file runs under
# mod_rwsgi and mod_wsgi, in embedded mode (httpd child) and daemon mode (daemon process).
import os

HELLO = b"Hello, world!"                  # 13 bytes
BODY_64K = b"x" * 65536
BIG_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "64m.bin")


def hello(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", "13")])
    return [HELLO]


def body64k(environ, start_response):
    start_response("200 OK", [("Content-Type", "application/octet-stream"),
                              ("Content-Length", "65536")])
    return [BODY_64K]


def echo(environ, start_response):
    n = int(environ.get("CONTENT_LENGTH") or 0)
    data = environ["wsgi.input"].read(n)
    start_response("200 OK", [("Content-Type", "application/octet-stream"),
                              ("Content-Length", str(len(data)))])
    return [data]


def file64m(environ, start_response):
    f = open(BIG_FILE, "rb")
    size = os.fstat(f.fileno()).st_size
    start_response("200 OK", [("Content-Type", "application/octet-stream"),
                              ("Content-Length", str(size))])
    return environ["wsgi.file_wrapper"](f, 65536)


ROUTES = {"/hello": hello, "/64k": body64k, "/echo": echo, "/file64m": file64m}


def application(environ, start_response):
    handler = ROUTES.get(environ.get("PATH_INFO", ""))
    if handler is None:
        start_response("404 Not Found", [("Content-Type", "text/plain"),
                                         ("Content-Length", "9")])
        return [b"not found"]
    return handler(environ, start_response)
