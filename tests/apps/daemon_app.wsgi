# Daemon-mode test application (tests/test_daemon.py). Routes by PATH_INFO:
#   /info           JSON: pid, ppid, uid/gid, wsgi.* flags, mod_wsgi.process_group
#   /sleep?s=N      sleeps N seconds, then answers like /info
# Any route with ?mark=NAME first appends the pid to <state>/mark-NAME, so a test can count
# how many times a request was run.
#   /exit-before    the process exits (os._exit(1)) before start_response
#   /exit-mid[?cl=1] sends a 64 KiB chunk, then the process exits (optionally with a
#                   Content-Length promising 1 MiB)
#   /upload         reads wsgi.input with read(65536) until EOF; JSON: length, sha256
#   /hold-gil?s=N   holds the GIL for N seconds (libc sleep through ctypes.PyDLL)
#   /big?mb=N       streams N MiB (1 MiB blocks)
#   /gaps           streams b"a", 0.3 s later b"b", 3 s later b"c"
#   /spin?s=N       loops in Python for N seconds, swallowing every Exception (not the
#                   BaseException mod_wsgi.RequestTimeout), then answers like /info
import hashlib
import json
import os
import time
from urllib.parse import parse_qs


def _info(environ):
    return {
        "pid": os.getpid(),
        "ppid": os.getppid(),
        "uid": os.getuid(),
        "euid": os.geteuid(),
        "gid": os.getgid(),
        "egid": os.getegid(),
        "multithread": environ.get("wsgi.multithread"),
        "multiprocess": environ.get("wsgi.multiprocess"),
        "run_once": environ.get("wsgi.run_once"),
        "process_group": environ.get("mod_wsgi.process_group"),
    }


def _json(start_response, obj, status="200 OK"):
    body = json.dumps(obj).encode()
    start_response(status, [("Content-Type", "application/json"),
                            ("Content-Length", str(len(body)))])
    return [body]


def application(environ, start_response):
    path = environ.get("PATH_INFO", "")
    q = parse_qs(environ.get("QUERY_STRING", ""))
    mark = q.get("mark", [""])[0]
    if mark.isalnum():
        with open("@STATE@/mark-%s" % mark, "a") as f:
            f.write("%d\n" % os.getpid())

    if path == "/exit-before":
        os._exit(1)

    if path == "/exit-mid":
        headers = [("Content-Type", "application/octet-stream")]
        if q.get("cl"):
            headers.append(("Content-Length", str(1 << 20)))
        start_response("200 OK", headers)

        def gen():
            yield b"x" * 65536
            time.sleep(0.5)  # let the first chunk reach the client
            os._exit(1)
            yield b"never"

        return gen()

    if path == "/sleep":
        time.sleep(float(q.get("s", ["1"])[0]))
        return _json(start_response, _info(environ))

    if path == "/big":
        n = int(q.get("mb", ["64"])[0])
        start_response("200 OK", [("Content-Type", "application/octet-stream"),
                                  ("Content-Length", str(n << 20))])
        block = b"x" * (1 << 20)
        return (block for _ in range(n))

    if path == "/gaps":
        def gen():
            yield b"a"
            time.sleep(0.3)
            yield b"b"
            time.sleep(3)
            yield b"c"
        start_response("200 OK", [("Content-Type", "text/plain")])
        return gen()

    if path == "/spin":
        end = time.monotonic() + float(q.get("s", ["30"])[0])
        while time.monotonic() < end:
            try:
                time.sleep(0.01)
            except Exception:
                pass
        return _json(start_response, _info(environ))

    if path == "/hold-gil":
        import ctypes
        # PyDLL keeps the GIL during the foreign call: no other Python thread can run.
        ctypes.PyDLL(None).sleep(int(q.get("s", ["5"])[0]))
        return _json(start_response, _info(environ))

    if path == "/upload":
        inp = environ["wsgi.input"]
        h = hashlib.sha256()
        n = 0
        while True:
            block = inp.read(65536)
            if not block:
                break
            n += len(block)
            h.update(block)
        return _json(start_response, {"length": n, "sha256": h.hexdigest(), "pid": os.getpid()})

    return _json(start_response, _info(environ))
