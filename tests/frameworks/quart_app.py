"""Quart application served by tests/test_asgi_frameworks.py, under mod_rwsgi (daemon mode) and
under uvicorn (`quart_app:mounted`), to compare the two."""

import asyncio

from quart import Quart, jsonify, make_response, request, websocket

from asgi_mount import mounted as _mounted

app = Quart(__name__)


@app.get("/items/<int:item_id>")
async def item(item_id):
    return jsonify(id=item_id, tags=request.args.getlist("tag"), root=request.root_path,
                   path=request.path)


@app.post("/echo")
async def echo():
    data = await request.get_data()
    return jsonify(length=len(data), form=(await request.form).to_dict(flat=False))


@app.get("/stream")
async def stream():
    async def gen():
        for i in range(4):
            yield f"part {i}\n".encode()
            await asyncio.sleep(0.02)

    return await make_response(gen(), 200, {"Content-Type": "text/plain"})


@app.get("/boom")
async def boom():
    raise RuntimeError("boom in a Quart view")


@app.websocket("/ws/<room>")
async def ws(room):
    # Quart accepts on the first send; a query flag denies instead (before accepting).
    if websocket.args.get("deny"):
        return "denied", 403
    await websocket.send_json({"room": room, "path": websocket.path})
    while True:
        data = await websocket.receive()
        if data == "bye":
            break
        await websocket.send(data[::-1] if isinstance(data, bytes) else data.upper())


mounted = _mounted(app, "/app")
