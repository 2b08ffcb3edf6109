# Exercises wsgi.input; routed by PATH_INFO. Responds with JSON describing what it saw,
# except /echo which returns the body unchanged.
import json
from urllib.parse import parse_qs


def application(environ, start_response):
    inp = environ["wsgi.input"]
    path = environ.get("PATH_INFO", "")
    q = {k: v[-1] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
    parts = []
    error = None
    try:
        if path == "/echo":
            data = inp.read()
            start_response("200 OK", [("Content-Type", "application/octet-stream"),
                                      ("Content-Length", str(len(data)))])
            return [data]
        elif path == "/digest":
            # readline(), then read(n) for each n in sizes=, then read(): lengths and a hash.
            import hashlib
            pieces = [inp.readline()]
            pieces += [inp.read(int(n)) for n in q.get("sizes", "").split(",") if n]
            pieces.append(inp.read())
            out = json.dumps({"lengths": [len(p) for p in pieces],
                              "sha256": hashlib.sha256(b"".join(pieces)).hexdigest()}).encode()
            start_response("200 OK", [("Content-Type", "application/json")])
            return [out]
        elif path == "/read":
            parts.append(inp.read())
            parts.append(inp.read())  # at EOF: b""
        elif path == "/read-none":
            parts.append(inp.read(None))
        elif path == "/read-neg":
            parts.append(inp.read(-1))
        elif path == "/read-n":
            n = int(q.get("n", "3"))
            for _ in range(10000):
                p = inp.read(n)
                parts.append(p)
                if not p:
                    break
        elif path == "/readline":
            size = int(q["size"]) if "size" in q else None
            for _ in range(10000):
                p = inp.readline() if size is None else inp.readline(size)
                parts.append(p)
                if not p:
                    break
        elif path == "/readlines":
            hint = int(q["hint"]) if "hint" in q else None
            parts.extend(inp.readlines() if hint is None else inp.readlines(hint))
        elif path == "/iter":
            parts.extend(list(iter(inp)))
        elif path == "/big":
            parts.append(inp.read(10 ** 6))
            parts.append(inp.read(10))
        elif path == "/mixed":
            parts.append(inp.read(2))
            parts.append(inp.readline())
            parts.append(inp.read())
        else:
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"unknown route\n"]
    except Exception as e:  # report instead of failing
        error = f"{type(e).__name__}: {e}"
    out = {
        "parts": [p.decode("latin-1") if isinstance(p, bytes) else repr(p) for p in parts],
        "types": [type(p).__name__ for p in parts],
        "total": sum(len(p) for p in parts if isinstance(p, bytes)),
        "content_length": environ.get("CONTENT_LENGTH"),
        "input_terminated": environ.get("wsgi.input_terminated"),
        "error": error,
    }
    body = json.dumps(out).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]
