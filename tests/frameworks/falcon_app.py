"""Falcon application served by tests/test_frameworks.py, under mod_rwsgi (falcon_app.wsgi) and
under gunicorn (falcon_app:app), to compare the two."""

import zlib

import falcon


class Things:
    """JSON resources. Nothing is stored: the id of a created thing is derived from its name, so
    any worker process of either server gives the same answer."""

    def on_get_item(self, req, resp, thing_id):
        resp.media = {"id": thing_id, "name": f"thing {thing_id}",
                      "limit": req.get_param_as_int("limit", default=10),
                      "relative_uri": req.relative_uri}
        resp.cache_control = ["max-age=60"]
        resp.vary = ("Accept",)

    def on_delete_item(self, req, resp, thing_id):
        resp.status = falcon.HTTP_204
        resp.set_header("X-Deleted", str(thing_id))

    def on_post(self, req, resp):
        media = req.get_media()
        if not isinstance(media, dict) or "name" not in media:
            raise falcon.HTTPBadRequest(title="Invalid thing", description="a 'name' is required")
        thing_id = zlib.crc32(str(media["name"]).encode("utf-8")) % 100000
        resp.status = falcon.HTTP_201
        resp.location = f"{req.root_path}/things/{thing_id}"
        resp.media = {"id": thing_id, "stored": media, "size": req.content_length}


class Upload:
    """multipart/form-data through Falcon's own streaming parser (req.get_media())."""

    def on_post(self, req, resp):
        parts = []
        for part in req.get_media():
            data = part.stream.read()
            parts.append({"name": part.name, "filename": part.filename,
                          "type": part.content_type, "size": len(data),
                          "crc": zlib.crc32(data)})
        resp.media = {"parts": parts}


class Echo:
    """Reads the raw body through req.bounded_stream (wsgi.input) and reports its size."""

    def on_put(self, req, resp):
        data = req.bounded_stream.read()
        resp.content_type = falcon.MEDIA_TEXT
        resp.text = f"{len(data)} bytes, crc {zlib.crc32(data)}, type {req.content_type}"


app = falcon.App()
things = Things()
app.add_route("/things", things)
app.add_route("/things/{thing_id:int}", things, suffix="item")
app.add_route("/echo", Echo())
app.add_route("/upload", Upload())
