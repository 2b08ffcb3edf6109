"""mod_rwsgi's ASGI server: one asyncio event loop per interpreter of a daemon process (or of
an httpd child, for embedded ASGI), on a thread of its own. A worker thread hands it a request
with its connection (`Server.submit`: a `Link` to the httpd child's worker thread, and the
application and scope to run); the loop keeps the connection (`Connection`) and reads the
requests that follow on it itself, each run as a task (`HttpCycle`, `WebSocketCycle`) that
reads its frames when the socket is readable and writes them when it has room. Lifespan runs
once per application and loop before its first request, and at shutdown; a heartbeat lets the
watchdog in asgi/loops.rs see a blocked loop. Runs in a daemon process or an httpd child."""

import asyncio
import collections
import http
import os
import stat
import sys
import threading
import traceback

# Kinds `Link.read` reports (the protocol's frame kinds, and the loop's own RELEASED).
BODY, BODY_END, ABORT, REQUEST, RELEASED = 0x03, 0x04, 0x05, 0x02, 0xFF
WS_MESSAGE, WS_CLOSE = 0x06, 0x07
# How long a WebSocket's end waits for the httpd child's last word (its WsClose).
WS_CLOSE_WAIT = 10.0
# Client messages a WebSocket holds for its application before the loop stops reading the
# connection (back-pressure through the httpd child to the client's socket), as uvicorn's
# max_queue; reading resumes when half are taken.
WS_QUEUE_MESSAGES = 32
WS_QUEUE_BYTES = 1 << 20
# Python logging levels, as the log hook takes them.
DEBUG, INFO, WARNING, ERROR = 10, 20, 30, 40
# How often the loop reports that it runs (the watchdog in asgi/loops.rs).
BEAT = 0.25
# Request-body bytes asked for per ReadBody.
READ_SIZE = 64 * 1024

_PHRASES = {s.value: s.phrase for s in http.HTTPStatus}


def _response_start(message):
    """The (status, headers) of an http.response.start-shaped message, the status checked."""
    status = message["status"]
    if type(status) is not int or not 100 <= status <= 599:
        raise ValueError("ASGI: invalid status %r" % (status,))
    return status, message.get("headers", ())


class ClientDisconnected(OSError):
    """Raised by `send()` once the client has gone away (ASGI HTTP spec 2.4)."""


class Server:
    def __init__(self, log, restart, retry_after, lifespan, startup_timeout, shutdown_timeout,
                 request_timeout, codes, beat, max_tasks):
        self.loop = asyncio.new_event_loop()
        # Called every BEAT seconds from the loop, so a watchdog sees that it runs.
        self._beat = beat
        self.thread_id = None
        # request-timeout: a request's task still running this long is cancelled (0: never).
        self.request_timeout = request_timeout
        self._log = log
        # A failed lifespan startup: `restart(why)` replaces the process (a daemon), or, when
        # it is None (an httpd child), the startup is tried again after `retry_after` s.
        self._restart = restart
        self.retry_after = retry_after
        self.lifespan_mode = lifespan
        self.startup_timeout = startup_timeout
        self.shutdown_timeout = shutdown_timeout
        # RW codes: protocol, lifespan, application exception, timeout, unavailable.
        (self.code_protocol, self.code_lifespan, self.code_exception, self.code_timeout,
         self.code_unavailable) = codes
        # max-tasks: requests running at once (0: no limit), and how many run now.
        self.max_tasks = max_tasks
        self.running = 0
        self.lifespans = {}
        self.connections = set()

    # -- threads ---------------------------------------------------------------------------

    def run_forever(self):
        """The loop thread's body: runs until `stop`."""
        asyncio.set_event_loop(self.loop)
        self.thread_id = threading.get_ident()
        self.loop.call_soon(self._heartbeat)
        try:
            self.loop.run_forever()
        finally:
            asyncio.set_event_loop(None)

    def _heartbeat(self):
        self._beat()
        self.loop.call_later(BEAT, self._heartbeat)

    def stack(self):
        """From another thread: where the loop thread is now (a watchdog's report)."""
        frame = sys._current_frames().get(self.thread_id)
        if frame is None:
            return "(the loop thread is not running Python)"
        return "".join(traceback.format_stack(frame)).rstrip()

    def submit(self, link, parts):
        """From a worker thread: a request to run, `parts` = (app, scope, has_body,
        body_length, request_id), with its connection."""
        self.loop.call_soon_threadsafe(self._adopt, link, parts)

    def going_away(self, code):
        """From another thread: the process is stopping; open WebSockets are closed with
        `code` (1012, service restart) and their applications get the disconnect."""
        self.loop.call_soon_threadsafe(self._going_away, code)

    def _going_away(self, code):
        for conn in list(self.connections):
            if isinstance(conn.cycle, WebSocketCycle):
                conn.cycle.going_away(code)

    def stop(self, done):
        """From another thread: run the lifespan shutdowns, stop the loop, then call
        `done()`."""
        self.loop.call_soon_threadsafe(self._begin_stop, done)

    # -- on the loop -----------------------------------------------------------------------

    def log(self, level, msg, request_id=""):
        prefix = "[%s] " % request_id if request_id else ""
        for line in str(msg).splitlines() or [""]:
            self._log(level, prefix + line)

    def log_exception(self, first_line, exc, request_id=""):
        self.log(ERROR, first_line, request_id)
        text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        self.log(ERROR, text.rstrip(), request_id)

    def _adopt(self, link, parts):
        Connection(self, link).start(parts)

    def _lifespan_of(self, app):
        if self.lifespan_mode == "off":
            return None
        key = id(app)
        ls = self.lifespans.get(key)
        if ls is None or ls.app is not app:
            ls = Lifespan(self, app)
            self.lifespans[key] = ls
            ls.begin()
        return ls

    def _forget_lifespan(self, ls):
        """A failed startup is over: the application's next request starts it again."""
        if self.lifespans.get(id(ls.app)) is ls:
            del self.lifespans[id(ls.app)]
        if ls.task is not None and not ls.task.done():
            ls.task.cancel()

    def _begin_stop(self, done):
        self.loop.create_task(self._stop(done))

    async def _stop(self, done):
        try:
            # Idle connections close (the httpd children notice); busy ones close when their
            # request ends.
            for conn in list(self.connections):
                if conn.cycle is None:
                    conn.close()
            for ls in list(self.lifespans.values()):
                await ls.shutdown()
        finally:
            self.loop.stop()
            done()


class Lifespan:
    """One application's lifespan on this loop: `startup` before its first request, `shutdown`
    when the process stops."""

    def __init__(self, server, app):
        self.server = server
        self.app = app
        self.state = {}
        self.queue = asyncio.Queue()
        loop = server.loop
        self.ready = loop.create_future()
        self.shut = loop.create_future()
        # None: started fine; False: the application does not support lifespan; a string:
        # why startup failed.
        self.outcome = None
        self.supported = True
        self.task = None

    def begin(self):
        self.queue.put_nowait({"type": "lifespan.startup"})
        self.task = self.server.loop.create_task(self._main())
        timeout = self.server.startup_timeout
        if timeout:
            self.server.loop.call_later(timeout, self._startup_timed_out, timeout)

    def _startup_timed_out(self, timeout):
        if not self.ready.done():
            self._settle("startup did not complete within %g s" % timeout)
            self.task.cancel()

    def _settle(self, outcome):
        if not self.ready.done():
            self.outcome = outcome
            self.ready.set_result(None)
            if isinstance(outcome, str):
                server = self.server
                if server._restart is not None:
                    then = "this process does not serve it and is replaced"
                else:
                    then = "its requests are answered 500; a request tries again in %g s" % (
                        server.retry_after)
                server.log(
                    ERROR,
                    "%s: ASGI lifespan startup of %r failed: %s; %s"
                    % (server.code_lifespan, self.app, outcome, then),
                )
                if server._restart is not None:
                    server._restart("ASGI lifespan startup failed")
                else:
                    server.loop.call_later(server.retry_after, server._forget_lifespan, self)

    async def _main(self):
        scope = {
            "type": "lifespan",
            "asgi": {"version": "3.0", "spec_version": "2.0"},
            "state": self.state,
        }
        try:
            await self.app(scope, self.receive, self.send)
        except asyncio.CancelledError:
            pass
        except BaseException as e:
            if not self.ready.done():
                if self.server.lifespan_mode == "on":
                    self.server.log_exception(
                        "%s: ASGI lifespan startup raised" % self.server.code_lifespan, e
                    )
                    self._settle("the application raised %s" % type(e).__name__)
                else:
                    self.server.log(
                        DEBUG,
                        "ASGI lifespan not supported by %r (%s: %s); carrying on without it"
                        % (self.app, type(e).__name__, e),
                    )
                    self.supported = False
                    self._settle(False)
            else:
                self.server.log_exception(
                    "%s: ASGI lifespan raised after startup" % self.server.code_lifespan, e
                )
        finally:
            if not self.ready.done():
                # Returned without answering startup: treated as no lifespan support.
                self.supported = False
                self._settle(False)
            if not self.shut.done():
                self.shut.set_result(None)

    async def receive(self):
        return await self.queue.get()

    async def send(self, message):
        t = message["type"]
        if t == "lifespan.startup.complete":
            self._settle(None)
        elif t == "lifespan.startup.failed":
            self._settle(message.get("message", "") or "lifespan.startup.failed")
        elif t == "lifespan.shutdown.complete":
            if not self.shut.done():
                self.shut.set_result(None)
        elif t == "lifespan.shutdown.failed":
            self.server.log(
                ERROR,
                "%s: ASGI lifespan shutdown of %r failed: %s"
                % (self.server.code_lifespan, self.app, message.get("message", "")),
            )
            if not self.shut.done():
                self.shut.set_result(None)
        else:
            raise ValueError("ASGI: unknown lifespan message type %r" % (t,))

    async def shutdown(self):
        if not self.supported or self.task is None or self.task.done():
            return
        if not self.ready.done() or self.outcome is not None:
            self.task.cancel()
            return
        self.queue.put_nowait({"type": "lifespan.shutdown"})
        try:
            await asyncio.wait_for(asyncio.shield(self.shut), self.server.shutdown_timeout)
        except asyncio.TimeoutError:
            self.server.log(
                ERROR,
                "%s: ASGI lifespan shutdown of %r did not complete within %g s"
                % (self.server.code_lifespan, self.app, self.server.shutdown_timeout),
            )
            self.task.cancel()


class Connection:
    """A connection from an httpd child that the loop holds: its requests one after the
    other, read by the loop itself between them."""

    def __init__(self, server, link):
        self.server = server
        self.loop = server.loop
        self.link = link
        self.fd = link.fileno()
        self.cycle = None
        self.open = True
        # Reading is paused (a WebSocket application is not taking its messages).
        self.paused = False
        server.connections.add(self)
        self.loop.add_reader(self.fd, self._readable)

    def start(self, parts):
        app, scope, has_body, body_length, request_id = parts
        if scope["type"] == "websocket":
            cycle = WebSocketCycle(self, scope, request_id)
        else:
            cycle = HttpCycle(self, scope, has_body, body_length, request_id)
        self.cycle = cycle
        server = self.server
        if server.max_tasks and server.running >= server.max_tasks:
            # At max-tasks: answered 503 at once, the application not called.
            server.log(WARNING, "%s: %d ASGI requests are running (max-tasks); answered 503"
                       % (server.code_unavailable, server.running), request_id)
            cycle.task = self.loop.create_task(cycle.refuse(503, "max-tasks reached"))
            return
        server.running += 1
        cycle.counted = True
        cycle.task = self.loop.create_task(cycle.run(app, self.server._lifespan_of(app)))
        timeout = self.server.request_timeout
        if timeout and scope["type"] == "http":
            cycle.timer = self.loop.call_later(timeout, cycle.timed_out, timeout)

    def _readable(self):
        try:
            frames = self.link.read()
        except Exception as e:  # a request that could not even be looked at
            self.server.log_exception("reading a request from the httpd child failed", e)
            frames = None
        cycle = self.cycle
        if frames is None:
            self._unregister()
            if cycle is not None:
                cycle._lost()
            else:
                self.close()
            return
        if cycle is not None:
            cycle._frames(frames)
            return
        for kind, data in frames:
            if kind == REQUEST:
                self.start(data)
            elif kind == RELEASED:
                # Back with the workers (a request the loop does not run): forget it.
                self._unregister()
                self.open = False
                self.server.connections.discard(self)

    def _unregister(self):
        if self.fd is not None:
            self.loop.remove_reader(self.fd)
            self.fd = None

    def pause(self):
        """Stops reading the connection (what the httpd child sends waits in the socket)."""
        if not self.paused and self.fd is not None:
            self.paused = True
            self.loop.remove_reader(self.fd)

    def resume(self):
        if self.paused:
            self.paused = False
            if self.fd is not None:
                self.loop.add_reader(self.fd, self._readable)
                # Frames may already wait in the link's buffer, with the socket quiet.
                self.loop.call_soon(self._readable)

    def ended(self, reusable):
        """The running request is over: the connection waits for the next one, or closes."""
        if getattr(self.cycle, "counted", False):
            self.server.running -= 1
        self.cycle = None
        if self.open and not self.link.done(reusable):
            self.close()
        elif self.open:
            # The next request is read whatever the last one left paused.
            self.resume()

    def close(self):
        if self.open:
            self.open = False
            self._unregister()
            self.link.close()
            self.server.connections.discard(self)


class _Cycle:
    """What a request's cycle (HTTP or WebSocket) needs around its connection: waking the
    tasks waiting for the httpd child, and writing with back-pressure (a send waits while the
    socket is full)."""

    def __init__(self, conn, scope, request_id):
        self.conn = conn
        self.server = conn.server
        self.loop = conn.loop
        self.link = conn.link
        self.scope = scope
        self.request_id = request_id
        self.fd = self.link.fileno()
        self.broken = False  # the connection to the httpd child failed
        self.complete = False  # End or Fail sent: the exchange is over on this side
        self.failed = False
        self.waiters = []
        self.drainer = None
        self.writing = False
        self.task = None
        self.timer = None

    def _wake(self):
        waiters, self.waiters = self.waiters, []
        for w in waiters:
            if not w.done():
                w.set_result(None)

    def _lost(self):
        """The connection to the httpd child is gone (it closed it: its client went away)."""
        self.broken = True
        self._unwatch()
        self._wake()
        d = self.drainer
        if d is not None and not d.done():
            d.set_result(None)

    def _unwatch(self):
        """Stops waiting for the socket to drain (the request is over, or its connection)."""
        if self.writing:
            self.writing = False
            self.loop.remove_writer(self.fd)

    def _push(self):
        """Writes what is queued; the rest goes when the socket has room."""
        if self.broken:
            return True
        try:
            if self.link.flush():
                return True
        except OSError:
            self._lost()
            return True
        if not self.writing:
            self.writing = True
            self.loop.add_writer(self.fd, self._writable)
        return False

    def _writable(self):
        try:
            done = self.link.flush()
        except OSError:
            self._lost()
            return
        if done:
            self.writing = False
            self.loop.remove_writer(self.fd)
            d = self.drainer
            if d is not None and not d.done():
                d.set_result(None)

    async def _drain(self):
        while not self._push():
            self.drainer = self.loop.create_future()
            try:
                await self.drainer
            finally:
                self.drainer = None
        if self.broken:
            raise ClientDisconnected("the client went away")

    async def _wait(self):
        w = self.loop.create_future()
        self.waiters.append(w)
        await w

    def _end(self):
        """Ends the exchange with `End` (the response, or the session, is complete)."""
        if not self.complete and not self.broken:
            self.complete = True
            self.link.end()
            self._wake()

    async def refuse(self, code, why):
        """Answers `code` without calling the application (max-tasks); the connection is then
        free for its next request."""
        self._fail(code, why)
        await self._release()

    async def _release(self):
        """The exchange is over: what is queued is written, and the connection goes back to
        waiting for its next request (or closes)."""
        if not self.broken:
            try:
                await self._drain()
            except ClientDisconnected:
                pass
        self._unwatch()
        if self.timer is not None:
            self.timer.cancel()
        self.conn.ended(not self.broken)

    def _fail(self, code, why):
        """Ends the exchange with `Fail`: `code` 500 (or 503, 504) before the response head,
        0 (an aborted response) after it."""
        if self.complete or self.broken:
            return
        self.complete = True
        self.failed = True
        self.link.fail(code, why)
        self._wake()

    async def _lifespan_ready(self, lifespan):
        """Waits for the application's lifespan startup; false (answered 500) if it failed.
        The scope gets a shallow copy of the lifespan state."""
        if lifespan is None:
            return True
        await asyncio.shield(lifespan.ready)
        if isinstance(lifespan.outcome, str):
            self._fail(500, "the application's lifespan startup failed")
            return False
        if lifespan.supported:
            self.scope["state"] = dict(lifespan.state)
        return True


class HttpCycle(_Cycle):
    """One HTTP request: the application's `receive` and `send`, over its connection."""

    def __init__(self, conn, scope, has_body, body_length, request_id):
        super().__init__(conn, scope, request_id)
        self.events = collections.deque()
        # Request-body bytes still to come (None: chunked, unknown), whether more is to be
        # asked for, and whether a ReadBody is outstanding.
        self.body_left = body_length
        self.body_pending = has_body
        self.asked = False
        if not has_body:
            self.events.append((b"", False))
        self.gone = False  # the client went away
        self.watching = False
        self.started = False
        self.start = None  # the held http.response.start
        self.head_request = scope["method"] == "HEAD"
        self.timed_out_after = None

    # -- events from the httpd child -------------------------------------------------------

    def _lost(self):
        self.gone = True
        self.asked = False
        self.body_pending = False
        super()._lost()

    def _frames(self, frames):
        for kind, data in frames:
            if kind == BODY:
                self.asked = False
                more = True
                if self.body_left is not None:
                    self.body_left -= len(data)
                    if self.body_left <= 0:
                        more = self.body_pending = False
                self.events.append((data, more))
            elif kind == BODY_END:
                self.asked = False
                if self.body_pending:
                    self.body_pending = False
                    self.events.append((b"", False))
            elif kind == ABORT:
                self.asked = False
                self.body_pending = False
                self.gone = True
        self._wake()

    # -- the application's side ------------------------------------------------------------

    async def receive(self):
        while True:
            if self.events:
                body, more = self.events.popleft()
                return {"type": "http.request", "body": body, "more_body": more}
            if self.gone or self.complete:
                return {"type": "http.disconnect"}
            if self.body_pending:
                if not self.asked:
                    self.asked = True
                    self.link.read_body(READ_SIZE)
                    self._push()
            elif not self.watching:
                # From now on only the client going away can come: ask to be told.
                self.watching = True
                self.link.watch()
                self._push()
            await self._wait()

    async def send(self, message):
        t = message["type"]
        if t == "http.response.body":
            if not self.started:
                raise RuntimeError("ASGI: http.response.body before http.response.start")
            if self.complete:
                return
            if self.gone:
                raise ClientDisconnected("the client went away")
            body = message.get("body", b"")
            more = message.get("more_body", False)
            if not isinstance(body, (bytes, bytearray, memoryview)):
                raise TypeError("ASGI: http.response.body 'body' must be bytes")
            self._head_once(None if more else len(body))
            if body and not self.head_request:
                self.link.chunk(body)
            if not more:
                self._end()
            await self._drain()
        elif t == "http.response.start":
            if self.started:
                raise RuntimeError("ASGI: http.response.start sent twice")
            self.start = _response_start(message)
            self.started = True
        elif t == "http.response.pathsend":
            if not self.started or self.start is None:
                raise RuntimeError(
                    "ASGI: http.response.pathsend must follow http.response.start directly"
                )
            if self.gone:
                raise ClientDisconnected("the client went away")
            self._head_once(None)
            await self._drain()
            if not self.head_request:
                self.link.send_file(message["path"])
            self._end()
            await self._drain()
        elif t == "http.response.zerocopysend":
            await self._zerocopysend(message)
        else:
            raise ValueError("ASGI: unknown message type %r for an HTTP request" % (t,))

    async def _zerocopysend(self, message):
        """The zero-copy send extension: `count` bytes (default: to the end) of the open
        `file` from `offset` (default: its position, which then moves past them, as
        os.sendfile does), sent by the httpd child from the same file opened again."""
        if not self.started:
            raise RuntimeError("ASGI: http.response.zerocopysend before http.response.start")
        if self.complete:
            return
        if self.gone:
            raise ClientDisconnected("the client went away")
        f = message["file"]
        fd = f if isinstance(f, int) else f.fileno()
        offset, count = message.get("offset"), message.get("count")
        advance = offset is None
        if advance:
            # A Python file object's position (its buffer may have read ahead of the
            # descriptor's), else the descriptor's.
            offset = f.tell() if hasattr(f, "tell") else os.lseek(fd, 0, os.SEEK_CUR)
        st = os.fstat(fd)
        if count is None:
            count = max(0, st.st_size - offset)
        # Checked before the head goes: a bad range is still a 500.
        if not stat.S_ISREG(st.st_mode) or offset < 0 or count < 0 \
                or offset + count > st.st_size:
            raise ValueError("ASGI: http.response.zerocopysend: bytes %d..+%d are not within "
                             "the regular file's %d" % (offset, count, st.st_size))
        more = message.get("more_body", False)
        self._head_once(None if more else count)
        await self._drain()
        if count and not self.head_request:
            self.link.send_fd(fd, offset, count)
        if advance:
            if hasattr(f, "seek"):
                f.seek(offset + count)
            else:
                os.lseek(fd, offset + count, os.SEEK_SET)
        if not more:
            self._end()
        await self._drain()

    def _head_once(self, length):
        """Queues the held response start, once; `length` (when the whole body is known)
        becomes its Content-Length."""
        if self.start is not None:
            status, headers = self.start
            self.link.head(status, _PHRASES.get(status, ""), headers, length)
            self.start = None

    # -- the request's life ----------------------------------------------------------------

    def timed_out(self, timeout):
        """request-timeout: the task is cancelled (the application sees CancelledError)."""
        if self.task is not None and not self.task.done():
            self.timed_out_after = timeout
            self.server.log(
                ERROR,
                "%s: the ASGI request ran longer than request-timeout (%g s); its task is "
                "cancelled" % (self.server.code_timeout, timeout),
                self.request_id,
            )
            self.task.cancel()

    async def run(self, app, lifespan):
        server, rid = self.server, self.request_id
        try:
            if not await self._lifespan_ready(lifespan):
                return
            try:
                call = app(self.scope, self.receive, self.send)
            except TypeError as e:
                # The call itself failed: not a callable of three arguments.
                server.log(
                    ERROR,
                    "%s: calling %r as an ASGI 3 application (scope, receive, send) raised "
                    "TypeError: %s; is it a WSGI callable under application-interface=asgi?"
                    % (server.code_protocol, app, e),
                    rid,
                )
                self._fail(500, "not an ASGI application")
                return
            if not hasattr(call, "__await__"):
                server.log(
                    ERROR,
                    "%s: %r is not an ASGI 3 application: called with (scope, receive, send) "
                    "it returned %s, not an awaitable; is it a WSGI callable under "
                    "application-interface=asgi?"
                    % (server.code_protocol, app, type(call).__name__),
                    rid,
                )
                self._fail(500, "not an ASGI application")
                return
            await call
            if not self.started:
                server.log(
                    ERROR,
                    "%s: the ASGI application returned without sending a response"
                    % server.code_protocol,
                    rid,
                )
                self._fail(500, "no response")
            elif not self.complete and not self.gone:
                if self.start is not None:
                    server.log(
                        ERROR,
                        "%s: the ASGI application returned after http.response.start "
                        "without a body" % server.code_protocol,
                        rid,
                    )
                    self._fail(500, "no response body")
                else:
                    server.log(
                        ERROR,
                        "%s: the ASGI application returned before its response was complete; "
                        "response aborted" % server.code_protocol,
                        rid,
                    )
                    self._fail(0, "response incomplete")
            # The client went away before the response was complete: end the exchange.
            self._fail(0, "the client went away")
        except asyncio.CancelledError:
            # request-timeout (or the process stopping): 504 before the response head, an
            # aborted response after it.
            self._fail(504 if self.start is not None or not self.started else 0, "cancelled")
        except BaseException as e:
            if self.gone and isinstance(e, OSError):
                server.log(DEBUG, "the client went away: %s" % (e,), rid)
            else:
                server.log_exception(
                    "%s: exception in the ASGI application" % server.code_exception, e, rid
                )
            self._fail(500 if self.start is not None or not self.started else 0, "exception")
            if not isinstance(e, Exception):
                raise
        finally:
            await self._finish()

    async def _finish(self):
        # An outstanding ReadBody is answered before the connection can carry anything else.
        while self.asked and not self.broken:
            await self._wait()
        await self._release()


class WebSocketCycle(_Cycle):
    """One WebSocket session: `websocket.connect`, then accept (the httpd child sends the 101
    and relays framed messages), or a denial (403, or the application's own response through
    the `websocket.http.response` extension)."""

    def __init__(self, conn, scope, request_id):
        super().__init__(conn, scope, request_id)
        self.events = collections.deque([{"type": "websocket.connect"}])
        # Bytes of the client's messages in `events`, not yet taken by the application.
        self.queued = 0
        self.parts = []
        self.accepted = False
        self.close_sent = False  # the application closed (or the session ended)
        self.remote_closed = False  # the child reported the client's close (its WsClose)
        self.responded = False  # a denial response was sent (or started)
        self.http_start = None

    def _lost(self):
        if not self.remote_closed:
            self.remote_closed = True
            self.events.append({"type": "websocket.disconnect", "code": 1006, "reason": ""})
        super()._lost()

    def going_away(self, code):
        """The process is stopping: the client is told (close `code`), the application gets
        the disconnect; the session ends when it returns."""
        if self.accepted and not self.close_sent and not self.remote_closed and not self.broken:
            self.link.ws_close(code, "service restart")
            self.close_sent = True
            self._push()
            self.events.append(
                {"type": "websocket.disconnect", "code": code, "reason": "service restart"})
            self._wake()

    def _frames(self, frames):
        for kind, data in frames:
            if kind == WS_MESSAGE:
                text, fin, chunk = data
                self.parts.append(chunk)
                if fin:
                    body = b"".join(self.parts)
                    self.parts = []
                    if self.close_sent or self.remote_closed:
                        continue
                    if text:
                        body = body.decode()
                        self.events.append({"type": "websocket.receive", "text": body})
                    else:
                        self.events.append({"type": "websocket.receive", "bytes": body})
                    # (characters for text: the same measure when it is taken)
                    self.queued += len(body)
            elif kind == WS_CLOSE:
                code, reason = data
                if not self.remote_closed:
                    self.remote_closed = True
                    self.events.append(
                        {"type": "websocket.disconnect", "code": code, "reason": reason})
            elif kind == ABORT and not self.remote_closed:
                self.remote_closed = True
                self.events.append({"type": "websocket.disconnect", "code": 1006, "reason": ""})
        if len(self.events) >= WS_QUEUE_MESSAGES or self.queued >= WS_QUEUE_BYTES:
            self.conn.pause()
        self._wake()

    async def receive(self):
        while True:
            if self.events:
                event = self.events.popleft()
                if event["type"] == "websocket.receive":
                    self.queued -= len(event.get("bytes") or event.get("text") or "")
                if (self.conn.paused and len(self.events) <= WS_QUEUE_MESSAGES // 2
                        and self.queued <= WS_QUEUE_BYTES // 2):
                    self.conn.resume()
                return event
            if self.broken or self.complete:
                return {"type": "websocket.disconnect", "code": 1006, "reason": ""}
            await self._wait()

    def _head(self, status, headers, length):
        self.link.head(status, _PHRASES.get(status, ""), headers, length)

    async def send(self, message):
        t = message["type"]
        if t == "websocket.send":
            if not self.accepted:
                raise RuntimeError("ASGI: websocket.send before websocket.accept")
            if self.close_sent or self.remote_closed or self.broken:
                raise ClientDisconnected("the WebSocket is closed")
            text, data = message.get("text"), message.get("bytes")
            if (text is None) == (data is None):
                raise ValueError("ASGI: websocket.send needs exactly one of 'text' and 'bytes'")
            if text is not None:
                self.link.ws_message(text.encode(), True)
            else:
                self.link.ws_message(bytes(data), False)
            await self._drain()
        elif t == "websocket.accept":
            if self.accepted or self.responded or self.close_sent:
                raise RuntimeError("ASGI: websocket.accept after the handshake was answered")
            self.link.ws_accept(message.get("subprotocol"), message.get("headers") or [])
            self.accepted = True
            await self._drain()
        elif t == "websocket.close":
            if self.close_sent or self.complete:
                return
            self.close_sent = True
            if not self.accepted:
                if self.responded:
                    raise RuntimeError("ASGI: websocket.close after a denial response began")
                # Closed before accept: the handshake is refused with 403.
                self._head(403, [(b"content-type", b"text/plain"),
                                 (b"content-length", b"0")], None)
                self._end()
            elif not self.remote_closed and not self.broken:
                self.link.ws_close(message.get("code") or 1000, message.get("reason") or "")
            await self._drain()
        elif t == "websocket.http.response.start":
            if self.accepted or self.responded or self.close_sent:
                raise RuntimeError("ASGI: a denial response after the handshake was answered")
            self.http_start = _response_start(message)
            self.responded = True
        elif t == "websocket.http.response.body":
            if not self.responded or self.complete:
                raise RuntimeError("ASGI: websocket.http.response.body without its start")
            body = message.get("body", b"")
            more = message.get("more_body", False)
            if self.http_start is not None:
                status, headers = self.http_start
                self._head(status, headers, None if more else len(body))
                self.http_start = None
            if body:
                self.link.chunk(body)
            if not more:
                self.close_sent = True
                self._end()
            await self._drain()
        else:
            raise ValueError("ASGI: unknown message type %r for a WebSocket" % (t,))

    async def run(self, app, lifespan):
        server, rid = self.server, self.request_id
        try:
            if not await self._lifespan_ready(lifespan):
                return
            await app(self.scope, self.receive, self.send)
            if self.accepted:
                if not self.close_sent and not self.remote_closed and not self.broken:
                    # Returning after accept closes normally.
                    self.link.ws_close(1000, "")
                    self.close_sent = True
                self._end()
            elif self.responded and not self.complete:
                server.log(ERROR, "%s: the ASGI application returned before its denial "
                           "response was complete" % server.code_protocol, rid)
                self._fail(0 if self.http_start is None else 500, "response incomplete")
            elif not self.complete:
                # Never answered the handshake: refused, as a close before accept is.
                self._head(403, [(b"content-type", b"text/plain"),
                                 (b"content-length", b"0")], None)
                self._end()
        except asyncio.CancelledError:
            self._close_on_error()
        except BaseException as e:
            if isinstance(e, OSError) and (self.broken or self.remote_closed):
                server.log(DEBUG, "the WebSocket client went away: %s" % (e,), rid)
            else:
                server.log_exception(
                    "%s: exception in the ASGI application (WebSocket)" % server.code_exception,
                    e, rid)
            self._close_on_error()
            if not isinstance(e, Exception):
                raise
        finally:
            await self._finish()

    def _close_on_error(self):
        if self.accepted:
            if not self.close_sent and not self.remote_closed and not self.broken:
                self.link.ws_close(1011, "")
                self.close_sent = True
            self._end()
        else:
            self._fail(500 if not self.responded or self.http_start is not None else 0,
                       "exception")

    async def _finish(self):
        if not self.broken:
            try:
                await self._drain()
            except ClientDisconnected:
                pass
        # An accepted session is over when the child has said its last word (its WsClose,
        # sent at the latest in answer to End); until then its frames are skipped (read again
        # if the application had left them waiting).
        self.conn.resume()
        if self.accepted and not self.broken:
            deadline = self.loop.time() + WS_CLOSE_WAIT
            while not self.remote_closed and not self.broken:
                left = deadline - self.loop.time()
                if left <= 0:
                    self.broken = True
                    break
                w = self.loop.create_future()
                self.waiters.append(w)
                try:
                    await asyncio.wait_for(w, left)
                except asyncio.TimeoutError:
                    pass
        self._unwatch()
        self.conn.ended(not self.broken)
