"""Flask application served by tests/test_frameworks.py, under mod_rwsgi (flask_app.wsgi, in an
httpd child or a daemon process) and under gunicorn (flask_app:app), to compare the two."""

import hashlib
import io
import os
import pwd
import sys

from flask import (Flask, Response, jsonify, redirect, request, send_file, session,
                   stream_with_context, url_for)
from markupsafe import escape

app = Flask(__name__)
# A fixed key, so both servers sign the session the same way (the signature still carries a
# timestamp, which the test normalises).
app.secret_key = "rwsgi-frameworks-test-not-secret"


@app.get("/api/items/<int:item_id>")
def item(item_id):
    return jsonify(id=item_id, name=f"item {item_id}", tags=request.args.getlist("tag"),
                   script_root=request.script_root, path=request.path)


@app.post("/api/items")
def create_item():
    data = request.get_json()
    resp = jsonify(created=data, length=request.content_length)
    resp.status_code = 201
    resp.headers["Location"] = url_for("item", item_id=data["id"])
    return resp


@app.post("/form")
def form():
    name = request.form.get("name", "")
    colours = request.form.getlist("colour")
    session["name"] = name
    body = (f"<html><body><p>hello {escape(name)}</p><ul>"
            + "".join(f"<li>{escape(c)}</li>" for c in colours)
            + "</ul></body></html>")
    resp = Response(body, content_type="text/html; charset=utf-8")
    resp.set_cookie("visitor", name.encode("utf-8").hex(), max_age=3600, httponly=True,
                    samesite="Lax", path="/")
    return resp


@app.get("/echo-path/<path:rest>")
def echo_path(rest):
    # What the framework made of an escaped, non-ASCII URL.
    return jsonify(rest=rest, path=request.path, full_path=request.full_path,
                   args=request.args.to_dict(flat=False), url=request.url)


# The CGI and WSGI keys both servers must give alike (PEP 3333); REMOTE_PORT, the server's own
# keys and wsgi.multithread/multiprocess legitimately differ and are left out.
ENVIRON_KEYS = ["REQUEST_METHOD", "SCRIPT_NAME", "PATH_INFO", "QUERY_STRING", "CONTENT_TYPE",
                "CONTENT_LENGTH", "SERVER_NAME", "SERVER_PORT", "SERVER_PROTOCOL", "REMOTE_ADDR",
                "HTTP_HOST", "HTTP_ACCEPT", "HTTP_X_CUSTOM", "wsgi.url_scheme", "wsgi.version",
                "wsgi.run_once", "wsgi.input_terminated"]


@app.route("/environ", methods=["GET", "POST"])
def environ():
    env = request.environ
    body = request.get_data()
    keys = {k: [type(env[k]).__name__, list(env[k]) if isinstance(env[k], tuple) else env[k]]
            for k in ENVIRON_KEYS if k in env}
    # each server listens on its own port: report whether it is the one in Host
    if keys.get("SERVER_PORT", [0, 0])[1] == env.get("HTTP_HOST", "").rpartition(":")[2]:
        keys["SERVER_PORT"][1] = "the port in Host"
    return jsonify(body=len(body), keys=keys)


@app.get("/async/<int:n>")
async def async_view(n):
    # An async view: Flask runs it in an event loop through asgiref, in a thread of its own.
    import asyncio

    results = await asyncio.gather(*(asyncio.sleep(0.001, result=i * i) for i in range(n)))
    return jsonify(n=n, total=sum(results))


@app.post("/upload")
def upload():
    # Werkzeug's multipart parser; files above 500 KiB are spooled to a temporary file.
    out = {"fields": request.form.to_dict(flat=False), "files": []}
    for name, f in request.files.items(multi=True):
        data = f.read()
        out["files"].append({"field": name, "filename": f.filename, "type": f.mimetype,
                             "size": len(data), "sha256": hashlib.sha256(data).hexdigest()})
    return jsonify(out)


@app.get("/whoami")
def whoami():
    return jsonify(name=session.get("name"))


@app.get("/go")
def go():
    # An absolute URL built from the request's host: differs only by host:port.
    return redirect(url_for("whoami", _external=True))


@app.get("/stream")
def stream():
    n = request.args.get("n", 20, type=int)

    def lines():
        for i in range(n):
            yield f"line {i} {'x' * (i * 37 % 500)}\n"

    return Response(stream_with_context(lines()), mimetype="text/plain")


@app.get("/blob")
def blob():
    # send_file answers through wsgi.file_wrapper, with conditional requests and byte ranges.
    # The ETag is given: Werkzeug's own is derived from the file's absolute path, which differs
    # between the two servers' copies of the site.
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static", "blob.bin")
    return send_file(path, mimetype="application/octet-stream", etag="blob-v1", max_age=120)


@app.get("/bytes")
def bytes_file():
    # wsgi.file_wrapper over an in-memory file: iterated, not sent as a file.
    data = b"".join(b"%06d\n" % i for i in range(20_000))
    return send_file(io.BytesIO(data), mimetype="text/plain", download_name="numbers.txt",
                     etag="numbers-v1", last_modified=1_700_000_000)


@app.get("/runtime")
def runtime():
    # Where this process runs (not compared between servers: the test checks it directly).
    import subprocess

    import flask

    # What multiprocessing's spawn or a subprocess would start: the venv's own Python.
    child = subprocess.run([sys.executable, "-c", "import sys, flask; print(sys.prefix)"],
                           capture_output=True, text=True, timeout=60)
    return jsonify(child_prefix=child.stdout.strip(), prefix=sys.prefix,
                   base_prefix=sys.base_prefix, executable=sys.executable, argv=sys.argv,
                   flask=flask.__file__, user=pwd.getpwuid(os.geteuid()).pw_name,
                   process_group=request.environ.get("mod_wsgi.process_group"),
                   site_packages=[p for p in sys.path if p.endswith("site-packages")])


@app.get("/boom")
def boom():
    raise RuntimeError("flask app error on purpose")
