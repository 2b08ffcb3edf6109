"""Starlette application served by tests/test_asgi_frameworks.py, under mod_rwsgi
(`WSGIScriptAlias ... starlette_app.py callable-object=app`, in a daemon process) and under
uvicorn (`starlette_app:mounted`), to compare the two."""

import asyncio
import contextlib
import hashlib
import os

from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.responses import (FileResponse, HTMLResponse, JSONResponse, PlainTextResponse,
                                 RedirectResponse, StreamingResponse)
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from asgi_mount import mounted as _mounted

HERE = os.path.dirname(os.path.abspath(__file__))


@contextlib.asynccontextmanager
async def lifespan(app):
    # Lifespan state: a shallow copy reaches every request as request.state.
    yield {"started": "yes", "pid": os.getpid()}


async def item(request):
    return JSONResponse({"id": request.path_params["item_id"],
                         "tags": request.query_params.getlist("tag"),
                         "root_path": request.scope["root_path"],
                         "path": request.url.path, "url": str(request.url),
                         "started": request.state.started})


async def create(request):
    data = await request.json()
    url = request.url_for("item", item_id=data["id"])
    return JSONResponse({"created": data, "length": int(request.headers["content-length"])},
                        status_code=201, headers={"Location": str(url)})


async def form(request):
    async with request.form() as f:
        name = f.get("name", "")
        up = f.get("file")
        data = await up.read() if up is not None else b""
        body = (f"<p>hello {name}</p><p>{getattr(up, 'filename', '')} {len(data)} "
                f"{hashlib.sha256(data).hexdigest()}</p>")
    resp = HTMLResponse(body)
    resp.set_cookie("visitor", name.encode().hex(), max_age=3600, httponly=True, samesite="lax")
    return resp


async def stream(request):
    async def lines():
        for i in range(5):
            yield f"line {i}\n"
            await asyncio.sleep(0.02)

    return StreamingResponse(lines(), media_type="text/plain")


async def blob(request):
    return FileResponse(os.path.join(HERE, "static", "blob.bin"), filename="blob.bin")


async def boom(request):
    raise RuntimeError("boom in a Starlette endpoint")


async def go(request):
    return RedirectResponse(url=request.url_for("item", item_id=3))


async def headers(request):
    return JSONResponse({"headers": [[k, v] for k, v in request.headers.items()],
                         "method": request.method, "scheme": request.url.scheme,
                         "http_version": request.scope["http_version"],
                         "client_is_local": request.client.host == "127.0.0.1",
                         "query": request.url.query})


async def echo(request):
    body = await request.body()
    return PlainTextResponse(f"{len(body)} {hashlib.sha256(body).hexdigest()}")


async def background(request):
    marker = os.path.join(request.query_params["dir"], "background-done")

    def done():
        with open(marker, "w") as f:
            f.write("done")

    return PlainTextResponse("queued", background=BackgroundTask(done))


async def ws_chat(websocket: WebSocket):
    # Subprotocol negotiation, then an echo of text and bytes with a counter, until the client
    # sends "bye" (the server closes with 4000) or closes itself.
    offered = websocket.scope.get("subprotocols", [])
    await websocket.accept(subprotocol=offered[0] if offered else None)
    n = 0
    try:
        while True:
            m = await websocket.receive()
            if m["type"] == "websocket.disconnect":
                return
            n += 1
            if m.get("text") == "bye":
                await websocket.close(code=4000, reason="see you")
                return
            if m.get("text") is not None:
                await websocket.send_json({"n": n, "echo": m["text"],
                                           "state": websocket.state.started})
            else:
                await websocket.send_bytes(m["bytes"][::-1])
    except WebSocketDisconnect:
        return


async def ws_denied(websocket: WebSocket):
    await websocket.close(code=1008)


app = Starlette(routes=[
    WebSocketRoute("/ws", ws_chat),
    WebSocketRoute("/ws-denied", ws_denied),
    Route("/items/{item_id:int}", item, name="item"),
    Route("/items", create, methods=["POST"]),
    Route("/form", form, methods=["POST"]),
    Route("/stream", stream),
    Route("/blob", blob),
    Route("/boom", boom),
    Route("/go", go),
    Route("/headers", headers, methods=["GET", "POST"]),
    Route("/echo", echo, methods=["POST"]),
    Route("/background", background),
], lifespan=lifespan)

mounted = _mounted(app, "/app")
