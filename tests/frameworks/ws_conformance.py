"""WebSocket conformance cases modelled on the Autobahn|Testsuite sections a real client
library can drive (1 framing, 2 pings, 5 fragmentation, 6 UTF-8, 7 close handling, 9 limits
and throughput), run with the `websockets` library against tests/apps/asgi_app.py's /ws/*
routes. Run by tests/test_websocket_conformance.py with the framework venv's Python:

    python ws_conformance.py URL_BASE [--insecure]

URL_BASE is ws://host:port/mount (or wss:// with --insecure: a self-signed certificate). It
prints one JSON object: each case's outcome, in a form that two servers must agree on (the
test compares mod_rwsgi's with uvicorn's and checks the expected values)."""

import hashlib
import json
import random
import ssl
import sys
import time

from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

TIMEOUT = 30


def digest(data):
    if isinstance(data, str):
        data = data.encode()
    return hashlib.sha256(data).hexdigest()[:16]


def main():
    base = sys.argv[1]
    ctx = None
    if base.startswith("wss://"):
        ctx = ssl.create_default_context()
        if "--insecure" in sys.argv:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE

    def ws(path, **kw):
        kw.setdefault("max_size", 32 << 20)
        kw.setdefault("open_timeout", TIMEOUT)
        kw.setdefault("close_timeout", TIMEOUT)
        if ctx is not None:
            kw["ssl"] = ctx
        return connect(base + path, **kw)

    out = {}

    # 1.1 / 1.2: text and binary messages of the sizes where the frame header changes
    # (7-bit, 16-bit and 64-bit lengths), echoed unchanged.
    sizes = [0, 1, 125, 126, 127, 128, 65535, 65536, 1 << 20]
    rng = random.Random(6455)
    with ws("/ws/echo?tag=sizes") as c:
        texts, binaries = [], []
        for n in sizes:
            t = "".join(rng.choice("abcdefghij") for _ in range(n))
            c.send(t)
            got = c.recv(timeout=TIMEOUT)
            texts.append([n, isinstance(got, str) and got == t])
            b = rng.randbytes(n)
            c.send(b)
            got = c.recv(timeout=TIMEOUT)
            binaries.append([n, isinstance(got, bytes) and got == b])
        out["1_text_sizes"] = texts
        out["1_binary_sizes"] = binaries

        # 2.x: pings with payloads of 0, 1 and 125 bytes get their pongs.
        pongs = []
        for n in (0, 1, 125):
            waiter = c.ping(rng.randbytes(n))
            pongs.append([n, waiter.wait(TIMEOUT)])
        out["2_pings"] = pongs

        # 5.x: a fragmented text and a fragmented binary message arrive whole.
        c.send(["frag", "ment", "ed"])
        out["5_fragmented_text"] = c.recv(timeout=TIMEOUT)
        c.send([b"\x00\x01", b"\x02", b"\xff" * 1000])
        got = c.recv(timeout=TIMEOUT)
        out["5_fragmented_binary"] = digest(got) == digest(b"\x00\x01\x02" + b"\xff" * 1000)

        # 6.x: UTF-8 text with 2-, 3- and 4-byte sequences, whole and split at every byte
        # boundary of the encoding across fragments.
        text = "κόσμε ∑ 𝄞 🙂 Zoë"
        c.send(text)
        out["6_utf8"] = c.recv(timeout=TIMEOUT) == text
        raw = text.encode()
        split_ok = []
        for cut in range(1, len(raw)):
            a, b = raw[:cut], raw[cut:]
            # The library sends str fragments only; a split inside a character is sent as a
            # decoded prefix/suffix pair where the cut allows it.
            try:
                parts = [a.decode(), b.decode()]
            except UnicodeDecodeError:
                continue
            c.send(parts)
            split_ok.append(c.recv(timeout=TIMEOUT) == text)
        out["6_utf8_fragments"] = all(split_ok) and len(split_ok) > 3

        # 9.x: throughput and order: 1,000 small messages, then 16 of 256 KiB.
        t0 = time.monotonic()
        for i in range(1000):
            c.send("m%d" % i)
        got = [c.recv(timeout=TIMEOUT) for _ in range(1000)]
        out["9_small_in_order"] = got == ["m%d" % i for i in range(1000)]
        big = rng.randbytes(256 << 10)
        for _ in range(16):
            c.send(big)
        out["9_large"] = all(c.recv(timeout=TIMEOUT) == big for _ in range(16))
        out["9_seconds"] = round(time.monotonic() - t0, 2)

        # 7.1: a normal close: the server answers with the same code.
        c.close(1000, "done here")
        out["7_close_normal"] = [c.close_code, c.close_reason]

    # 7.7: the close codes a client may send (application range too) are echoed.
    codes = []
    for code in (1000, 1001, 1003, 1007, 1011, 3000, 4999):
        with ws("/ws/echo?tag=code%d" % code) as c:
            c.close(code, "")
            codes.append([code, c.close_code])
    out["7_close_codes"] = codes

    # 7.x: the application closes with its own code and reason after a message.
    with ws("/ws/close") as c:
        first = c.recv(timeout=TIMEOUT)
        try:
            c.recv(timeout=TIMEOUT)
            out["7_server_close"] = ["no close", first]
        except ConnectionClosed as e:
            rcvd = e.rcvd
            out["7_server_close"] = [first, rcvd.code if rcvd else None,
                                     rcvd.reason if rcvd else None]

    # 9.x limit: a message over the server's 16 MiB limit closes the socket with 1009.
    with ws("/ws/echo?tag=toobig") as c:
        try:
            c.send(b"\x00" * ((16 << 20) + 1))
            c.recv(timeout=TIMEOUT)
            out["9_too_big"] = "echoed"
        except ConnectionClosed as e:
            out["9_too_big"] = e.rcvd.code if e.rcvd else "no close frame"

    # Handshake: the subprotocol the application picks, and a denial before accept.
    with ws("/ws/subprotocol", subprotocols=["chat.v0", "chat.v1"]) as c:
        out["subprotocol"] = c.subprotocol
    try:
        with ws("/ws/deny"):
            out["deny"] = "accepted"
    except InvalidStatus as e:
        out["deny"] = e.response.status_code

    print(json.dumps(out))


if __name__ == "__main__":
    main()
