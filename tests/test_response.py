"""Response side: status lines, header validation, start_response rules, write(), streaming,
close(), Content-Length mismatches, errors mid-response, wsgi.file_wrapper, logging."""

import os
import re

import pytest

import harness


@pytest.fixture
def rsrv(apache_factory, mode):
    srv = apache_factory()
    script = srv.app("response.wsgi")
    srv.start(srv.mount("/r", script))
    srv.script = script
    return srv


def _closed(srv, tag, timeout=5.0):
    text = harness.wait_for_record(srv.state / f"close-{tag}", timeout)
    return text.splitlines() if text else []


def test_custom_reason_phrase(rsrv):
    r = rsrv.get("/r/status-custom")
    assert (r.status, r.reason) == (299, "Custom Thing"), r
    assert r.body == b"custom status\n" and r.complete


def test_latin1_reason_phrase_goes_out_as_latin1(rsrv):
    r = rsrv.get("/r/status-latin1")
    assert (r.status, r.reason) == (299, "Caf\u00e9 cr\u00e8me"), r   # decoded as latin-1
    assert r.body == b"latin-1 reason\n" and r.complete


@pytest.mark.parametrize("route", ["hdr-crlf", "hdr-lf", "hdr-nonlatin1", "hdr-connection",
                                   "hdr-colon", "hdr-bytes"])
def test_bad_headers_rejected(rsrv, route):
    r = rsrv.get(f"/r/{route}")
    # Either start_response raised (the app reports it) or the server refused the response
    # with a 500; in no case may the bad header reach the wire.
    assert r.status in (200, 500), r
    if r.status == 200:
        assert r.body.startswith(b"rejected:"), r
    assert b"X-Injected" not in r.raw_head, r.raw_head
    assert "X-Bad" not in r.headers
    if route == "hdr-connection":
        assert r.headers.get("Connection", "close") == "close"


def test_latin1_header_value_allowed(rsrv):
    r = rsrv.get("/r/hdr-latin1")
    assert r.status == 200 and r.body == b"accepted", r
    assert r.headers.get("X-Latin") == "caf\u00e9"


def test_start_response_twice_without_exc_info(rsrv):
    r = rsrv.get("/r/twice")
    assert r.status == 200, r
    text = r.body.decode()
    assert text.startswith("second-raised:"), text
    assert "RuntimeError" in text.split(":")[2].split(","), text


def test_exc_info_before_headers_replaces_status(rsrv):
    r = rsrv.get("/r/exc-info-before-headers")
    assert (r.status, r.reason) == (503, "Replaced"), r
    assert "X-First" not in r.headers
    assert r.body == b"replaced-ok"


def test_exc_info_after_headers_reraises(rsrv):
    r = rsrv.get("/r/exc-info-after-headers")
    assert r.status == 200, r
    assert r.body == b"first;reraised:ValueError:boom-after-headers", r
    assert r.complete


def test_write_callable(rsrv):
    r = rsrv.get("/r/write")
    assert r.status == 200 and r.complete, r
    assert r.body == b"hello world!"


def test_streaming_flushes_each_chunk(rsrv):
    rsrv.get("/r/ok")  # warm up: script import must not count
    r = rsrv.get("/r/stream?sleep=1.5")
    assert r.status == 200 and r.complete, r
    assert r.body == b"chunk1\nchunk2\nchunk3\n"
    first_t = next(t for t, data in r.pieces if data)
    assert r.pieces[0][1].startswith(b"chunk1")
    assert r.elapsed >= 2.9, r.elapsed
    assert first_t < r.elapsed - 2.0, (first_t, r.elapsed, r.pieces)


def test_close_called_on_success(rsrv):
    r = rsrv.get("/r/close?tag=ok1")
    assert r.status == 200 and r.body == b"abc" and r.complete
    assert _closed(rsrv, "ok1") == ["closed"]


def test_close_called_on_error_in_iteration(rsrv):
    r = rsrv.get("/r/error-after-chunk?tag=err1")
    assert r.status == 200, r
    assert r.body.startswith(b"first-chunk;")
    assert not r.complete, "a failing iterable must abort the response"
    assert b"never" not in r.body
    assert _closed(rsrv, "err1") == ["closed"]
    assert rsrv.wait_for_log(r"boom-after-first-chunk")
    # the server keeps working
    assert rsrv.get("/r/ok").status == 200


def test_close_called_when_content_length_reached(rsrv):
    r = rsrv.get("/r/cl-less?tag=cl1")
    assert r.status == 200 and r.complete, r
    assert r.body == b"hello"
    assert _closed(rsrv, "cl1") == ["closed"]


def test_content_length_more_than_body_aborts(rsrv):
    r = rsrv.get("/r/cl-more?tag=cl2")
    assert r.status == 200, r
    assert r.headers.get("Content-Length") == "100"
    assert r.body == b"short"
    assert not r.complete, r
    assert not r.timed_out, "the server must close the connection, not hang"
    assert _closed(rsrv, "cl2") == ["closed"]


def test_exception_before_start_response(rsrv):
    r = rsrv.get("/r/error-before-start")
    assert r.status == 500, r
    assert rsrv.wait_for_log(r"Traceback")
    log = rsrv.error_log()
    assert "RwsgiTestError" in log and "boom-before-start" in log
    # the next request to the same server succeeds
    r = rsrv.get("/r/ok")
    assert r.status == 200 and r.body == b"ok\n"


def test_exception_after_start_response_before_body(rsrv):
    r = rsrv.get("/r/error-after-start")
    assert r.status == 500, r
    assert rsrv.wait_for_log(r"boom-after-start")


# Four behaviours of mod_wsgi's daemon mode mod_rwsgi does not copy (it keeps embedded mode's in
# both modes; README "Differences from mod_wsgi"), pinned here.
def test_repeated_headers_are_not_merged(rsrv):
    r = rsrv.get("/r/dup-headers")
    assert r.status == 200, r
    assert r.headers.get_all("X-Multi") == ["one", "two"], r.headers
    assert r.headers.get_all("Set-Cookie") == ["a=1", "b=2"], r.headers


def test_content_type_keeps_its_case(rsrv):
    r = rsrv.get("/r/ctype-case")
    assert r.status == 200, r
    assert r.headers.get("Content-Type") == "Text/HTML; Charset=ISO-8859-1", r.headers


def test_location_with_200_is_not_an_internal_redirect(rsrv):
    r = rsrv.get("/r/location-200")
    assert (r.status, r.body) == (200, b"not redirected\n"), r
    assert r.headers.get("Location", "").endswith("/r/ok"), r.headers


def test_100_continue_only_when_the_application_reads(rsrv):
    interim, r = harness.expect_continue(rsrv.port, "POST", "/r/ok", b"12345")
    assert interim.startswith(b"HTTP/1.1 200"), (interim, r)  # the final answer, no 100 first
    assert r.body == b"ok\n", r
    interim, r = harness.expect_continue(rsrv.port, "POST", "/r/read-body", b"12345")
    assert interim == b"HTTP/1.1 100 Continue", (interim, r)
    assert (r.status, r.body) == (200, b"read 5\n"), r


def test_invalid_status_and_body_type(rsrv):
    r = rsrv.get("/r/bad-status")
    assert r.status == 500, r
    r = rsrv.get("/r/bad-body-type")
    # headers may already be sent; either a 500 or an aborted response
    assert r.status == 500 or not r.complete, r
    assert b"a str, not bytes" not in r.body
    assert rsrv.get("/r/ok").status == 200


@pytest.mark.parametrize("query", ["", "&cl=17", "&empty=1"])
def test_close_raising_completes_the_response_and_is_logged(rsrv, query):
    # As mod_wsgi: once the body is produced the response is complete (chunked: with its last
    # chunk; with Content-Length: the connection stays usable); close()'s exception is logged.
    tag = f"cr{len(query)}"
    r = rsrv.get(f"/r/close-raises?tag={tag}{query}")
    assert r.status == 200 and r.complete, r
    assert r.body == (b"" if "empty" in query else b"body-before-close")
    assert _closed(rsrv, tag) == ["closed"]
    assert rsrv.wait_for_log(r"RW0007: exception occurred in close\(\) of the result of")
    assert rsrv.wait_for_log(r"CloseError: boom-in-close")
    # On a kept-alive connection the next request is served on the same socket.
    import http.client
    c = http.client.HTTPConnection("127.0.0.1", rsrv.port, timeout=10)
    try:
        c.request("GET", f"/r/close-raises?tag={tag}k{query}")
        got = c.getresponse()
        assert got.status == 200 and got.read() == r.body
        sock = c.sock
        c.request("GET", "/r/ok")
        got = c.getresponse()
        assert (got.status, got.read()) == (200, b"ok\n")
        assert c.sock is sock, "the connection was closed after the close() error"
    finally:
        c.close()


def test_iterable_without_close(rsrv):
    r = rsrv.get("/r/close-list")
    assert r.status == 200 and r.body == b"xy" and r.complete


def _blob(srv, size=300_000):
    data = bytes(range(256)) * (size // 256) + b"tail"
    p = srv.write_file("data/blob.bin", data)
    return p, data


def test_file_wrapper_without_content_length(rsrv):
    p, data = _blob(rsrv)
    r = rsrv.get(f"/r/filewrapper?path={p}")
    assert r.status == 200 and r.complete, r
    assert r.body == data
    assert r.headers.get("Content-Length") in (None, str(len(data)))


def test_file_wrapper_with_offset(rsrv):
    p, data = _blob(rsrv)
    r = rsrv.get(f"/r/filewrapper?path={p}&seek=1000")
    assert r.status == 200 and r.complete, r
    assert r.body == data[1000:]


def test_file_wrapper_with_smaller_content_length(rsrv):
    p, data = _blob(rsrv)
    r = rsrv.get(f"/r/filewrapper?path={p}&cl=1000")
    assert r.status == 200 and r.complete, r
    assert r.body == data[:1000]


def test_file_wrapper_with_larger_content_length(rsrv):
    p, data = _blob(rsrv)
    r = rsrv.get(f"/r/filewrapper?path={p}&cl={len(data) + 1000}")
    assert r.status == 200, r
    assert len(r.body) <= len(data)
    assert r.body == data[:len(r.body)]
    assert not r.complete, r
    assert not r.timed_out


def test_file_wrapper_of_an_unlinked_file(rsrv):
    """The file is removed after the application opened it: it is still sent whole (in daemon
    mode the open descriptor travels to the httpd child, never the path)."""
    data = bytes(range(256)) * 800
    p = rsrv.state / "unlinked.bin"  # a directory the application's user may write
    p.write_bytes(data)
    os.chmod(p, 0o666)
    r = rsrv.get(f"/r/filewrapper?path={p}&unlink=1&seek=10")
    assert r.status == 200 and r.complete, r
    assert r.body == data[10:]
    assert not p.exists()


def test_file_wrapper_iterated_leaves_the_position_at_the_end(rsrv):
    """A wrapper the server cannot send as a file (hidden behind another iterable) is
    iterated; the file ends up where the iteration left it, and the body is whole."""
    p, data = _blob(rsrv, 100_000)
    tell = rsrv.state / "tell"
    r = rsrv.get(f"/r/filewrapper?path={p}&tell={tell}&blksize=4096")
    assert r.status == 200 and r.complete, r
    assert r.body == data
    assert harness.wait_for_file(tell)
    assert int(tell.read_text()) == len(data)


def test_file_wrapper_non_file_object(rsrv):
    r = rsrv.get("/r/filewrapper-bytesio")
    assert r.status == 200 and r.complete, r
    assert r.body == b"0123456789" * 1000


def test_file_wrapper_with_sendfile(apache_factory, mode):
    srv = apache_factory()
    script = srv.app("response.wsgi")
    srv.start(srv.mount("/r", script) + "WSGIEnableSendfile On\n")
    p, data = _blob(srv, 1 << 20)
    r = srv.get(f"/r/filewrapper?path={p}")
    assert r.status == 200 and r.complete, r
    assert r.body == data
    r = srv.get(f"/r/filewrapper?path={p}&cl=5000")
    assert r.complete and r.body == data[:5000]


def test_wsgi_errors_goes_to_error_log(rsrv):
    r = rsrv.get("/r/errors-write?marker=RWSGI-ERR-7731")
    assert r.status == 200
    assert rsrv.wait_for_log(r"RWSGI-ERR-7731 via wsgi.errors")


def test_print_goes_to_error_log(rsrv):
    r = rsrv.get("/r/print?marker=RWSGI-PRN-4410")
    assert r.status == 200
    assert r.json() == {"stdout": "ok", "stderr": "ok"}
    assert rsrv.wait_for_log(r"RWSGI-PRN-4410 via stdout")
    assert rsrv.wait_for_log(r"RWSGI-PRN-4410 via stderr")


def test_unknown_route_is_app_404(rsrv):
    r = rsrv.get("/r/nope")
    assert r.status == 404 and r.body == b"no such route: /nope"


def test_http10_client(rsrv):
    r = rsrv.get("/r/write", http10=True)
    assert r.status == 200
    assert r.body == b"hello world!"
    assert "chunked" not in (r.headers.get("Transfer-Encoding") or "")


def test_keepalive_connection_reused(rsrv):
    """Several requests on one persistent connection, including a POST whose body the app
    never reads and a chunked streaming response: framing stays intact."""
    import http.client
    c = http.client.HTTPConnection("127.0.0.1", rsrv.port, timeout=10)
    try:
        c.request("POST", "/r/ok", body=b"x" * 20000)  # the app does not read the body
        r = c.getresponse()
        assert (r.status, r.read()) == (200, b"ok\n")
        sock = c.sock
        assert sock is not None, "server closed the connection after the first request"
        c.request("GET", "/r/stream?sleep=0")
        r = c.getresponse()
        assert r.getheader("Transfer-Encoding") == "chunked"
        assert r.read() == b"chunk1\nchunk2\nchunk3\n"
        c.request("GET", "/r/write")
        r = c.getresponse()
        assert (r.status, r.read()) == (200, b"hello world!")
        c.request("GET", "/r/status-custom")
        r = c.getresponse()
        assert (r.status, r.reason, r.read()) == (299, "Custom Thing", b"custom status\n")
        assert c.sock is sock, "connection was not kept alive"
    finally:
        c.close()


def test_client_disconnect_mid_stream(rsrv):
    """The client goes away after the first chunk: close() is still called and the server
    keeps serving."""
    import socket
    s = socket.create_connection(("127.0.0.1", rsrv.port), timeout=10)
    try:
        s.sendall(b"GET /r/stream?sleep=1&tag=gone HTTP/1.1\r\nHost: x\r\n\r\n")
        got = b""
        while b"chunk1" not in got:
            data = s.recv(4096)
            assert data, "server closed before the first chunk"
            got += data
    finally:
        s.close()
    assert _closed(rsrv, "gone", timeout=10) == ["closed"]
    assert rsrv.get("/r/ok").status == 200


def test_declared_length_without_body_for_head_and_304(apache_factory, mode):
    srv = apache_factory()
    srv.start(srv.mount("/r", srv.app("response.wsgi")))
    r = srv.request("HEAD", "/r/head-cl-no-body")
    assert r.status == 200, r
    assert r.headers.get("Content-Length") == "1234"
    assert r.body == b""
    r = srv.get("/r/not-modified-cl")
    assert r.status == 304 and r.body == b"", r
    assert r.headers.get("ETag") == '"v1"'
    # On GET the same declared length without a body is an application error (500).
    assert srv.get("/r/head-cl-no-body").status == 500
    assert "declared Content-Length 1234 but sent only 0 bytes" in srv.error_log()
