"""Integration tests of the operators' view (issue 15): the `rwsgi-metrics` handler (checked
with prometheus_client's own text-format parser, from the pinned framework venv), the
`rwsgi-health` handler, and the shared-memory board behind them across daemon deaths and
graceful restarts. Real Apache, both modes."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time

import pytest

import harness
from test_daemon import daemon_pids
from test_frameworks import venv  # noqa: F401  (the session fixture)

APP = """\
import time

def application(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/missing":
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"no"]
    if path == "/slow":
        time.sleep(0.3)
    body = environ["wsgi.input"].read()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello " + body]
"""

HANDLERS = """\
<Location /metrics>
    SetHandler rwsgi-metrics
    Require all granted
</Location>
<Location /health>
    SetHandler rwsgi-health
    Require all granted
</Location>
<Location /private-metrics>
    SetHandler rwsgi-metrics
    Require all denied
</Location>
"""

PARSE = """\
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = []
for fam in text_string_to_metric_families(sys.stdin.read()):
    for s in fam.samples:
        out.append([fam.type, s.name, s.labels, s.value])
print(json.dumps(out))
"""


def scrape(srv: harness.Apache, venv_dir) -> list:
    r = srv.get("/metrics")
    assert r.status == 200, r.status
    assert r.headers.get("Content-Type", "").startswith("text/plain; version=0.0.4")
    p = subprocess.run([str(venv_dir / "bin" / "python"), "-c", PARSE], input=r.text,
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, f"prometheus_client refused the output:\n{p.stderr}\n{r.text}"
    return json.loads(p.stdout)


def value(samples: list, name: str, **labels) -> float:
    got = [s[3] for s in samples if s[1] == name and all(s[2].get(k) == v
                                                       for k, v in labels.items())]
    assert len(got) == 1, (name, labels, got)
    return got[0]


def test_metrics_count_exactly_the_requests_sent(apache_factory, mode, venv):
    srv = apache_factory()
    script = srv.write_file("apps/obs.wsgi", APP)
    srv.start(srv.mount("/app", script) + HANDLERS)
    group, m = ("", "embedded") if mode == "embedded" else (harness.DAEMON_GROUP, "daemon")
    before = scrape(srv, venv)
    base = value(before, "rwsgi_requests_total", group=group, mode=m, code="2xx")
    base4 = value(before, "rwsgi_requests_total", group=group, mode=m, code="4xx")
    for _ in range(5):
        assert srv.get("/app/x").status == 200
    assert srv.request("POST", "/app/x", body=b"y" * 1000).status == 200
    assert srv.get("/app/missing").status == 404
    assert srv.get("/app/slow").status == 200
    # A request is counted when its handler ends, which can be a moment after the client has
    # read the whole response: scrape until the last one is in (bounded), then check exactly.
    deadline = time.monotonic() + 10
    while True:
        after = scrape(srv, venv)
        if (value(after, "rwsgi_request_duration_seconds_count", group=group, mode=m)
                >= base + base4 + 8 or time.monotonic() > deadline):
            break
        time.sleep(0.1)
    assert value(after, "rwsgi_requests_total", group=group, mode=m, code="2xx") == base + 7
    assert value(after, "rwsgi_requests_total", group=group, mode=m, code="4xx") == base4 + 1
    assert value(after, "rwsgi_request_bytes_total", group=group, mode=m) >= 1000
    assert value(after, "rwsgi_response_bytes_total", group=group, mode=m) >= 8 * 6
    count = value(after, "rwsgi_request_duration_seconds_count", group=group, mode=m)
    assert count == base + base4 + 8
    # The slow request is in a bucket above 0.25 s, and the sum covers it.
    assert value(after, "rwsgi_request_duration_seconds_bucket", group=group, mode=m,
                 le="0.25") <= count - 1
    assert value(after, "rwsgi_request_duration_seconds_sum", group=group, mode=m) >= 0.3
    # The scrape itself is not an application request.
    assert value(after, "rwsgi_requests_in_flight", group=group, mode=m) == 0
    if mode == "daemon":
        assert value(after, "rwsgi_daemon_processes", group=group, state="ready") == 2
        busy = value(after, "rwsgi_daemon_threads", group=group, state="busy")
        idle = value(after, "rwsgi_daemon_threads", group=group, state="idle")
        assert busy + idle == 20
        assert value(after, "rwsgi_daemon_restarts_total", group=group, reason="crash") == 0
    # The handlers obey the location's Require like any other content.
    assert srv.get("/private-metrics").status == 403


def test_health_follows_the_daemon_groups(apache_factory, mode):
    """200 while every daemon group has a ready process; 503 naming the group and why while
    its only process is replaced (its start-up is slowed by an imported script), then 200."""
    srv = apache_factory()
    script = srv.write_file("apps/obs.wsgi", APP)
    slow = srv.write_file("apps/slow_start.py", "import time\ntime.sleep(3)\n")
    conf = srv.mount("/app", script) + HANDLERS
    if mode == "daemon":
        conf = ("WSGIDaemonProcess lonely processes=1 threads=2 display-name=lonely\n"
                f"WSGIImportScript {slow} process-group=lonely application-group=%{{GLOBAL}}\n"
                + srv.mount("/lonely", script, process_group="lonely") + conf)
    srv.start(conf)
    if mode == "embedded":
        # No daemon group: nothing to wait for.
        r = srv.get("/health")
        assert r.status == 200 and "ok: no daemon groups" in r.text, r.text
        return
    assert harness.wait_for(lambda: srv.get("/health").status == 200, timeout=20), \
        srv.get("/health").text
    r = srv.get("/health?group=lonely")
    assert r.status == 200 and "ok: group 'lonely': 1 of 1 processes ready" in r.text
    assert srv.get("/health?group=nope").status == 503
    (pid,) = daemon_pids(srv, "lonely")
    srv.allow_log(r"exited \(exit status or signal 9\)")
    os.kill(pid, signal.SIGKILL)
    # Within one supervision tick the group has no ready process.
    assert harness.wait_for(lambda: srv.get("/health").status == 503, timeout=5)
    r = srv.get("/health")
    assert "unavailable: group 'lonely': no process ready" in r.text, r.text
    assert "ok: group '" + harness.DAEMON_GROUP + "'" in r.text, r.text
    # The replacement becomes ready once its import script is done.
    assert harness.wait_for(lambda: srv.get("/health").status == 200, timeout=20)
    assert srv.get("/health").text.count("ok: group") == 2


def test_restarts_are_counted_by_reason(apache_factory, mode, venv):
    """Daemon restarts by reason; a server without daemon groups has no daemon families."""
    srv = apache_factory()
    script = srv.write_file("apps/obs.wsgi", APP)
    if mode == "embedded":
        srv.start(srv.mount("/app", script) + HANDLERS)
        assert srv.get("/app/x").status == 200
        names = {s[1] for s in scrape(srv, venv)}
        assert "rwsgi_requests_total" in names
        assert not [n for n in names if n.startswith("rwsgi_daemon_")], names
        return
    srv.start("WSGIDaemonProcess recycled processes=1 threads=1 maximum-requests=2 "
              "display-name=recycled\n"
              + srv.mount("/r", script, process_group="recycled") + HANDLERS)
    for _ in range(4):
        assert srv.get("/r/x").status == 200
    srv.allow_log(r"exited \(exit status or signal 9\)")

    def counted(reason: str, n: int):
        return value(scrape(srv, venv), "rwsgi_daemon_restarts_total", group="recycled",
                     reason=reason) >= n

    assert harness.wait_for(lambda: counted("maximum-requests", 2), timeout=20)
    assert harness.wait_for(lambda: daemon_pids(srv, "recycled"), timeout=20)
    (pid,) = daemon_pids(srv, "recycled")
    os.kill(pid, signal.SIGKILL)
    assert harness.wait_for(lambda: counted("crash", 1), timeout=20)


def test_no_shared_memory_growth_across_graceful_restarts(apache_factory, mode):
    srv = apache_factory()
    script = srv.write_file("apps/obs.wsgi", APP)
    srv.start(srv.mount("/app", script) + HANDLERS)

    def shared_maps() -> int:
        maps = open(f"/proc/{srv.parent_pid}/maps").read().splitlines()
        return sum(1 for line in maps if "/dev/zero (deleted)" in line)

    assert srv.get("/app/x").status == 200
    first = shared_maps()
    assert first >= 1
    for _ in range(10):
        srv.graceful()
    assert srv.get("/app/x").status == 200
    assert srv.get("/metrics").status == 200
    assert shared_maps() == first


def test_server_status_has_a_section(apache_factory, mode):
    """mod_status's page carries mod_rwsgi's section (HTML and `?auto` lines): requests per
    mode, and per daemon process its pid, state and restarts; a killed daemon shows up as a
    restart with reason crash, and its replacement with a new pid."""
    srv = apache_factory(modules=["status"])
    script = srv.write_file("apps/obs.wsgi", APP)
    srv.start(srv.mount("/app", script)
              + "<Location /server-status>\n    SetHandler server-status\n"
                "    Require all granted\n</Location>\n")
    for _ in range(3):
        assert srv.get("/app/x").status == 200
    html = srv.get("/server-status").text
    assert "<h2>mod_rwsgi</h2>" in html, html
    group = harness.DAEMON_GROUP
    want = ("RwsgiEmbeddedRequests: 3\n" if mode == "embedded"
            else f"RwsgiGroup{group}Requests: 3\n")
    # A request is counted when its handler ends, a moment after the client has the response.
    deadline = time.monotonic() + 10
    while True:
        auto = srv.get("/server-status?auto").text
        if want in auto or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert want in auto, auto
    if mode == "embedded":
        assert "RwsgiGroup" not in auto
        return
    assert f"<h3>Daemon group {group}</h3>" in html, html
    pids = sorted(daemon_pids(srv))

    def all_ready():
        # A process that has not served yet may still be starting (a loaded machine).
        a = srv.get("/server-status?auto").text
        return a if all(re.search(rf"pid={pid} generation=\d+ state=ready", a)
                        for pid in pids) else None

    auto = harness.wait_for(all_ready, timeout=20)
    assert auto, srv.get("/server-status?auto").text
    srv.allow_log(r"exited \(exit status or signal 9\)")
    os.kill(pids[0], signal.SIGKILL)

    def replaced():
        a = srv.get("/server-status?auto").text
        return a if (f"pid={pids[0]} " not in a and "last_exit=crash" in a
                     and a.count("state=ready") == 2) else None

    auto = harness.wait_for(replaced, timeout=20)
    assert auto, srv.get("/server-status?auto").text
    assert f"RwsgiGroup{group}Restarts: 1\n" in auto, auto
    assert "restarts=1 last_exit=crash" in auto, auto


def test_grafana_dashboard_queries_families_the_handler_serves(apache_factory, mode, venv):
    """conf/grafana/rwsgi-dashboard.json: every metric its panels query is one the handler
    serves (in daemon mode all of them exist; embedded mode has no daemon families)."""
    dash = json.loads((harness.REPO / "conf" / "grafana" / "rwsgi-dashboard.json").read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    assert len(dash["panels"]) >= 4 and exprs
    wanted = {m for e in exprs for m in re.findall(r"\brwsgi_[a-z_]+", e)}
    srv = apache_factory()
    script = srv.write_file("apps/obs.wsgi", APP)
    srv.start(srv.mount("/app", script) + HANDLERS)
    assert srv.get("/app/x").status == 200

    def missing() -> set:
        served = {s[1] for s in scrape(srv, venv)}
        gone = {m for m in wanted if m not in served}
        if mode == "embedded":
            gone = {m for m in gone if not m.startswith("rwsgi_daemon_")}
        return gone

    # The daemons sample their resident size once a second: wait for the first sample.
    assert harness.wait_for(lambda: not missing(), timeout=10), missing()


def test_server_status_shows_a_running_request_and_its_time(apache_factory, mode):
    """A slow request shows in server-status while it runs, with a running time that grows:
    in daemon mode on mod_rwsgi's per-thread line (request line, client, request id), in
    embedded mode in mod_status's own worker table (the request runs in the httpd child)."""
    import threading
    srv = apache_factory(modules=["status"])
    script = srv.write_file("apps/sleepy.wsgi", """\
import time

def application(environ, start_response):
    time.sleep(float(environ["QUERY_STRING"] or 0))
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"done"]
""")
    srv.start("ExtendedStatus On\n" + srv.mount("/app", script)
              + "<Location /server-status>\n    SetHandler server-status\n"
                "    Require all granted\n</Location>\n")
    done = []
    t = threading.Thread(target=lambda: done.append(srv.get("/app/slow?3", timeout=30).status))
    t.start()
    try:
        if mode == "embedded":
            assert harness.wait_for(
                lambda: "GET /app/slow?3" in srv.get("/server-status").text, timeout=5)
        else:
            line = re.compile(r'RwsgiGroup\S+Process\d+Thread\d+: time=([0-9.]+) '
                              r'request="GET /app/slow\?3" client=127\.0\.0\.1:\d+ id=\S+')

            def seen():
                m = line.search(srv.get("/server-status?auto").text)
                return float(m.group(1)) if m else None

            first = harness.wait_for(seen, timeout=5)
            assert first is not None, srv.get("/server-status?auto").text
            time.sleep(0.6)
            second = seen()
            assert second is not None and second >= first + 0.5, (first, second)
            html = srv.get("/server-status").text
            assert "<td>GET /app/slow?3</td>" in html, html
    finally:
        t.join(timeout=30)
    assert done == [200]
    if mode == "daemon":
        # Done: the thread is idle again.
        assert harness.wait_for(lambda: "Thread" not in srv.get("/server-status?auto").text,
                                timeout=5)


GC_APP = """\
import gc

def application(environ, start_response):
    if environ["PATH_INFO"] == "/gc":
        for _ in range(3):
            gc.collect()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]
"""


def test_queue_waits_gc_and_websockets_are_on_the_metrics_page(apache_factory, mode, venv):
    """The figures beyond the request counts: a daemon group's queue-wait histogram counts
    each request a daemon took; each live daemon process reports Python's collections by
    generation; WebSocket sessions (open now, opened) and whole messages each way are counted
    per mode/group."""
    srv = apache_factory()
    wsgi = srv.write_file("apps/gc.wsgi", GC_APP)
    asgi = srv.app("asgi_app.py")
    srv.start(srv.mount("/app", wsgi)
              + srv.mount("/api", asgi, application_group="%{GLOBAL}") + HANDLERS)
    group, m = ("", "embedded") if mode == "embedded" else (harness.DAEMON_GROUP, "daemon")
    for _ in range(4):
        assert srv.get("/app/x").status == 200
    assert srv.get("/app/gc").status == 200
    ws = harness.WebSocket(srv.port, "/api/ws/echo?tag=m1")
    assert ws.accept_ok(), (ws.status, ws.headers.items)
    for text in ("one", "two"):
        ws.send_text(text)
        assert ws.recv_message() == (0x1, text.encode())
    during = scrape(srv, venv)
    assert value(during, "rwsgi_websocket_sessions_open", group=group, mode=m) == 1
    ws.close(1000, "done")
    assert ws.recv()[0] == 0x8
    ws.shutdown()

    def settled():
        s = scrape(srv, venv)
        closed = value(s, "rwsgi_websocket_sessions_open", group=group, mode=m) == 0
        if mode == "daemon":
            gc_seen = sum(x[3] for x in s if x[1] == "rwsgi_daemon_python_gc_collections_total"
                          and x[2]["generation"] == "2") >= 3
            return s if closed and gc_seen else None
        return s if closed else None

    after = harness.wait_for(settled, timeout=10)
    assert after, scrape(srv, venv)
    assert value(after, "rwsgi_websocket_sessions_total", group=group, mode=m) == 1
    assert value(after, "rwsgi_websocket_messages_total", group=group, mode=m,
                 direction="in") == 2
    assert value(after, "rwsgi_websocket_messages_total", group=group, mode=m,
                 direction="out") == 2
    families = {x[1] for x in after}
    if mode == "embedded":
        assert not any(f.startswith("rwsgi_queue_wait") for f in families), families
        return
    # Every request a daemon took: the five WSGI ones, the WebSocket's handshake, and none
    # of the scrapes (they are answered by the httpd child).
    waited = value(after, "rwsgi_queue_wait_seconds_count", group=group)
    assert waited == 6, waited
    assert value(after, "rwsgi_queue_wait_seconds_bucket", group=group, le="+Inf") == waited
    assert 0 <= value(after, "rwsgi_queue_wait_seconds_sum", group=group) < 6 * 5
    collected = [x for x in after if x[1] == "rwsgi_daemon_python_gc_collected_total"]
    assert len(collected) == 2, collected  # one per live process of the group


CHILD_APP = """\
import gc, os

def application(environ, start_response):
    if environ["PATH_INFO"] == "/gc":
        gc.collect()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [str(os.getpid()).encode()]
"""


@pytest.mark.embedded_only
def test_embedded_children_have_their_own_figures(apache_factory, mode, venv):
    """Each httpd child that answers embedded-mode requests has its own line (server-status
    `?auto`, the HTML table) and samples (metrics page): its scoreboard slot and pid, the
    requests it answered, its resident size and its Python collections."""
    srv = apache_factory(modules=["status"])
    script = srv.write_file("apps/child.wsgi", CHILD_APP)
    srv.start(srv.mount("/app", script) + HANDLERS
              + "<Location /server-status>\n    SetHandler server-status\n"
                "    Require all granted\n</Location>\n")
    served: dict[int, int] = {}
    for path in ["/app/x"] * 6 + ["/app/gc"]:
        r = srv.get(path)
        assert r.status == 200
        served[int(r.body)] = served.get(int(r.body), 0) + 1

    def lines():
        auto = srv.get("/server-status?auto").text
        got = {int(m.group(2)): (int(m.group(1)), m.group(3))
               for m in re.finditer(r"RwsgiEmbeddedChild(\d+): pid=(\d+) uptime=\d+ "
                                    r"(requests=\d+ in_flight=\d+ rss=\d+ gc=\d+/\d+/\d+)",
                                    auto)}
        done = all(f"requests={n} in_flight=0" in got.get(pid, (0, ""))[1]
                   for pid, n in served.items())
        return (got, auto) if done else None

    found = harness.wait_for(lines, timeout=10)
    assert found, (served, srv.get("/server-status?auto").text)
    got, auto = found
    for pid, (slot, text) in got.items():
        if pid in served:
            assert not text.split("rss=")[1].startswith("0 "), text
    assert srv.get("/app/gc").status == 200
    html = srv.get("/server-status").text
    assert "<th>GC collections (gen 0/1/2)</th>" in html, html
    # Each child mirrors its collections at the end of its requests: the two full collections
    # the application ran show up, whichever child ran them.
    def collected():
        s = scrape(srv, venv)
        full = sum(x[3] for x in s if x[1] == "rwsgi_embedded_child_python_gc_collections_total"
                   and x[2]["generation"] == "2")
        return s if full >= 2 else None

    samples = harness.wait_for(collected, timeout=10)
    assert samples, scrape(srv, venv)
    for pid, (slot, _) in got.items():
        assert value(samples, "rwsgi_embedded_child_requests_total",
                     slot=str(slot)) >= served.get(pid, 0)
