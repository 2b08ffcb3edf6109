"""A bounded keep-alive load client that never retries (test support, runs in the test process).

Each of `clients` connections sends GET after GET on one kept-alive connection for `seconds`
and classifies every failure: a connection the server refused or never accepted in time is
`refused`; a request written to an open connection that got no complete response (EOF, reset,
timeout) is `dropped`. A response that says `Connection: close` is an orderly end: the client
opens a new connection for its next request. Loopback only.
"""

import asyncio
import time
from dataclasses import dataclass, field


@dataclass
class Tally:
    responses: int = 0
    statuses: dict = field(default_factory=dict)
    refused: int = 0
    dropped: int = 0
    orderly_closes: int = 0
    drop_reasons: dict = field(default_factory=dict)

    def summary(self) -> str:
        return (f"{self.responses} responses {self.statuses}, {self.dropped} dropped "
                f"{self.drop_reasons}, {self.refused} refused, "
                f"{self.orderly_closes} orderly closes")


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    length, close, chunked = 0, False, False
    for line in lines[1:]:
        name, _, value = line.partition(":")
        name, value = name.strip().lower(), value.strip().lower()
        if name == "content-length":
            length = int(value)
        elif name == "connection" and "close" in value:
            close = True
        elif name == "transfer-encoding" and "chunked" in value:
            chunked = True
    if chunked:
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    elif length:
        await reader.readexactly(length)
    return status, close


async def _client(host: str, port: int, path: str, until: float, tally: Tally,
                  timeout: float) -> None:
    request = (f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n").encode()
    while time.monotonic() < until:
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
        except (OSError, asyncio.TimeoutError):
            tally.refused += 1
            await asyncio.sleep(0.05)
            continue
        try:
            while time.monotonic() < until:
                try:
                    writer.write(request)
                    await writer.drain()
                    status, close = await asyncio.wait_for(_read_response(reader), timeout)
                except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError,
                        asyncio.LimitOverrunError, ValueError) as e:
                    reason = type(e).__name__
                    tally.dropped += 1
                    tally.drop_reasons[reason] = tally.drop_reasons.get(reason, 0) + 1
                    break
                tally.responses += 1
                tally.statuses[status] = tally.statuses.get(status, 0) + 1
                if close:
                    tally.orderly_closes += 1
                    break
        finally:
            writer.close()


def run(host: str, port: int, path: str, clients: int, seconds: float,
        timeout: float = 10.0) -> Tally:
    """Run the load and return what happened; bounded by `seconds` + `timeout`."""
    tally = Tally()

    async def main():
        until = time.monotonic() + seconds
        await asyncio.gather(*(_client(host, port, path, until, tally, timeout)
                               for _ in range(clients)))

    asyncio.run(main())
    return tally


if __name__ == "__main__":
    import sys
    print(run("127.0.0.1", int(sys.argv[1]), "/", int(sys.argv[2]), float(sys.argv[3])).summary())
