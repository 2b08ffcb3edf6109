"""FastAPI application served by tests/test_asgi_frameworks.py, under mod_rwsgi (daemon mode)
and under uvicorn (`fastapi_app:mounted`), to compare the two: pydantic validation, dependency
injection, a sync endpoint (run in anyio's thread pool), uploads, the OpenAPI schema."""

import hashlib

from fastapi import (Depends, FastAPI, File, Form, Header, HTTPException, Query, UploadFile,
                     WebSocket, WebSocketDisconnect)
from pydantic import BaseModel

from asgi_mount import mounted as _mounted

app = FastAPI(title="rwsgi test")


class Item(BaseModel):
    id: int
    name: str
    price: float = 0.0
    tags: list[str] = []


def caller(x_user: str | None = Header(default=None)):
    if x_user is None:
        raise HTTPException(status_code=401, detail="who are you?")
    return x_user


@app.get("/items/{item_id}")
def read_item(item_id: int, q: str | None = None):
    # A sync endpoint: FastAPI runs it in a worker thread.
    return {"item_id": item_id, "q": q}


@app.post("/items", status_code=201)
async def create_item(item: Item):
    return {"created": item.model_dump(), "total": item.price * 2}


@app.get("/me")
async def me(user: str = Depends(caller)):
    return {"user": user}


@app.post("/upload")
async def upload(file: UploadFile = File(...), note: str = Form(...)):
    data = await file.read()
    return {"filename": file.filename, "size": len(data), "note": note,
            "sha256": hashlib.sha256(data).hexdigest(), "type": file.content_type}


@app.get("/teapot")
async def teapot():
    raise HTTPException(status_code=418, detail="short and stout")


@app.websocket("/ws/{room}")
async def ws_room(websocket: WebSocket, room: str, token: str = Query(...)):
    # Path and query parameters validated on a WebSocket (a missing token closes it: 1008).
    await websocket.accept()
    try:
        while True:
            text = await websocket.receive_text()
            await websocket.send_json({"room": room, "token": token, "text": text.upper()})
    except WebSocketDisconnect:
        pass


mounted = _mounted(app, "/app")
