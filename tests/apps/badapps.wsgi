# Misbehaving WSGI applications, one per PATH_INFO (used by tests/test_badapps.py; runs in the
# httpd child in embedded mode, in the daemon process in daemon mode). Query parameters:
#   tag=NAME   names the records this request leaves in the state dir (@STATE@/<what>-NAME)
# /ok answers 200 with the process id, so a test can tell that the same server keeps serving.
import os
import sys
import threading
import time
from urllib.parse import parse_qs

STATE = "@STATE@"


class BadAppError(Exception):
    pass


def _q(environ):
    return {k: v[-1] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}


def _record(what, tag, text="1"):
    if tag:
        with open(os.path.join(STATE, "%s-%s" % (what, tag)), "a") as f:
            f.write(text + "\n")


PLAIN = [("Content-Type", "text/plain")]


class Closing:
    """An iterable that records close() (and how far iteration got) in the state dir."""

    def __init__(self, gen, tag):
        self.gen = gen
        self.tag = tag

    def __iter__(self):
        return iter(self.gen)

    def close(self):
        _record("close", self.tag)


class CloseRaises:
    def __init__(self, tag):
        self.tag = tag

    def __iter__(self):
        yield b"body-before-close"

    def close(self):
        _record("close", self.tag)
        raise BadAppError("boom-in-close")


class StrRaises(Exception):
    def __str__(self):
        raise RuntimeError("str() of this exception raises too")


class NotAFile:
    """Has neither read() nor fileno(): not a file-like object."""


def endless(tag):
    """A generator that never ends by itself (bounded only as a safety net for the test)."""
    i = 0
    try:
        while i < 6000:   # ~60 s at 10 ms a block: the server must stop it long before
            yield b"x" * 1024 + b"\n"
            i += 1
            time.sleep(0.01)
        _record("endless-ran-out", tag, str(i))
    finally:
        _record("endless-closed", tag, str(i))


def routes(environ, start_response, path, q, tag):
    # ---- the body iterable
    if path == "/str-item":
        start_response("200 OK", PLAIN)
        return ["a str, not bytes"]
    if path == "/none-item":
        start_response("200 OK", PLAIN)
        return [None]
    if path == "/bytearray-item":
        start_response("200 OK", PLAIN)
        return [bytearray(b"a bytearray")]
    if path == "/memoryview-item":
        start_response("200 OK", PLAIN)
        return [memoryview(b"a memoryview")]
    if path == "/returns-none":
        start_response("200 OK", PLAIN)
        return None
    if path == "/returns-int":
        start_response("200 OK", PLAIN)
        return 42
    if path == "/no-start-response":
        return [b"body without a head"]
    if path == "/no-start-response-empty":
        return []

    # ---- the status
    if path == "/status-nondigit":
        start_response("2x0 OK", PLAIN)
        return [b"x"]
    if path == "/status-no-reason":
        start_response("200", PLAIN)
        return [b"x"]
    if path == "/status-not-str":
        start_response(200, PLAIN)
        return [b"x"]
    if path == "/status-crlf":
        start_response("200 OK\r\nX-Injected: 1", PLAIN)
        return [b"x"]

    # ---- the headers
    if path == "/hdr-nonlatin1":
        start_response("200 OK", PLAIN + [("X-Bad", "euro \u20ac")])
        return [b"x"]
    if path == "/hdr-crlf-value":
        start_response("200 OK", PLAIN + [("X-Bad", "a\r\nX-Injected: 1")])
        return [b"x"]
    if path == "/hdr-crlf-name":
        start_response("200 OK", PLAIN + [("X-Bad\r\nX-Injected", "1")])
        return [b"x"]
    if path == "/hdr-hop":
        # one of Connection, Transfer-Encoding, Keep-Alive, Upgrade, TE, Trailer, ...
        start_response("200 OK", PLAIN + [(q["name"], q.get("value", "x"))])
        return [b"x"]
    if path == "/hdr-colon":
        start_response("200 OK", PLAIN + [("X-Injected: 1\r\nX-Bad", "v")])
        return [b"x"]
    if path == "/hdr-space":
        start_response("200 OK", PLAIN + [("X Bad", "v")])
        return [b"x"]
    if path == "/hdr-name-not-str":
        start_response("200 OK", PLAIN + [(b"X-Bad", "v")])
        return [b"x"]
    if path == "/hdr-value-not-str":
        start_response("200 OK", PLAIN + [("X-Bad", 5)])
        return [b"x"]
    if path == "/hdr-not-list":
        start_response("200 OK", (("Content-Type", "text/plain"),))
        return [b"x"]
    if path == "/hdr-item-not-tuple":
        start_response("200 OK", [["Content-Type", "text/plain"]])
        return [b"x"]
    if path == "/hdr-huge":
        n = int(q.get("n", "10000"))
        size = int(q.get("size", "10"))
        start_response("200 OK", PLAIN + [("X-H%d" % i, "v" * size) for i in range(n)])
        return [b"huge-head-body"]

    # ---- exceptions and start_response misuse
    if path == "/raise-before-start":
        raise BadAppError("boom-before-start")
    if path == "/raise-in-iter-before-first-byte":
        start_response("200 OK", PLAIN)

        def gen():
            raise BadAppError("boom-before-first-byte")
            yield b"never"
        return Closing(gen(), tag)
    if path == "/raise-in-iter-after-first-byte":
        start_response("200 OK", PLAIN)

        def gen():
            yield b"first-chunk;"
            raise BadAppError("boom-after-first-byte")
        return Closing(gen(), tag)
    if path == "/raise-in-close":
        start_response("200 OK", PLAIN)
        return CloseRaises(tag)
    if path == "/start-response-twice":
        start_response("200 OK", PLAIN)
        start_response("201 Created", PLAIN)   # raises: not caught by the app
        return [b"x"]
    if path == "/exc-info-after-headers":
        start_response("200 OK", PLAIN)

        def gen():
            yield b"first;"
            try:
                raise BadAppError("boom-after-headers")
            except BadAppError:
                # the headers are out: this re-raises BadAppError, which the app lets through
                start_response("500 Oops", PLAIN, sys.exc_info())
            yield b"never"
        return gen()
    if path == "/write-after-iteration-started":
        write = start_response("200 OK", PLAIN)

        def gen():
            yield b"first;"
            write(b"written;")
            yield b"last"
        return gen()
    if path == "/write-after-end":
        # write() kept past the end of its request and called from another thread once the
        # test says the response is complete (@STATE@/go-TAG): it must raise, never send.
        write = start_response("200 OK", PLAIN)

        def late():
            go = os.path.join(STATE, "go-" + tag)
            for _ in range(400):          # at most 20 s
                if os.path.exists(go):
                    break
                time.sleep(0.05)
            try:
                write(b"late data")
                _record("late", tag, "accepted")
            except Exception as e:
                _record("late", tag, "raised:%s:%s" % (type(e).__name__, e))
        threading.Thread(target=late, daemon=True).start()

        def gen():
            yield b"kept"
        return gen()
    if path == "/endless":
        start_response("200 OK", PLAIN)
        return Closing(endless(tag), tag)
    if path == "/file-wrapper-non-file":
        start_response("200 OK", PLAIN)
        return environ["wsgi.file_wrapper"](NotAFile())
    if path == "/read-past-length":
        inp = environ["wsgi.input"]
        a = inp.read(1 << 20)
        b = inp.read(1 << 20)
        c = inp.readline()
        body = ("%d:%r:%r:%r" % (len(a), a[:20], b, c)).encode()
        start_response("200 OK", PLAIN + [("Content-Length", str(len(body)))])
        return [body]
    if path == "/cl-more":
        start_response("200 OK", PLAIN + [("Content-Length", "100")])
        return Closing([b"short"], tag)
    if path == "/cl-less":
        start_response("200 OK", PLAIN + [("Content-Length", "5")])
        return Closing([b"hello", b" world, never sent"], tag)
    if path == "/sys-exit":
        _record("ran", tag, str(os.getpid()))
        sys.exit(3)
    if path == "/system-exit-after-start":
        start_response("200 OK", PLAIN)
        raise SystemExit("exit from the app")
    if path == "/keyboard-interrupt":
        _record("ran", tag, str(os.getpid()))
        raise KeyboardInterrupt()
    if path == "/close-stdout":
        sys.stdout.close()
        print("RWSGI-after-stdout-close %s" % tag)
        sys.stderr.close()
        print("RWSGI-after-stderr-close %s" % tag, file=sys.stderr)
        start_response("200 OK", PLAIN)
        return [b"closed stdout and stderr"]
    if path == "/exc-str-raises":
        raise StrRaises()
    if path == "/exc-non-utf8":
        raise BadAppError("not utf-8: \udcff\udcfe and a NUL \x00 and bytes", b"\xff\xfe")
    return None


def application(environ, start_response):
    path = environ.get("PATH_INFO", "")
    q = _q(environ)
    tag = q.get("tag")
    if path == "/ok":
        body = ("ok pid=%d\n" % os.getpid()).encode()
        start_response("200 OK", PLAIN + [("Content-Length", str(len(body)))])
        return [body]
    if path == "/print":
        print("RWSGI-print %s" % tag)
        print("RWSGI-eprint %s" % tag, file=sys.stderr)
        start_response("200 OK", PLAIN)
        return [b"printed"]
    result = routes(environ, start_response, path, q, tag)
    if result is None and path not in ("/returns-none",):
        start_response("404 Not Found", PLAIN)
        return [b"no such route: " + path.encode("latin-1")]
    return result
