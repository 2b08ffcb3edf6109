# Reports interpreter-wide settings (for WSGIPython* directives) and sys.stdin/stdout use.
import json
import os
import sys
import warnings


def application(environ, start_response):
    try:
        import rwsgi_pathmod  # found only through WSGIPythonPath
        pathmod = rwsgi_pathmod.VALUE
    except ImportError as e:
        pathmod = "ImportError: %s" % e
    out = {
        "optimize": sys.flags.optimize,
        "debug_builtin": __debug__,
        "dont_write_bytecode": sys.dont_write_bytecode,
        "path": sys.path,
        "pathmod": pathmod,
        "hash_abc": hash("abc"),
        "hash_randomization": sys.flags.hash_randomization,
        "warnings": [str(f) for f in warnings.filters[:5]],
        "executable": sys.executable,
        "version": list(sys.version_info[:3]),
        "preloaded": getattr(sys, "_rwsgi_preloaded_pid", None),
        "pid": os.getpid(),
    }
    body = json.dumps(out).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]
