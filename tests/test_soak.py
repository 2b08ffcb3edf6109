"""Memory of httpd children and daemons under volume (RELIABILITY.md, "Faults, restarts and
soak").

- test_64mib_transfers_run_in_bounded_memory (always runs): the peak RSS (VmHWM, reset through
  /proc/PID/clear_refs) of every httpd child and daemon during a 64 MiB upload and a 64 MiB
  download stays under 32 MiB above its RSS before the transfer. A memory assertion, not a
  timing one.
- test_soak_million_requests_rss (only with RWSGI_SOAK=1): wrk -c 16 sends 1,000,000 hello
  requests (to one %{GLOBAL} application, and again rotating over three application groups,
  each a sub-interpreter) (RWSGI_SOAK_REQUESTS) after a 50,000-request warm-up, in rounds of at most 30 s,
  bounded overall by RWSGI_SOAK_MAX_S seconds (default 1800) per mode; the summed RSS of the
  httpd children and daemons may grow by at most 2 % between the end of the warm-up and the
  end. Run it alone and niced:

      RWSGI_SOAK=1 RWSGI_SO=$PWD/target/release/libmod_rwsgi.so nice -n 19 \\
          /usr/bin/python3 -m pytest -q -s -p no:cacheprovider tests/test_soak.py -k soak

  FIGURE lines (printed with -s) carry the numbers recorded in RELIABILITY.md.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import time

import pytest

import harness
from test_faults import MIB, figure, serve

SOAK = os.environ.get("RWSGI_SOAK") == "1"
SOAK_REQUESTS = int(os.environ.get("RWSGI_SOAK_REQUESTS", "1000000"))
SOAK_MAX_S = float(os.environ.get("RWSGI_SOAK_MAX_S", "1800"))
WARMUP = 50_000
GROWTH_LIMIT = 0.02
TRANSFER_LIMIT_KIB = 32 * 1024


def status_kib(pid: int, field: str) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def workers(srv: harness.Apache) -> list[int]:
    """The processes that serve requests: every child of the httpd parent (httpd children and
    daemon processes)."""
    return sorted(srv.child_pids())


def rss_map(srv) -> dict[int, int]:
    return {p: v for p in workers(srv) if (v := status_kib(p, "VmRSS")) is not None}


def reset_peak(pids):
    for p in pids:
        try:
            with open(f"/proc/{p}/clear_refs", "w") as f:
                f.write("5")  # resets VmHWM to the current RSS
        except OSError:
            pass


# --------------------------------------------------------------------------- 64 MiB transfers

def _download(srv, size: int) -> int:
    """GET /f/big?size=N; pause 1 s after the first MiB (so a server that buffered the rest
    would show it), then read everything. Returns the bytes received."""
    s = socket.create_connection(("127.0.0.1", srv.port), timeout=30)
    try:
        s.sendall(f"GET /f/big?size={size} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                  "Connection: close\r\n\r\n".encode())
        buf = b""
        while b"\r\n\r\n" not in buf:
            d = s.recv(65536)
            assert d, buf
            buf += d
        head, _, rest = buf.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200"), head
        got = len(rest)
        paused = False
        for _ in range(1_000_000):
            if not paused and got >= MIB:
                time.sleep(1.0)
                paused = True
            d = s.recv(1 << 20)
            if not d:
                break
            got += len(d)
        return got
    finally:
        s.close()


def test_64mib_transfers_run_in_bounded_memory(apache_factory, mode):
    srv = serve(apache_factory, mode, daemon_opts="processes=1 threads=2")
    size = 64 * MIB
    # Warm up every path once with 1 MiB so lazy allocations are not counted as growth.
    assert _download(srv, MIB) == MIB
    r = srv.request("POST", "/f/upload", body=b"w" * MIB, timeout=30)
    assert r.status == 200 and r.json()["length"] == MIB, r
    results = {}
    for what in ("download", "upload"):
        base = rss_map(srv)
        reset_peak(base)
        if what == "download":
            assert _download(srv, size) == size
        else:
            r = srv.request("POST", "/f/upload", body=b"u" * size, timeout=60)
            assert r.status == 200 and r.json()["length"] == size, r
        grew = {p: (status_kib(p, "VmHWM") or 0) - base[p] for p in base if harness.pid_alive(p)}
        results[what] = grew
        worst = max(grew.values())
        figure(f"transfer-64MiB-{what}-{mode}", processes=len(grew),
               max_peak_above_baseline_kib=worst,
               baseline_kib={p: base[p] for p in grew})
        assert worst < TRANSFER_LIMIT_KIB, (what, grew)


# --------------------------------------------------------------------------- soak

def _wrk(port: int, seconds: int, script: str | None = None) -> dict:
    """One bounded wrk run: requests, errors by kind (connect/read/write/timeout/non2xx), req/s.
    `script`: a wrk Lua script (e.g. one that rotates over several URLs)."""
    extra = ["-s", script] if script else []
    p = subprocess.run(["wrk", "-t2", "-c16", f"-d{seconds}s", "--timeout", "10s", *extra,
                        f"http://127.0.0.1:{port}/f/hello"],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                       timeout=seconds + 60)
    out = p.stdout
    m = re.search(r"(\d+) requests in ([\d.]+)(m?s)", out)
    assert p.returncode == 0 and m, out
    res = {"requests": int(m.group(1)), "connect": 0, "read": 0, "write": 0, "timeout": 0,
           "non2xx": 0}
    e = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if e:
        for k, v in zip(("connect", "read", "write", "timeout"), e.groups()):
            res[k] = int(v)
    e = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if e:
        res["non2xx"] = int(e.group(1))
    return res


def _run_until(port: int, target: int, deadline: float, round_s: int,
               script: str | None = None) -> dict:
    """wrk rounds of at most round_s seconds until `target` requests or the deadline."""
    total = {"requests": 0, "connect": 0, "read": 0, "write": 0, "timeout": 0, "non2xx": 0}
    for _ in range(10_000):
        left = deadline - time.monotonic()
        if total["requests"] >= target or left < 5:
            break
        for k, v in _wrk(port, int(min(round_s, left)), script).items():
            total[k] += v
    return total


# The soak's MPM sizing: both event children started up front and kept, with 40 threads for
# wrk's 16 connections, and no keep-alive request limit. With the harness's 20 threads the
# event MPM closes idle keep-alive connections when it nears MaxRequestWorkers (for static
# files as well as for WSGI), which wrk counts as read errors; with this headroom there are
# none, so any error is a failure.
SOAK_CONF = """\
StartServers 2
ThreadsPerChild 20
MaxRequestWorkers 40
MinSpareThreads 40
MaxSpareThreads 40
MaxKeepAliveRequests 0
"""


@pytest.mark.skipif(not SOAK, reason="soak: set RWSGI_SOAK=1 (minutes; see the module docstring)")
@pytest.mark.parametrize("groups", [1, 3], ids=["global", "3-groups"])
def test_soak_million_requests_rss(apache_factory, mode, groups):
    """groups=3: the requests rotate over three application groups, each in its own
    sub-interpreter, in every process."""
    assert shutil.which("wrk"), "wrk is needed for the soak"
    srv = apache_factory(mode=mode, log_level="warn")
    app = srv.app("faults.wsgi")
    urls = ["/f"] if groups == 1 else [f"/f{i}" for i in range(groups)]
    pg = {"process_group": "fault"} if mode == "daemon" else {}
    conf = "WSGIDaemonProcess fault processes=2 threads=8\n" if mode == "daemon" else ""
    for i, url in enumerate(urls):
        ag = {} if groups == 1 else {"application_group": f"soak{i}"}
        conf += srv.mount(url, app, **pg, **ag)
    srv.start(conf + SOAK_CONF)
    script = None
    if groups > 1:
        script = str(srv.write_file("data/rotate.lua", (
            "local paths = {%s}\n"
            "local i = 0\n"
            "request = function()\n"
            "  i = i + 1\n"
            "  return wrk.format('GET', paths[(i %% #paths) + 1])\n"
            "end\n") % ", ".join(f"'{u}/hello'" for u in urls)))
    for url in urls:
        assert srv.get(f"{url}/hello").body == b"hello"
    deadline = time.monotonic() + SOAK_MAX_S
    warm = _run_until(srv.port, WARMUP, deadline, round_s=5, script=script)
    assert warm["requests"] >= WARMUP, f"warm-up did not reach {WARMUP} requests in time: {warm}"
    time.sleep(2)
    before = rss_map(srv)
    t0 = time.monotonic()
    run = _run_until(srv.port, SOAK_REQUESTS, deadline, round_s=30, script=script)
    elapsed = time.monotonic() - t0
    time.sleep(2)
    after = rss_map(srv)
    total_before, total_after = sum(before.values()), sum(after.values())
    growth = (total_after - total_before) / total_before
    per_pid = {p: (before[p], after.get(p)) for p in before}
    done = run["requests"]
    errors = {k: warm[k] + run[k] for k in warm if k != "requests"}
    figure(f"soak-{mode}" + ("" if groups == 1 else f"-{groups}-groups"), date=time.strftime("%Y-%m-%dT%H:%MZ", time.gmtime()),
           warmup_requests=warm["requests"], requests=done,
           errors="/".join(f"{k}:{v}" for k, v in errors.items()),
           seconds=f"{elapsed:.0f}", req_per_s=f"{done / elapsed:.0f}",
           rss_before_kib=total_before, rss_after_kib=total_after,
           growth_pct=f"{growth * 100:.2f}", per_pid_kib=per_pid)
    assert done >= SOAK_REQUESTS, f"only {done} requests within {SOAK_MAX_S} s"
    assert not any(errors.values()), errors
    assert set(after) == set(before), f"processes changed during the soak: {per_pid}"
    assert growth <= GROWTH_LIMIT, f"RSS grew {growth * 100:.2f} %: {per_pid}"
