"""mod_rwsgi's Python-side helpers (script loading and reloading, process restrictions, the
request objects of sub-interpreters, mod_wsgi's events, garbage-collection counts); loaded
into every interpreter of each httpd child and daemon process."""

import hashlib
import os
import signal
import sys
import threading
import types

_load_lock = threading.RLock()
# Scripts whose code has finished executing, by module name. sys.modules holds a script's
# module while it executes too, so it must not be the test of "loaded".
_loaded = {}


def module_name(path, case_sensitive):
    """The sys.modules name of a WSGI script, as mod_wsgi names it."""
    key = path if case_sensitive else path.lower()
    return "_mod_wsgi_" + hashlib.md5(key.encode("utf-8", "surrogateescape")).hexdigest()


def _current(module, path, mtime, reloading):
    if module is None:
        return False
    if not reloading:
        return True
    if mtime is None:
        mtime = os.stat(path).st_mtime_ns // 1000
    if getattr(module, "__mtime__", None) != mtime:
        return False
    check = getattr(module, "reload_required", None)
    if callable(check):
        try:
            return not check(path)
        except Exception:
            sys.excepthook(*sys.exc_info())
            return True
    return True


def load_script(path, mtime, reloading, case_sensitive):
    """Returns the module for the WSGI script at `path`, (re)executing it when it is new or its
    modification time (microseconds) changed. A failed load leaves nothing behind, so the next
    request tries again."""
    name = module_name(path, case_sensitive)
    module = _loaded.get(name)
    if _current(module, path, mtime, reloading):
        return module
    with _load_lock:
        module = _loaded.get(name)
        if _current(module, path, mtime, reloading):
            return module
        with open(path, "rb") as f:
            source = f.read()
        if mtime is None:
            mtime = os.stat(path).st_mtime_ns // 1000
        code = compile(source, path, "exec", dont_inherit=True)
        module = types.ModuleType(name)
        module.__file__ = path
        module.__mtime__ = mtime
        sys.modules[name] = module
        try:
            exec(code, module.__dict__)
        except BaseException:
            sys.modules.pop(name, None)
            _loaded.pop(name, None)
            raise
        _loaded[name] = module
        return module


def script_changed(path, mtime, case_sensitive):
    """Whether the script was loaded in this process and has changed since (daemon mode)."""
    module = _loaded.get(module_name(path, case_sensitive))
    return module is not None and mtime is not None and getattr(module, "__mtime__", None) != mtime


class RequestTimeout(BaseException):
    """Raised in a request's thread by its daemon process when the request has run longer
    than request-timeout and interrupt-timeout is set (mod_wsgi 6's exception, a
    BaseException so that `except Exception` does not swallow it)."""


class RestrictedStdin:
    """sys.stdin under WSGIRestrictStdin On."""

    def _fail(self, *args, **kwargs):
        raise OSError("sys.stdin access restricted by mod_wsgi")

    read = readline = readlines = __iter__ = __next__ = fileno = _fail

    def isatty(self):
        return False

    def close(self):
        pass


def restrict_signal(log):
    """WSGIRestrictSignal On: signal.signal() from the application is ignored (httpd owns
    signals) with a warning and the caller's stack in the log."""
    import traceback

    original = signal.signal

    def intercept(signum, handler):
        stack = "".join(traceback.format_stack(limit=8)[:-1])
        log(
            "mod_rwsgi (pid=%d): callback registration for signal %s ignored "
            "(WSGIRestrictSignal On).\n%s" % (os.getpid(), signum, stack)
        )
        return signal.getsignal(signum)

    intercept.__wrapped__ = original
    signal.signal = intercept


def add_site_dirs(paths):
    import site

    for p in paths:
        site.addsitedir(p)


def add_site_dirs_first(paths):
    """As add_site_dirs, then moves what that added to the front of sys.path (a
    <WSGIInterpreterOptions> WSGIPythonPath layer, as mod_wsgi 6)."""
    import sys

    before = set(sys.path)
    add_site_dirs(paths)
    added = [p for p in sys.path if p not in before]
    sys.path[:] = added + [p for p in sys.path if p in before]


def install_logging(write):
    """Routes Python `logging` records that no handler of the application takes to the Apache
    error log, at the matching level, through `write(levelno, text)`. It becomes
    `logging.lastResort`, so it is used only while the application has not configured logging:
    `logging.basicConfig()` still works (the root logger has no handler), and once any handler
    takes a record this one does not (nothing is logged twice). Returns the handler class, which
    an application may also add itself (`mod_rwsgi.LogHandler`)."""
    import logging

    class LogHandler(logging.Handler):
        """A logging handler writing to the Apache error log (mod_rwsgi)."""

        def __init__(self, level=logging.NOTSET):
            super().__init__(level)
            self.setFormatter(logging.Formatter("%(name)s: %(message)s"))

        def emit(self, record):
            try:
                write(record.levelno, self.format(record))
            except RecursionError:
                raise
            except Exception:
                self.handleError(record)

    logging.lastResort = LogHandler()
    return LogHandler


def thread_stack(ident):
    """The Python stack of thread `ident` now, as text (None when it runs no Python code)."""
    import traceback

    frame = sys._current_frames().get(ident)
    if frame is None:
        return None
    return "".join(traceback.format_stack(frame)).rstrip()


def count_collections(count):
    """Calls `count(generation, collected)` after each garbage collection of this interpreter
    (the figures the board shows per daemon process and per httpd child)."""
    import gc

    def counted(phase, info):
        if phase == "stop":
            count(info["generation"], info["collected"])

    gc.callbacks.append(counted)


# mod_wsgi's events (`mod_wsgi.subscribe_events`, `mod_wsgi.subscribe_shutdown`): the
# subscribers of this interpreter, and the helpers the request driver calls while it has any.
# A subscriber is called as `callback(name, **event)`; a dict it returns is merged into the
# event the next subscriber sees (as mod_wsgi does). What one raises is logged, never passed on.

event_callbacks = []
shutdown_callbacks = []
# Set by mod_rwsgi: write(levelno, text) to the error log, and the log code of a failure.
report = None
EVENT_CODE = ""


def subscribe_events(callback):
    """Calls `callback(name, **event)` for request_started, response_started,
    request_finished, request_exception and process_stopping. Returns it (a decorator)."""
    event_callbacks.append(callback)
    return callback


def subscribe_shutdown(callback):
    """Calls `callback("process_stopping", shutdown_reason=...)` before the process exits."""
    shutdown_callbacks.append(callback)
    return callback


def publish(name, event):
    subscribers = list(event_callbacks)
    if name == "process_stopping":
        subscribers += shutdown_callbacks
    for callback in subscribers:
        try:
            merged = callback(name, **event)
        except Exception:
            if report is not None:
                import traceback

                report(
                    40,
                    "%s: a subscriber of mod_wsgi event '%s' (%r) raised an exception:\n%s"
                    % (EVENT_CODE, name, callback, traceback.format_exc().rstrip()),
                )
        else:
            if isinstance(merged, dict):
                event.update(merged)
    return event


def request_started(application, environ, data):
    """Publishes request_started; returns the application to call (a subscriber may wrap it by
    returning {"application_object": wrapper}) and what the later events of the request need."""
    request_id = environ.get("mod_wsgi.request_id")
    event = {
        "thread_id": environ.get("mod_wsgi.thread_id"),
        "daemon_connects": 1 if environ.get("mod_wsgi.queue_start") else 0,
        "daemon_restarts": 0,
        "server_pid": os.getppid(),
        "request_start": environ.get("mod_wsgi.request_start"),
        "queue_start": environ.get("mod_wsgi.queue_start"),
        "daemon_start": environ.get("mod_wsgi.daemon_start"),
        "application_object": application,
        "callable_object": environ.get("mod_wsgi.callable_object", "application"),
        "request_environ": environ,
        "application_start": environ.get("mod_wsgi.application_start"),
        "request_data": data,
    }
    if request_id:
        event["request_id"] = request_id
    publish("request_started", event)
    return event.get("application_object", application), (request_id, data)


def wrap_start_response(start_response, context):
    """start_response publishing response_started first (a subscriber may change the
    headers list it is given)."""
    request_id, data = context

    def start_response_with_events(status, response_headers, exc_info=None):
        event = {
            "response_status": status,
            "response_headers": response_headers,
            "exception_info": exc_info,
            "request_data": data,
        }
        if request_id:
            event["request_id"] = request_id
        publish("response_started", event)
        return start_response(status, response_headers, exc_info)

    return start_response_with_events


def request_exception(context, exc_type, exc_value, exc_tb):
    request_id, data = context
    event = {"exception_info": (exc_type, exc_value, exc_tb), "request_data": data}
    if request_id:
        event["request_id"] = request_id
    publish("request_exception", event)


def request_finished(context, facts):
    request_id, data = context
    if request_id:
        facts["request_id"] = request_id
    facts["request_data"] = data
    publish("request_finished", facts)


def process_stopping(reason):
    if event_callbacks or shutdown_callbacks:
        publish("process_stopping", {"shutdown_reason": reason})


# The request objects of a sub-interpreter. mod_rwsgi's own classes (Rust, pyo3) exist once per
# process and belong to the main interpreter; an application group in a sub-interpreter gets
# these instead, defined in its own interpreter, each over a Rust callable `f(op, arg)` made for
# one request (or one stream) that does the work.


class Input:
    """wsgi.input: the request body as a binary stream."""

    __slots__ = ("_f",)

    def __init__(self, f):
        self._f = f

    def read(self, size=None):
        return self._f(0, size)

    def readline(self, size=None):
        return self._f(1, size)

    def readlines(self, hint=None):
        return self._f(2, hint)

    def __iter__(self):
        return self

    def __next__(self):
        line = self._f(3, None)
        if line is None:
            raise StopIteration
        return line

    def close(self):
        pass


class Log:
    """wsgi.errors, sys.stdout and sys.stderr: a text stream to the Apache error log."""

    __slots__ = ("_f",)
    closed = False
    encoding = "utf-8"
    errors = "backslashreplace"
    name = "<wsgi.errors>"

    def __init__(self, f):
        self._f = f

    def write(self, msg):
        return self._f(0, msg)

    def writelines(self, lines):
        self._f(1, lines)

    def flush(self):
        self._f(2, None)

    def close(self):
        self._f(3, None)

    def isatty(self):
        return False

    def writable(self):
        return True

    def readable(self):
        return False


class StartResponse:
    """The start_response callable; it returns the write() callable."""

    __slots__ = ("_f",)

    def __init__(self, f):
        self._f = f

    def __call__(self, status, response_headers, exc_info=None):
        self._f(0, (status, response_headers, exc_info))
        return self.write

    def write(self, data):
        self._f(1, data)


class FileWrapper:
    """wsgi.file_wrapper: iterates a file in blocks; a real file is sent by Apache directly."""

    def __init__(self, filelike, blksize=8192):
        blksize = blksize.__index__()
        if blksize <= 0:
            raise ValueError("block size must be a positive integer")
        self.filelike = filelike
        self.blksize = blksize

    def __iter__(self):
        return self

    def __next__(self):
        data = self.filelike.read(self.blksize)
        if not data:
            raise StopIteration
        return data

    def close(self):
        if hasattr(self.filelike, "close"):
            self.filelike.close()


def _is_coroutine_function(f):
    import inspect

    if inspect.iscoroutinefunction(f):
        return True
    # asgiref's markcoroutinefunction before Python 3.12 marks with asyncio's `_is_coroutine`.
    if sys.version_info < (3, 12):
        import asyncio

        return asyncio.iscoroutinefunction(f)
    return False


def interface_of(app):
    """The interface a script's callable speaks: 'asgi' (ASGI 3: asgiref's single-callable
    marker, a coroutine function, or an object whose class's __call__ is one), 'asgi2'
    (asgiref's double-callable marker: ASGI 2, not served) or 'wsgi' (anything else; a class
    is a WSGI callable too, so ASGI 2 is never guessed)."""
    if getattr(app, "_asgi_single_callable", False):
        return "asgi"
    if getattr(app, "_asgi_double_callable", False):
        return "asgi2"
    if _is_coroutine_function(app):
        return "asgi"
    if not isinstance(app, type):
        call = getattr(type(app), "__call__", None)
        if call is not None and _is_coroutine_function(call):
            return "asgi"
    return "wsgi"
