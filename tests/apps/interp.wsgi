# Reports which interpreter serves the request: its identity, module-level and per-thread
# counters, and the request objects' types (mod_rwsgi's own classes in the main interpreter,
# the bootstrap's shims in a sub-interpreter).
import json
import os
import sys
import threading

import mod_wsgi

COUNT = 0
_local = threading.local()
_marker = sys.modules.setdefault("_rwsgi_interp_marker", type(sys)("_rwsgi_interp_marker"))


def application(environ, start_response):
    global COUNT
    COUNT += 1
    _local.count = getattr(_local, "count", 0) + 1
    _marker.hits = getattr(_marker, "hits", 0) + 1
    body_in = environ["wsgi.input"].read()
    lines = list(environ["wsgi.input"])
    environ["wsgi.errors"].write("interp.wsgi: errors line from group %r\n"
                                 % environ["mod_wsgi.application_group"])
    print("interp.wsgi: stdout line from group %r" % environ["mod_wsgi.application_group"])
    body = json.dumps({
        "pid": os.getpid(),
        "native": threading.get_native_id(),
        "sys_id": id(sys),
        "count": COUNT,
        "local": _local.count,
        "marker_hits": _marker.hits,
        "group": environ["mod_wsgi.application_group"],
        "module_group": mod_wsgi.application_group,
        "input": body_in.decode(),
        "more_lines": len(lines),
        "input_type": type(environ["wsgi.input"]).__name__,
        "input_module": type(environ["wsgi.input"]).__module__,
        "file_wrapper": environ["wsgi.file_wrapper"].__name__,
    }).encode()
    write = start_response("200 OK", [("Content-Type", "application/json"),
                                      ("Content-Length", str(len(body)))])
    write(body[:5])
    return [body[5:]]
