# ASGI benchmark application for scripts/bench.sh (bench/bench.py): the same file runs under
# mod_rwsgi (daemon mode, WSGIScriptAlias /app ...), under uvicorn behind Apache's
# mod_proxy_http and under uvicorn alone; routes by the path's last segment, so it answers the
# same below any mount. Standard library only.
import os

HELLO = b"Hello, world!"                  # 13 bytes
BODY_64K = b"x" * 65536
BIG_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "64m.bin")


async def _respond(send, body, ctype=b"text/plain"):
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", ctype), (b"content-length", b"%d" % len(body))]})
    await send({"type": "http.response.body", "body": body})


async def application(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            m = await receive()
            await send({"type": m["type"] + ".complete"})
            if m["type"] == "lifespan.shutdown":
                return
    if scope["type"] == "websocket":
        # /ws: every message echoed until the client closes.
        await receive()
        await send({"type": "websocket.accept"})
        while True:
            m = await receive()
            if m["type"] == "websocket.disconnect":
                return
            await send({"type": "websocket.send", "text": m.get("text"), "bytes": m.get("bytes")})
    route = scope["path"].rsplit("/", 1)[-1]
    if route == "hello":
        return await _respond(send, HELLO)
    if route == "64k":
        return await _respond(send, BODY_64K, b"application/octet-stream")
    if route == "echo":
        chunks = []
        while True:
            m = await receive()
            chunks.append(m.get("body", b""))
            if not m.get("more_body"):
                break
        return await _respond(send, b"".join(chunks), b"application/octet-stream")
    if route == "stream":
        # 64 KiB in 16 streamed messages of 4 KiB (chunked).
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/octet-stream")]})
        for _ in range(16):
            await send({"type": "http.response.body", "body": BODY_64K[:4096], "more_body": True})
        return await send({"type": "http.response.body", "body": b""})
    await send({"type": "http.response.start", "status": 404,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", b"9")]})
    await send({"type": "http.response.body", "body": b"not found"})
