# Fault-injection application (tests/test_faults.py, tests/test_soak.py). Routes by PATH_INFO:
#   /hello               "hello" (the soak's request)
#   /pid                 the serving process's pid
#   /segv                dereferences NULL through ctypes: the process dies with SIGSEGV
#   /stream?size=N&tag=T N bytes (64 KiB pieces) from an iterator whose close() appends
#                        "closed after K pieces" to <state>/close-T
#   /upload?tag=T        appends its pid to <state>/started-T, reads wsgi.input in 64 KiB
#                        blocks until EOF and appends the outcome ("eof N" or
#                        "error <Class> oserror=<bool> N") to <state>/upload-T; answers
#                        {"length": N}
#   /big?size=N          N bytes from a generator, no close record (memory tests)
#   /hang?tag=T          appends its pid to <state>/hang-T, then sleeps in 50 ms steps for up
#                        to 300 s (a hung application, bounded so no test leaves it behind)
import json
import os
import time
from urllib.parse import parse_qs

STATE = "@STATE@"
PIECE = b"x" * 65536


def _append(name, line):
    with open(os.path.join(STATE, name), "a") as f:
        f.write(line + "\n")


class Stream:
    """A streamed body whose close() is recorded, so a test sees that the server ended the
    iteration and released the application's resources."""

    def __init__(self, size, tag):
        self.left = size
        self.sent = 0
        self.tag = tag

    def __iter__(self):
        return self

    def __next__(self):
        if self.left <= 0:
            raise StopIteration
        n = min(self.left, len(PIECE))
        self.left -= n
        self.sent += 1
        return PIECE[:n]

    def close(self):
        if self.tag:
            _append("close-" + self.tag, "closed after %d pieces" % self.sent)


def _big(size):
    while size > 0:
        n = min(size, len(PIECE))
        size -= n
        yield PIECE[:n]


def application(environ, start_response):
    path = environ.get("PATH_INFO", "")
    q = {k: v[-1] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
    tag = q.get("tag", "")
    if not tag.isalnum():
        tag = ""

    if path == "/segv":
        import ctypes
        ctypes.string_at(0)

    if path == "/stream":
        size = int(q.get("size", "0"))
        start_response("200 OK", [("Content-Type", "application/octet-stream"),
                                  ("Content-Length", str(size))])
        return Stream(size, tag)

    if path == "/big":
        size = int(q.get("size", "0"))
        start_response("200 OK", [("Content-Type", "application/octet-stream"),
                                  ("Content-Length", str(size))])
        return _big(size)

    if path == "/upload":
        inp = environ["wsgi.input"]
        n = 0
        if tag:
            _append("started-" + tag, str(os.getpid()))
        try:
            while True:
                block = inp.read(65536)
                if not block:
                    break
                n += len(block)
        except Exception as e:  # the outcome is what the test checks
            if tag:
                _append("upload-" + tag, "error %s oserror=%s %d"
                        % (type(e).__name__, isinstance(e, OSError), n))
            raise
        if tag:
            _append("upload-" + tag, "eof %d" % n)
        body = json.dumps({"length": n}).encode()
        start_response("200 OK", [("Content-Type", "application/json"),
                                  ("Content-Length", str(len(body)))])
        return [body]

    if path == "/hang":
        if tag:
            _append("hang-" + tag, str(os.getpid()))
        for _ in range(6000):
            time.sleep(0.05)

    if path == "/sleep":
        time.sleep(float(q.get("s", "0.01")))

    body = b"hello" if path == "/hello" else str(os.getpid()).encode()
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(body)))])
    return [body]
