"""wsgi.input: read variants, EOF handling, chunked request bodies, large bodies."""

import hashlib
import random

import pytest

BODY = b"line one\nline two\nthird line without newline"


@pytest.fixture
def input_server(apache_factory, mode):
    srv = apache_factory()
    script = srv.app("input.wsgi")
    srv.start(srv.mount("/in", script) + srv.mount("/chunked", script) +
              "<Location /chunked>\n  WSGIChunkedRequest On\n</Location>\n")
    return srv


def _post(srv, path, body=BODY, **kw):
    r = srv.request("POST", path, body=body, **kw)
    assert r.status == 200 and r.complete, r
    out = r.json()
    assert out["error"] is None, out
    return out


def test_read_all(input_server):
    out = _post(input_server, "/in/read")
    assert out["parts"] == [BODY.decode(), ""]
    assert out["types"] == ["bytes", "bytes"]
    assert out["input_terminated"] is True
    assert out["content_length"] == str(len(BODY))


def test_read_none_and_negative(input_server):
    assert _post(input_server, "/in/read-none")["parts"] == [BODY.decode()]
    assert _post(input_server, "/in/read-neg")["parts"] == [BODY.decode()]


def test_read_n(input_server):
    out = _post(input_server, "/in/read-n?n=4")
    parts = out["parts"]
    assert parts[-1] == ""
    assert all(len(p) == 4 for p in parts[:-2]) and 0 < len(parts[-2]) <= 4
    assert "".join(parts) == BODY.decode()


def test_read_never_past_body(input_server):
    out = _post(input_server, "/in/big", body=b"12345")
    assert out["parts"] == ["12345", ""]
    assert out["total"] == 5


def test_readline(input_server):
    out = _post(input_server, "/in/readline")
    assert out["parts"] == ["line one\n", "line two\n", "third line without newline", ""]


def test_readline_size(input_server):
    out = _post(input_server, "/in/readline?size=5")
    parts = out["parts"]
    assert parts[:3] == ["line ", "one\n", "line "]
    assert all(len(p) <= 5 for p in parts)
    assert "".join(parts) == BODY.decode()
    assert parts[-1] == ""


def test_readlines(input_server):
    out = _post(input_server, "/in/readlines")
    assert out["parts"] == ["line one\n", "line two\n", "third line without newline"]
    out = _post(input_server, "/in/readlines?hint=3")
    # a hint stops after the line that reaches it
    assert out["parts"][0] == "line one\n"
    assert "".join(out["parts"]) == BODY.decode()[:len("".join(out["parts"]))]


def test_iteration(input_server):
    out = _post(input_server, "/in/iter")
    assert out["parts"] == ["line one\n", "line two\n", "third line without newline"]


def test_mixed_reads(input_server):
    out = _post(input_server, "/in/mixed")
    assert out["parts"] == ["li", "ne one\n", "line two\nthird line without newline"]


def test_empty_body(input_server):
    r = input_server.request("GET", "/in/read")
    assert r.status == 200
    out = r.json()
    assert out["parts"] == ["", ""] and out["error"] is None


def test_chunked_refused_by_default(input_server):
    r = input_server.request("POST", "/in/read", body=BODY, chunked=True)
    assert r.status == 411, r


def test_chunked_accepted_when_enabled(input_server):
    out = _post(input_server, "/chunked/read", chunked=True)
    assert out["parts"] == [BODY.decode(), ""]
    out = _post(input_server, "/chunked/readline", chunked=True)
    assert out["parts"] == ["line one\n", "line two\n", "third line without newline", ""]
    out = _post(input_server, "/chunked/read-n?n=5", chunked=True)
    assert "".join(out["parts"]) == BODY.decode()


def test_one_mib_post_round_trip(input_server):
    body = random.Random(1).randbytes(1 << 20)
    r = input_server.request("POST", "/in/echo", body=body,
                             headers={"Content-Type": "application/octet-stream"})
    assert r.status == 200 and r.complete, r
    assert len(r.body) == len(body)
    assert hashlib.sha256(r.body).hexdigest() == hashlib.sha256(body).hexdigest()


def test_one_mib_chunked_round_trip(input_server):
    body = random.Random(2).randbytes(1 << 20)
    r = input_server.request("POST", "/chunked/echo", body=body, chunked=True, chunk_size=65536)
    assert r.status == 200 and r.complete, r
    assert r.body == body


@pytest.mark.parametrize("prefix", ["/in", "/chunked"])
def test_large_reads_after_a_readline(input_server, prefix):
    """Large read(n) calls (which fill one bytes object straight from the body when its length
    is known) after a readline() left bytes buffered, one asking for more than is left, then
    read() of the rest: every byte arrives once, in order."""
    rnd = random.Random(3)
    body = b"first line\n" + rnd.randbytes(300_000) + b"\n" + rnd.randbytes(100_000)
    sizes = [70_000, 1, 200_000, 500_000]
    r = input_server.request("POST", f"{prefix}/digest?sizes={','.join(map(str, sizes))}",
                             body=body, chunked=prefix == "/chunked")
    assert r.status == 200 and r.complete, r
    out = r.json()
    rest = len(body) - len(b"first line\n") - 70_001 - 200_000
    assert out["lengths"] == [len(b"first line\n"), 70_000, 1, 200_000, rest, 0], out
    assert out["sha256"] == hashlib.sha256(body).hexdigest()


def test_limit_request_body(apache_factory):
    srv = apache_factory()
    script = srv.app("input.wsgi")
    srv.start(srv.mount("/in", script) + "LimitRequestBody 1000\n")
    r = srv.request("POST", "/in/read", body=b"x" * 5000)
    assert r.status == 413, r
    out = _post(srv, "/in/read", body=b"y" * 999)
    assert out["total"] == 999
