"""mod_wsgi 6's Python metrics and events API, the parts applications and APM agents call:
`mod_wsgi.request_metrics()` (per interval, drained by each call), `mod_wsgi.request_data()`,
`mod_wsgi.subscribe_events()` (request_started, response_started, request_exception,
request_finished) and `mod_wsgi.subscribe_shutdown()` (process_stopping with mod_wsgi's
shutdown_reason). Real Apache, both modes."""

import http.client
import json

import harness

METRICS_APP = """\
import json, mod_wsgi, os

def application(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/start":
        mod_wsgi.start_recording_metrics()
        body = {"pid": os.getpid()}
    elif path == "/metrics":
        body = {"pid": os.getpid(), "m": mod_wsgi.request_metrics()}
    else:
        n = int(environ.get("CONTENT_LENGTH") or 0)
        data = environ["wsgi.input"].read(n)
        status = "404 Not Found" if path == "/missing" else "200 OK"
        start_response(status, [("Content-Type", "text/plain")])
        return [b"got ", str(len(data)).encode(), b"\\n"]
    start_response("200 OK", [("Content-Type", "application/json")])
    return [json.dumps(body).encode()]
"""


# One httpd child: a client that reconnects (after an error answer closes the connection)
# reaches the same process, whose figures and recorded events the test reads.
ONE_CHILD = {
    "prefork": "StartServers 1\nMinSpareServers 1\nMaxSpareServers 1\nServerLimit 1\n"
               "MaxRequestWorkers 1\n",
}
ONE_CHILD["event"] = ONE_CHILD["worker"] = (
    "StartServers 1\nServerLimit 1\nThreadsPerChild 10\nMaxRequestWorkers 10\n"
    "MinSpareThreads 1\nMaxSpareThreads 10\n")


def _one_child_server(apache_factory):
    srv = apache_factory()
    srv.sizing = ONE_CHILD[srv.mpm]
    return srv


def _conn(srv):
    return http.client.HTTPConnection("127.0.0.1", srv.port, timeout=30)


def _get(c, path, body=None):
    c.request("POST" if body is not None else "GET", path, body=body)
    r = c.getresponse()
    return r.status, r.read()


def test_request_metrics_counts_one_interval_per_call(apache_factory, mode):
    """Over one kept-alive connection to one process (either mode): None before recording
    starts; then each call reports exactly the requests that ended since the previous call
    (statuses by class, bytes, phase histograms with mod_wsgi's 65 buckets) and starts a new
    interval. The queue and daemon phases exist in daemon mode only."""
    srv = _one_child_server(apache_factory)
    script = srv.write_file("apps/rmetrics.wsgi", METRICS_APP)
    if mode == "embedded":
        conf = srv.mount("/m", script)
    else:
        conf = ("WSGIDaemonProcess rm processes=1 threads=3\n"
                + srv.mount("/m", script, process_group="rm"))
    srv.start(conf)
    c = _conn(srv)
    status, body = _get(c, "/m/metrics")
    assert status == 200 and json.loads(body)["m"] is None, body
    pid = json.loads(_get(c, "/m/start")[1])["pid"]
    first = json.loads(_get(c, "/m/metrics")[1])
    assert first["pid"] == pid, first
    # The request that turned recording on started before it: not counted.
    assert first["m"]["request_count"] == 0, first["m"]
    for _ in range(3):
        assert _get(c, "/m/work", body=b"x" * 1000) == (200, b"got 1000\n")
    assert _get(c, "/m/missing", body=b"y" * 10)[0] == 404
    got = json.loads(_get(c, "/m/metrics")[1])
    assert got["pid"] == pid, got
    m = got["m"]
    # The four requests and the previous /metrics call.
    assert m["request_count"] == 5, m
    assert (m["status_2xx"], m["status_4xx"], m["status_5xx"]) == (4, 1, 0), m
    assert m["status_1xx"] == m["status_3xx"] == 0, m
    assert m["input_bytes"] == 3010 and m["input_reads"] >= 4, m
    assert m["output_bytes"] >= 4 * len(b"got 1000\n") and m["output_writes"] >= 5, m
    assert m["sample_period"] > 0 and m["stop_time"] >= m["start_time"] > 1.0e9, m
    assert m["request_throughput"] > 0 and 0 <= m["capacity_utilization"], m
    assert m["memory_rss"] > 0 and m["cpu_utilization"] >= 0, m
    for phase in ("server_time", "application_time", "request_time", "input_read_time",
                  "output_write_time"):
        assert len(m[phase + "_buckets"]) == 65, phase
        assert sum(m[phase + "_buckets"]) == 5, (phase, m[phase + "_buckets"])
        assert isinstance(m[phase], float) and m[phase] >= 0, phase
        assert 0 <= m[phase + "_min_us"] <= m[phase + "_max_us"], phase
    assert m["request_time_max_us"] >= m["application_time_max_us"], m
    if mode == "daemon":
        for phase in ("queue_time", "daemon_time"):
            assert sum(m[phase + "_buckets"]) == 5 and m[phase + "_min_us"] is not None, phase
    else:
        assert m["queue_time"] is None and m["daemon_time_min_us"] is None, m
    assert m["gil_wait_time"] is None, m
    maximum = m["request_threads_maximum"]
    assert maximum >= 1 and len(m["request_threads_completed"]) == maximum, m
    assert sum(m["request_threads_completed"]) == 5, m
    assert 1 <= m["request_threads_started"] <= maximum, m
    # Drained: the next call sees only the one call before it.
    again = json.loads(_get(c, "/m/metrics")[1])["m"]
    assert again["request_count"] == 1 and again["status_2xx"] == 1, again
    assert again["input_bytes"] == 0 and sum(again["request_time_buckets"]) == 1, again
    c.close()


EVENTS_APP = """\
import json, mod_wsgi, os

SEEN = []
try:
    mod_wsgi.request_data()
    OUTSIDE = "no error"
except RuntimeError as e:
    OUTSIDE = str(e)


@mod_wsgi.subscribe_events
def record(name, **event):
    if name == "request_started":
        environ = event["request_environ"]
        if environ["PATH_INFO"] == "/log":
            return None
        event["request_data"]["mark"] = "from " + environ["PATH_INFO"]
        SEEN.append([name, sorted(event)])
        application = event["application_object"]

        def wrapped(environ, start_response):
            def start(status, headers, exc_info=None):
                return start_response(status, headers + [("X-Wrapped", "1")], exc_info)
            return application(environ, start)

        return {"application_object": wrapped}
    if event.get("request_data", {}).get("mark") is None:
        return None
    if name == "response_started":
        # A subscriber may add to the headers the application gave.
        event["response_headers"].append(("X-Event", "response_started"))
        SEEN.append([name, event["response_status"]])
    elif name == "request_exception":
        SEEN.append([name, event["exception_info"][0].__name__])
    elif name == "request_finished":
        SEEN.append([name, event["status"], event["output_length"], event["input_length"],
                     event["application_time"] >= 0, event["cpu_time"] >= 0,
                     event["request_data"]["mark"], "request_id" in event])


@mod_wsgi.subscribe_events
def broken(name, **event):
    if name == "request_started" and event["request_environ"]["PATH_INFO"] == "/broken":
        raise ValueError("subscriber broke")


def application(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/log":
        start_response("200 OK", [("Content-Type", "application/json")])
        out = {"seen": SEEN[:], "outside": OUTSIDE, "pid": os.getpid(),
               "subscribers": len(mod_wsgi.event_callbacks)}
        SEEN.clear()
        return [json.dumps(out).encode()]
    if path == "/boom":
        raise KeyError("boom")
    body = environ["wsgi.input"].read()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [mod_wsgi.request_data()["mark"].encode(), b" ", str(len(body)).encode()]
"""


def test_events_are_published_around_each_request(apache_factory, mode):
    """subscribe_events as mod_wsgi publishes: request_started (a subscriber may wrap the
    application), response_started (it may add headers), request_exception, request_finished
    (status, lengths, times, CPU), each with the request's `request_data` dict, which
    `mod_wsgi.request_data()` returns during the request (and refuses outside one). A
    subscriber that raises is logged (RW0027) and the request goes on. Two scripts in one
    process run in two sub-interpreters, each with its own subscribers."""
    srv = _one_child_server(apache_factory)
    script = srv.write_file("apps/events.wsgi", EVENTS_APP)
    if mode == "embedded":
        conf = srv.mount("/a", script) + srv.mount("/b", script)
    else:
        conf = ("WSGIDaemonProcess ev processes=1 threads=2\n"
                + srv.mount("/a", script, process_group="ev")
                + srv.mount("/b", script, process_group="ev"))
    srv.start(conf)
    c = _conn(srv)
    c.request("POST", "/a/hello", body=b"12345")
    r = c.getresponse()
    assert (r.status, r.read()) == (200, b"from /hello 5")
    assert r.getheader("X-Wrapped") == "1" and r.getheader("X-Event") == "response_started"
    assert _get(c, "/a/boom")[0] == 500
    assert _get(c, "/a/broken") == (200, b"from /broken 0")
    log = json.loads(_get(c, "/a/log")[1])
    assert log["outside"] == "no active request for thread", log
    assert log["subscribers"] == 2, log
    seen = log["seen"]
    names = [e[0] for e in seen]
    assert names == ["request_started", "response_started", "request_finished",
                     "request_started", "request_exception", "request_finished",
                     "request_started", "response_started", "request_finished"], seen
    keys = set(seen[0][1])
    assert keys >= {"request_environ", "application_object", "request_data", "thread_id",
                    "request_start", "application_start", "callable_object",
                    "request_id"}, keys
    assert seen[1][1] == "200 OK", seen
    assert seen[2][1:] == [200, len(b"from /hello 5"), 5, True, True, "from /hello", True], seen
    assert seen[4][1] == "KeyError" and seen[5][1] == 500, seen
    assert srv.wait_for_log(r"RW0027: a subscriber of mod_wsgi event 'request_started'")
    # The other script's interpreter has its own subscribers and saw none of this.
    other = json.loads(_get(c, "/b/log")[1])
    assert other["seen"] == [] and other["subscribers"] == 2, other
    c.close()


STOPPING_APP = """\
import mod_wsgi, os

@mod_wsgi.subscribe_shutdown
def stopping(name, shutdown_reason, **event):
    with open("@STATE@/stopping-%d" % os.getpid(), "w") as f:
        f.write("%s %r\\n" % (name, shutdown_reason))

def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [str(os.getpid()).encode()]
"""


def test_process_stopping_event_says_why(apache_factory, mode):
    """subscribe_shutdown's process_stopping, with mod_wsgi's shutdown_reason: in daemon mode
    'maximum_requests' for a process recycled by maximum-requests= and 'shutdown_signal' when
    Apache stops; in an httpd child (embedded) when it exits, with an empty reason."""
    srv = apache_factory()
    script = srv.write_file("apps/stopping.wsgi", STOPPING_APP)
    if mode == "embedded":
        srv.start(srv.mount("/s", script))
        pid = int(srv.get("/s/x").body)
        srv.stop()
        got = harness.wait_for_record(srv.state / f"stopping-{pid}")
        assert got == "process_stopping ''\n", got
        return
    srv.start("WSGIDaemonProcess st processes=1 threads=1 maximum-requests=2\n"
              + srv.mount("/s", script, process_group="st"))
    first = int(srv.get("/s/x").body)
    assert int(srv.get("/s/x").body) == first
    got = harness.wait_for_record(srv.state / f"stopping-{first}")
    assert got == "process_stopping 'maximum_requests'\n", got
    def answered():
        r = srv.get("/s/x")
        return r.status == 200 and r.body

    second = int(harness.wait_for(answered, timeout=20))
    assert second != first
    srv.stop()
    got = harness.wait_for_record(srv.state / f"stopping-{second}")
    assert got == "process_stopping 'shutdown_signal'\n", got
