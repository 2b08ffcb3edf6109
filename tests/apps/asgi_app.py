"""A stdlib-only ASGI 3 test application: routes by path, reports what it saw as JSON.

/scope          the scope (bytes as latin-1 text), plus the lifespan state it got
/echo           the request body back, read with receive() until more_body is False
/stream?n=N     N chunks of "chunk i\\n", each its own http.response.body (more_body=True)
/sleep?s=S      awaits asyncio.sleep(S), then "slept" (counted in /sleeping)
/sleeping       how many /sleep requests this process has had at once, at most
/block?s=S      calls time.sleep(S) in the coroutine (blocking the loop), then "blocked"
/disconnect     reads the body, then waits on receive() for http.disconnect and records
                when it came in @STATE@/disconnected (a long poll the client abandons)
/after-disconnect  as /disconnect, then tries send() and records what it raised
/wait-done      after the body, receive() must block until the response is complete: sends
                the response from a second task while the first waits
/raise          raises before http.response.start
/raise-late     raises after the first body chunk
/no-response    returns without sending anything
/start-only     sends http.response.start and returns
/bad-header     sends a header value with a newline
/pathsend       http.response.pathsend of @DATA@/file.bin
/zerocopy       http.response.zerocopysend of @DATA@/file.bin (?skip= ?offset= ?count= ?more=1)
/te             sends transfer-encoding and connection headers (dropped), single body
/state          the lifespan state's counter, incremented per request (shallow copy)
/pid            the process id
/ws/echo        (WebSocket) accepts, echoes text and bytes until the client closes; records the
                disconnect's code and reason in @STATE@/ws-<tag>
/ws/deny        (WebSocket) closes before accepting: 403
/ws/deny-body   (WebSocket) denies with its own response (websocket.http.response): 418
/ws/close       (WebSocket) accepts, sends "bye", closes with 4001 "done"
/ws/raise       (WebSocket) accepts, then raises: close 1011
/ws/subprotocol (WebSocket) accepts the client's last offered subprotocol, with a header
/ws/sink?delay=S&n=N  (WebSocket) accepts, says "ready", sleeps S seconds without receiving
                (the client floods it meanwhile), then receives N messages and answers
                "<count> <bytes> <in order>"
/ws/chat?name=X  (WebSocket) a chat room of this process: each text message goes to every
                member as "X: message"; "joined X" is sent to all when X joins
/ws/firehose?n=N&size=B  (WebSocket) accepts and sends N binary messages of B bytes as fast
                as send() lets it (a client that reads slowly), then "done"
"""

import asyncio
import json
import os
import time

STATE = "@STATE@"
DATA = "@DATA@"
STARTED = {"count": 0}
CHAT = {}  # name -> send, the members of /ws/chat in this process
SLEEPING = {"now": 0, "peak": 0}  # /sleep requests of this process running now, and at most


def _text(v):
    return v.decode("latin-1") if isinstance(v, (bytes, bytearray)) else v


def _jsonable(scope):
    out = {}
    for k, v in scope.items():
        if k == "headers":
            out[k] = [[_text(a), _text(b)] for a, b in v]
        elif k == "state":
            out[k] = {sk: sv for sk, sv in v.items() if isinstance(sv, (int, str, list))}
        elif isinstance(v, (bytes, bytearray)):
            out[k] = _text(v)
        elif isinstance(v, tuple):
            out[k] = list(v)
        else:
            out[k] = v
    return out


async def _body(receive):
    chunks = []
    while True:
        m = await receive()
        if m["type"] == "http.disconnect":
            raise RuntimeError("disconnected while reading the body")
        chunks.append(m.get("body", b""))
        if not m.get("more_body", False):
            return b"".join(chunks)


async def _send(send, status, body, ctype=b"text/plain", headers=()):
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", ctype), *headers]})
    await send({"type": "http.response.body", "body": body})


def _record(name, value):
    path = os.path.join(STATE, name)
    with open(path + ".tmp", "w") as f:
        json.dump(value, f)
    os.replace(path + ".tmp", path)


async def lifespan(scope, receive, send):
    while True:
        m = await receive()
        if m["type"] == "lifespan.startup":
            scope["state"]["started_at"] = time.time()
            scope["state"]["counter"] = 0
            scope["state"]["pid"] = os.getpid()
            STARTED["count"] += 1
            _record("startup-%d" % os.getpid(), STARTED["count"])
            await send({"type": "lifespan.startup.complete"})
        elif m["type"] == "lifespan.shutdown":
            _record("shutdown-%d" % os.getpid(), True)
            await send({"type": "lifespan.shutdown.complete"})
            return


async def websocket(scope, receive, send):
    path = scope["path"][len(scope["root_path"]):]
    qs = scope["query_string"].decode()
    args = dict(p.split("=", 1) for p in qs.split("&") if "=" in p)
    m = await receive()
    assert m["type"] == "websocket.connect", m
    if path == "/ws/deny":
        return await send({"type": "websocket.close"})
    if path == "/ws/deny-body":
        await send({"type": "websocket.http.response.start", "status": 418,
                    "headers": [(b"content-type", b"text/plain")]})
        return await send({"type": "websocket.http.response.body", "body": b"no tea here"})
    if path == "/ws/subprotocol":
        offered = scope["subprotocols"]
        await send({"type": "websocket.accept", "subprotocol": offered[-1],
                    "headers": [(b"x-ws", b"yes")]})
        await send({"type": "websocket.send", "text": json.dumps(
            {"offered": offered, "scheme": scope["scheme"], "path": scope["path"]})})
        m = await receive()
        return
    await send({"type": "websocket.accept"})
    if path == "/ws/close":
        await send({"type": "websocket.send", "text": "bye"})
        return await send({"type": "websocket.close", "code": 4001, "reason": "done"})
    if path == "/ws/sink":
        await send({"type": "websocket.send", "text": "ready"})
        await asyncio.sleep(float(args.get("delay", "0")))
        count = size = 0
        ordered = True
        for i in range(int(args["n"])):
            m = await receive()
            if m["type"] != "websocket.receive":
                break
            data = m.get("bytes") or b""
            ordered = ordered and data[:8] == i.to_bytes(8, "big")
            count, size = count + 1, size + len(data)
        return await send({"type": "websocket.send", "text": "%d %d %s" % (count, size, ordered)})
    if path == "/ws/chat":
        name = args.get("name", "?")
        CHAT[name] = send
        try:
            for member in list(CHAT.values()):
                await member({"type": "websocket.send", "text": "joined " + name})
            while True:
                m = await receive()
                if m["type"] == "websocket.disconnect":
                    return
                for member in list(CHAT.values()):
                    await member({"type": "websocket.send", "text": "%s: %s" % (name, m["text"])})
        finally:
            CHAT.pop(name, None)
    if path == "/ws/firehose":
        block = os.urandom(int(args["size"]) - 8)
        for i in range(int(args["n"])):
            await send({"type": "websocket.send", "bytes": i.to_bytes(8, "big") + block})
        return await send({"type": "websocket.send", "text": "done"})
    if path == "/ws/raise":
        await send({"type": "websocket.send", "text": "about to fail"})
        raise RuntimeError("boom in a WebSocket")
    while True:
        m = await receive()
        if m["type"] == "websocket.disconnect":
            _record("ws-" + args.get("tag", "echo"), {"code": m["code"],
                                                       "reason": m.get("reason", "")})
            return
        if m.get("text") is not None:
            await send({"type": "websocket.send", "text": m["text"]})
        else:
            await send({"type": "websocket.send", "bytes": m["bytes"]})


async def application(scope, receive, send):
    if scope["type"] == "lifespan":
        return await lifespan(scope, receive, send)
    if scope["type"] == "websocket":
        return await websocket(scope, receive, send)
    assert scope["type"] == "http"
    path = scope["path"][len(scope["root_path"]):] or "/"
    qs = scope["query_string"].decode()
    args = dict(p.split("=", 1) for p in qs.split("&") if "=" in p)
    if path.startswith("/scope"):
        body = await _body(receive)
        d = _jsonable(scope)
        d["body_len"] = len(body)
        return await _send(send, 200, json.dumps(d).encode(), b"application/json")
    if path == "/echo":
        body = await _body(receive)
        return await _send(send, 200, body, b"application/octet-stream")
    if path == "/stream":
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/plain")]})
        for i in range(int(args.get("n", "3"))):
            await send({"type": "http.response.body", "body": b"chunk %d\n" % i,
                        "more_body": True})
            await asyncio.sleep(float(args.get("gap", "0")))
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        return
    if path == "/sleep":
        SLEEPING["now"] += 1
        SLEEPING["peak"] = max(SLEEPING["peak"], SLEEPING["now"])
        try:
            await asyncio.sleep(float(args.get("s", "1")))
        finally:
            SLEEPING["now"] -= 1
        return await _send(send, 200, b"slept")
    if path == "/sleeping":
        return await _send(send, 200, str(SLEEPING["peak"]).encode())
    if path == "/block":
        time.sleep(float(args.get("s", "1")))  # a synchronous call that blocks the loop
        return await _send(send, 200, b"blocked")
    if path in ("/disconnect", "/after-disconnect"):
        await _body(receive)
        t0 = time.time()
        m = await receive()
        result = {"type": m["type"], "waited": time.time() - t0}
        if path == "/after-disconnect":
            try:
                await send({"type": "http.response.start", "status": 200, "headers": []})
                await send({"type": "http.response.body", "body": b"late"})
                result["raised"] = None
            except OSError as e:
                result["raised"] = type(e).__name__
                result["is_oserror"] = isinstance(e, OSError)
        _record(args.get("tag", "disconnected"), result)
        return
    if path == "/wait-done":
        await _body(receive)
        waiter = asyncio.ensure_future(receive())
        await asyncio.sleep(0.2)
        early = waiter.done()
        await _send(send, 200, b"early" if early else b"blocked until done")
        m = await asyncio.wait_for(waiter, 5)
        _record("wait-done", {"early": early, "after": m["type"]})
        return
    if path == "/raise":
        raise ValueError("boom before start")
    if path == "/raise-late":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"partial", "more_body": True})
        raise ValueError("boom after start")
    if path == "/no-response":
        return
    if path == "/start-only":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        return
    if path == "/bad-header":
        return await _send(send, 200, b"x", headers=[(b"x-bad", b"a\nb")])
    if path == "/pathsend":
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/octet-stream")]})
        await send({"type": "http.response.pathsend", "path": os.path.join(DATA, "file.bin")})
        return
    if path == "/zerocopy":
        # http.response.zerocopysend of @DATA@/file.bin: with ?offset=&count= as given (none:
        # from the file's position, after reading `skip` bytes); ?more=1 adds b"END" after it.
        with open(os.path.join(DATA, "file.bin"), "rb") as f:
            f.read(int(args.get("skip", "0")))
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"application/octet-stream")]})
            message = {"type": "http.response.zerocopysend", "file": f,
                       "more_body": "more" in args}
            for k in ("offset", "count"):
                if k in args:
                    message[k] = int(args[k])
            await send(message)
            after = f.tell()
            if "more" in args:
                await send({"type": "http.response.body", "body": b"END %d" % after})
        return
    if path == "/te":
        return await _send(send, 200, b"dropped", headers=[(b"transfer-encoding", b"chunked"),
                                                           (b"connection", b"close")])
    if path == "/state":
        st = scope.get("state", {})
        st["counter"] = st.get("counter", 0) + 1
        return await _send(send, 200, json.dumps({"counter": st["counter"],
                                                   "has_state": "state" in scope}).encode())
    if path == "/pid":
        return await _send(send, 200, str(os.getpid()).encode())
    return await _send(send, 404, b"no such route")
