-- wrk script for bench/bench.py: optional POST body (BENCH_POST_BYTES) and one
-- machine-readable result line at the end. Runs inside wrk (tool).
local post = tonumber(os.getenv("BENCH_POST_BYTES") or "0")
if post > 0 then
  wrk.method = "POST"
  wrk.body = string.rep("x", post)
  wrk.headers["Content-Type"] = "application/octet-stream"
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "BENCH-RESULT requests=%d duration_us=%d bytes=%d err_connect=%d err_read=%d " ..
    "err_write=%d err_status=%d err_timeout=%d p50_us=%d p99_us=%d max_us=%d\n",
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write,
    e.status, e.timeout, latency:percentile(50), latency:percentile(99), latency.max))
end
