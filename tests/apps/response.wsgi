# Response-side behaviours, routed by PATH_INFO. Query parameters:
#   tag=NAME   name of the close() record written to the state dir (@STATE@/close-NAME)
#   path=FILE  file for the file_wrapper routes; cl=N declared Content-Length
#   id=N       request id for /ctype
import json
import os
import random
import sys
import threading
import time
from urllib.parse import parse_qs

STATE = "@STATE@"


class RwsgiTestError(Exception):
    pass


class CloseError(Exception):
    pass


def _q(environ):
    return {k: v[-1] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}


def _record_close(tag, what="closed"):
    if tag:
        path = os.path.join(STATE, "close-" + tag)
        with open(path, "a") as f:
            f.write(what + "\n")


class Body:
    """An iterable with close() that records the call in the state dir."""

    def __init__(self, chunks, tag, fail_after=None, sleep=0.0, close_raises=False):
        self.chunks = list(chunks)
        self.tag = tag
        self.fail_after = fail_after
        self.sleep = sleep
        self.close_raises = close_raises

    def __iter__(self):
        for i, c in enumerate(self.chunks):
            if self.fail_after is not None and i == self.fail_after:
                raise RwsgiTestError("boom-after-first-chunk")
            if i and self.sleep:
                time.sleep(self.sleep)
            yield c

    def close(self):
        _record_close(self.tag)
        if self.close_raises:
            raise CloseError("boom-in-close")


def _text(start_response, status, text, extra=()):
    body = text.encode("utf-8") if isinstance(text, str) else text
    start_response(status, [("Content-Type", "text/plain; charset=utf-8"),
                            ("Content-Length", str(len(body)))] + list(extra))
    return [body]


def _bad_header(start_response, name, value):
    """Try to send a bad header; report whether start_response refused it."""
    try:
        start_response("200 OK", [("Content-Type", "text/plain"), (name, value)])
    except Exception as e:
        start_response("200 OK", [("Content-Type", "text/plain")], sys.exc_info())
        return [("rejected:%s" % type(e).__name__).encode()]
    return [b"accepted"]


def application(environ, start_response):
    path = environ.get("PATH_INFO", "")
    q = _q(environ)
    tag = q.get("tag")

    if path == "/ok":
        return _text(start_response, "200 OK", "ok\n")

    if path == "/dup-headers":
        # Repeated headers, each kept as its own line (not comma-joined).
        start_response("200 OK", [("Content-Type", "text/plain"), ("X-Multi", "one"),
                                  ("X-Multi", "two"), ("Set-Cookie", "a=1"),
                                  ("Set-Cookie", "b=2")])
        return [b"dup\n"]

    if path == "/ctype-case":
        start_response("200 OK", [("Content-Type", "Text/HTML; Charset=ISO-8859-1")])
        return [b"<p>case</p>"]

    if path == "/location-200":
        # A Location header with a 200: a plain response, not an internal redirect.
        start_response("200 OK", [("Content-Type", "text/plain"), ("Location", "/r/ok")])
        return [b"not redirected\n"]

    if path == "/read-body":
        data = environ["wsgi.input"].read()
        return _text(start_response, "200 OK", f"read {len(data)}\n")

    if path == "/status-custom":
        return _text(start_response, "299 Custom Thing", "custom status\n")

    if path == "/status-latin1":
        # PEP 3333: the status is a latin-1 "native string"; it goes out as latin-1 bytes.
        return _text(start_response, "299 Caf\u00e9 cr\u00e8me", "latin-1 reason\n")

    if path == "/hdr-crlf":
        return _bad_header(start_response, "X-Bad", "a\r\nX-Injected: 1")
    if path == "/hdr-lf":
        return _bad_header(start_response, "X-Bad", "a\nX-Injected: 1")
    if path == "/hdr-nonlatin1":
        return _bad_header(start_response, "X-Bad", "euro \u20ac")
    if path == "/hdr-latin1":
        return _bad_header(start_response, "X-Latin", "caf\u00e9")
    if path == "/hdr-connection":
        return _bad_header(start_response, "Connection", "close")
    if path == "/hdr-colon":
        return _bad_header(start_response, "X-Injected:1 X-Bad", "v")
    if path == "/hdr-bytes":
        return _bad_header(start_response, "X-Bad", b"bytes-value")

    if path == "/twice":
        start_response("200 OK", [("Content-Type", "text/plain")])
        try:
            start_response("201 Created", [("Content-Type", "text/plain")])
        except Exception as e:
            mro = ",".join(c.__name__ for c in type(e).__mro__)
            return [("second-raised:%s:%s" % (type(e).__name__, mro)).encode()]
        return [b"second-accepted"]

    if path == "/exc-info-before-headers":
        start_response("200 OK", [("Content-Type", "text/plain"), ("X-First", "1")])
        try:
            raise RwsgiTestError("replaced")
        except RwsgiTestError:
            start_response("503 Replaced", [("Content-Type", "text/plain")], sys.exc_info())
        return [b"replaced-ok"]

    if path == "/exc-info-after-headers":
        start_response("200 OK", [("Content-Type", "text/plain")])

        def gen():
            yield b"first;"
            try:
                raise ValueError("boom-after-headers")
            except ValueError:
                try:
                    start_response("500 Oops", [("Content-Type", "text/plain")], sys.exc_info())
                except ValueError as e:
                    yield ("reraised:%s:%s" % (type(e).__name__, e)).encode()
                except Exception as e:
                    yield ("other:%s:%s" % (type(e).__name__, e)).encode()
                else:
                    yield b"not-raised"
        return gen()

    if path == "/write":
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"hello ")
        write(b"world")
        return [b"!"]

    if path == "/stream":
        # three chunks 1.5 s apart, no Content-Length
        start_response("200 OK", [("Content-Type", "text/plain")])
        return Body([b"chunk1\n", b"chunk2\n", b"chunk3\n"], tag, sleep=float(q.get("sleep", "1.5")))

    if path == "/close":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return Body([b"a", b"b", b"c"], tag)

    if path == "/close-list":
        # a plain list has no close(): must not break anything
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"x", b"y"]

    if path == "/close-raises":
        headers = [("Content-Type", "text/plain")]
        if "cl" in q:
            headers.append(("Content-Length", q["cl"]))
        start_response("200 OK", headers)
        return Body([b"body-before-close"] if q.get("empty") != "1" else [], tag,
                    close_raises=True)

    if path == "/cl-less":
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "5")])
        return Body([b"hello", b" world"], tag)

    if path == "/cl-more":
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "100")])
        return Body([b"short"], tag)

    if path == "/error-after-chunk":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return Body([b"first-chunk;", b"never"], tag, fail_after=1)

    if path == "/error-before-start":
        raise RwsgiTestError("boom-before-start")

    if path == "/error-after-start":
        start_response("200 OK", [("Content-Type", "text/plain")])
        raise RwsgiTestError("boom-after-start")

    if path == "/bad-status":
        start_response("2000 Way Too Big", [("Content-Type", "text/plain")])
        return [b"x"]

    if path == "/bad-body-type":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return ["a str, not bytes"]

    if path == "/filewrapper":
        fpath = q["path"]
        headers = [("Content-Type", "application/octet-stream")]
        if "cl" in q:
            headers.append(("Content-Length", q["cl"]))
        start_response("200 OK", headers)
        f = open(fpath, "rb")
        if "seek" in q:
            f.seek(int(q["seek"]))
        if "unlink" in q:
            os.unlink(fpath)  # the open file must still be served whole
        fw = environ["wsgi.file_wrapper"]
        wrapper = fw(f, int(q.get("blksize", "8192")))
        if "tell" in q:
            # Records where the file's position is when the server closes the wrapper.
            class Recorder:
                def __iter__(self):
                    return iter(wrapper)

                def close(self):
                    with open(q["tell"], "w") as out:
                        out.write(str(f.tell()))
                    wrapper.close()

            return Recorder()
        return wrapper

    if path == "/filewrapper-bytesio":
        import io
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return environ["wsgi.file_wrapper"](io.BytesIO(b"0123456789" * 1000), 1000)

    if path == "/errors-write":
        marker = q.get("marker", "RWSGI-ERRORS-MARKER")
        environ["wsgi.errors"].write(marker + " via wsgi.errors\n")
        environ["wsgi.errors"].flush()
        return _text(start_response, "200 OK", "logged\n")

    if path == "/print":
        marker = q.get("marker", "RWSGI-PRINT-MARKER")
        res = {}
        for name, stream in (("stdout", "stdout"), ("stderr", "stderr")):
            try:
                print(marker + " via " + name, file=getattr(sys, stream), flush=True)
                res[name] = "ok"
            except Exception as e:
                mro = ",".join(c.__name__ for c in type(e).__mro__)
                res[name] = "raised:%s:%s:%s" % (type(e).__name__, mro, e)
        return _text(start_response, "200 OK", json.dumps(res))

    if path == "/stdin":
        try:
            data = sys.stdin.read(1)
            res = "ok:%r" % (data,)
        except Exception as e:
            res = "raised:%s:%s" % (type(e).__name__, e)
        return _text(start_response, "200 OK", res)

    if path == "/ctype":
        rid = q["id"]
        time.sleep(random.random() * 0.003)
        body = ("id=%s pid=%d thread=%d\n" % (rid, os.getpid(), threading.get_ident())).encode()
        start_response("200 OK", [("Content-Type", "application/x-rwsgi-" + rid),
                                  ("X-Rwsgi-Id", rid),
                                  ("Content-Length", str(len(body)))])
        time.sleep(random.random() * 0.003)
        return [body]

    if path == "/head":
        body = b"0123456789" * 10
        start_response("200 OK", [("Content-Type", "text/plain"),
                                  ("Content-Length", str(len(body))),
                                  ("X-Request-Method", environ["REQUEST_METHOD"])])
        return [body]

    if path == "/sleep":
        time.sleep(float(q.get("t", "1")))
        return _text(start_response, "200 OK", "slept\n")

    start_response("404 Not Found", [("Content-Type", "text/plain")])
    return [b"no such route: " + path.encode("latin-1")]


_original_application = application


def application(environ, start_response):
    # Declared lengths without a body: legitimate for HEAD (Werkzeug answers HEAD this way) and
    # for 204/304; the server must pass them on unchanged.
    path = environ.get("PATH_INFO", "")
    if path == "/head-cl-no-body":
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "1234")])
        return []
    if path == "/not-modified-cl":
        start_response("304 Not Modified", [("Content-Length", "1234"), ("ETag", '"v1"')])
        return []
    return _original_application(environ, start_response)
