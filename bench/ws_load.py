"""WebSocket load for bench/bench.py (tool; the standard library and the tests' frame encoder,
harness.client_frame): CONNECTIONS clients on loopback, each sending a SIZE-byte text message
and waiting for its echo, over and over for SECONDS; prints one line in the format of
bench/report.lua's (messages as "requests", the round-trip latency percentiles), for the same
report.

    python3 ws_load.py URL CONNECTIONS SECONDS SIZE

URL is ws://127.0.0.1:PORT/path. One asyncio loop drives every client (one CPU), so the
figures compare servers measured with the same client in the same run."""

import asyncio
import base64
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from harness import client_frame  # noqa: E402


async def read_frame(reader) -> tuple[int, bytes]:
    b0, b1 = await reader.readexactly(2)
    n = b1 & 0x7F
    if n == 126:
        n = int.from_bytes(await reader.readexactly(2), "big")
    elif n == 127:
        n = int.from_bytes(await reader.readexactly(8), "big")
    return b0 & 0x0F, await reader.readexactly(n)


async def client(host, port, path, size, deadline, latencies, errors):
    try:
        reader, writer = await asyncio.open_connection(host, port)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write((f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                      f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                      f"Sec-WebSocket-Version: 13\r\n\r\n").encode())
        head = await reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 101"):
            errors["status"] += 1
            return
    except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
        errors["connect"] += 1
        return
    message = client_frame(0x1, b"m" * size)
    try:
        while time.monotonic() < deadline:
            t0 = time.perf_counter_ns()
            writer.write(message)
            while True:
                op, data = await read_frame(reader)
                if op == 0x9 or op == 0xA:  # a ping from the server (or a pong)
                    continue
                break
            if op != 0x1 or len(data) != size:
                errors["status"] += 1
                return
            latencies.append((time.perf_counter_ns() - t0) // 1000)
        writer.write(client_frame(0x8, (1000).to_bytes(2, "big")))
        await writer.drain()
    except (OSError, asyncio.IncompleteReadError):
        errors["read"] += 1
    finally:
        writer.close()


async def main():
    url, connections, seconds, size = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), \
        int(sys.argv[4])
    rest = url.split("://", 1)[1]
    hostport, _, path = rest.partition("/")
    host, _, port = hostport.partition(":")
    latencies, errors = [], {"connect": 0, "read": 0, "status": 0}
    start = time.monotonic()
    deadline = start + seconds
    await asyncio.gather(*(client(host, int(port), "/" + path, size, deadline, latencies, errors)
                           for _ in range(connections)))
    took = time.monotonic() - start
    latencies.sort()

    def pct(p):
        return latencies[min(len(latencies) - 1, int(len(latencies) * p / 100))] if latencies else 0

    print(f"BENCH-RESULT requests={len(latencies)} duration_us={int(took * 1e6)} "
          f"bytes={len(latencies) * size} err_connect={errors['connect']} "
          f"err_read={errors['read']} err_write=0 err_status={errors['status']} err_timeout=0 "
          f"p50_us={pct(50)} p99_us={pct(99)} max_us={latencies[-1] if latencies else 0}")


if __name__ == "__main__":
    asyncio.run(main())
