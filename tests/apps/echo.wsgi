# Returns the WSGI environ as JSON. str/int/bool/None values are kept, tuples of those become
# lists (their Python type is reported in "__types__"), anything else is repr()'d.
# Query "read=1" also reads the request body (reported as "__body__", latin-1).
import json
import os
import threading


def _conv(v):
    if v is None or isinstance(v, (str, bool, int)):
        return v
    if isinstance(v, tuple) and all(x is None or isinstance(x, (str, bool, int)) for x in v):
        return list(v)
    return {"__repr__": repr(v)}


def application(environ, start_response):
    out = {k: _conv(v) for k, v in environ.items()}
    out["__types__"] = {k: type(v).__name__ for k, v in environ.items()}
    out["__pid__"] = os.getpid()
    out["__thread__"] = threading.get_ident()
    if "read=1" in environ.get("QUERY_STRING", ""):
        out["__body__"] = environ["wsgi.input"].read().decode("latin-1")
    body = json.dumps(out, sort_keys=True).encode("utf-8")
    start_response("200 OK", [
        ("Content-Type", "application/json"),
        ("Content-Length", str(len(body))),
        ("X-Request-Method", environ["REQUEST_METHOD"]),
        ("X-Pid", str(os.getpid())),
    ])
    return [body]
