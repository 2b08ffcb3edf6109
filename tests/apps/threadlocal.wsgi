# Per-thread counter: with persistent per-thread Python thread states, the same Apache
# thread sees its counter grow across requests.
import json
import os
import threading

_local = threading.local()


def application(environ, start_response):
    _local.count = getattr(_local, "count", 0) + 1
    body = json.dumps({
        "pid": os.getpid(),
        "thread": threading.get_ident(),
        "native": threading.get_native_id(),
        "count": _local.count,
        "multithread": environ["wsgi.multithread"],
        "multiprocess": environ["wsgi.multiprocess"],
        "run_once": environ["wsgi.run_once"],
    }).encode()
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(body)))])
    return [body]
