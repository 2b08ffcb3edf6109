//! The board as operators read it (pure text from a `Snapshot`): Prometheus's text format
//! 0.0.4 for the `rwsgi-metrics` handler, the `rwsgi-health` verdict, and the server-status
//! section (HTML and `?auto` lines). Runs in the httpd child.
#![forbid(unsafe_code)]

use std::fmt::Write;

use super::{DURATION_BUCKETS, ProcState, ProcessView, RecordView, Snapshot, ThreadView};

/// A label value escaped for the text format (backslash, quote, newline).
fn esc(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// One histogram's samples: `buckets` per bucket of `DURATION_BUCKETS` then +Inf (not
/// cumulative), `sum_us` their total in microseconds.
fn histogram(out: &mut String, name: &str, labels: &str, buckets: &[u64], sum_us: u64) {
    let mut cumulative = 0;
    for (i, n) in buckets.iter().enumerate() {
        cumulative += n;
        let le = DURATION_BUCKETS
            .get(i)
            .map_or_else(|| "+Inf".to_string(), |b| b.to_string());
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{le}\"}} {cumulative}");
    }
    let _ = writeln!(out, "{name}_sum{{{labels}}} {}", sum_us as f64 / 1e6);
    let _ = writeln!(out, "{name}_count{{{labels}}} {cumulative}");
}

/// Prometheus text format 0.0.4 of everything on the board. `now` is seconds since the epoch.
pub fn prometheus(s: &Snapshot, now: u64) -> String {
    let mut out = String::new();
    let records: Vec<(String, &str, &RecordView)> =
        std::iter::once((String::new(), "embedded", &s.embedded))
            .chain(s.groups.iter().map(|g| (esc(&g.name), "daemon", &g.record)))
            .collect();
    let labels = |g: &str, m: &str| format!("group=\"{g}\",mode=\"{m}\"");

    out.push_str(
        "# HELP rwsgi_requests_total Requests the httpd children answered, by status class.\n\
         # TYPE rwsgi_requests_total counter\n",
    );
    for (g, m, r) in &records {
        for (i, n) in r.status.iter().enumerate() {
            let _ = writeln!(
                out,
                "rwsgi_requests_total{{{},code=\"{}xx\"}} {n}",
                labels(g, m),
                i + 1
            );
        }
    }
    out.push_str(
        "# HELP rwsgi_request_duration_seconds Time from the request line to the end of the \
         response.\n# TYPE rwsgi_request_duration_seconds histogram\n",
    );
    for (g, m, r) in &records {
        let name = "rwsgi_request_duration_seconds";
        histogram(&mut out, name, &labels(g, m), &r.buckets, r.duration_sum_us);
    }
    for (name, kind, help, get) in [
        (
            "rwsgi_request_bytes_total",
            "counter",
            "Request body bytes read.",
            (|r: &RecordView| r.bytes_in) as fn(&RecordView) -> u64,
        ),
        (
            "rwsgi_response_bytes_total",
            "counter",
            "Response body bytes sent.",
            |r: &RecordView| r.bytes_out,
        ),
        (
            "rwsgi_websocket_sessions_total",
            "counter",
            "WebSocket sessions opened.",
            |r: &RecordView| r.websocket_opened,
        ),
        (
            "rwsgi_websocket_sessions_open",
            "gauge",
            "WebSocket sessions open now.",
            |r: &RecordView| r.websocket_open,
        ),
    ] {
        let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n");
        for (g, m, r) in &records {
            let _ = writeln!(out, "{name}{{{}}} {}", labels(g, m), get(r));
        }
    }
    out.push_str(
        "# HELP rwsgi_requests_in_flight Requests being served now.\n\
         # TYPE rwsgi_requests_in_flight gauge\n",
    );
    for (g, m, r) in &records {
        let _ = writeln!(
            out,
            "rwsgi_requests_in_flight{{{}}} {}",
            labels(g, m),
            r.in_flight
        );
    }
    out.push_str(
        "# HELP rwsgi_websocket_messages_total Whole WebSocket messages, from clients (in) \
         and to them (out).\n# TYPE rwsgi_websocket_messages_total counter\n",
    );
    for (g, m, r) in &records {
        for (direction, n) in [("in", r.websocket_in), ("out", r.websocket_out)] {
            let _ = writeln!(
                out,
                "rwsgi_websocket_messages_total{{{},direction=\"{direction}\"}} {n}",
                labels(g, m)
            );
        }
    }
    if !s.children.is_empty() {
        child_families(&mut out, s);
    }
    if s.groups.is_empty() {
        return out;
    }
    out.push_str(
        "# HELP rwsgi_queue_wait_seconds Time a request waited for a daemon thread.\n\
         # TYPE rwsgi_queue_wait_seconds histogram\n",
    );
    for g in &s.groups {
        let (r, labels) = (&g.record, format!("group=\"{}\"", esc(&g.name)));
        let name = "rwsgi_queue_wait_seconds";
        histogram(&mut out, name, &labels, &r.queue_buckets, r.queue_sum_us);
    }
    out.push_str(
        "# HELP rwsgi_daemon_processes Daemon process slots by state.\n\
         # TYPE rwsgi_daemon_processes gauge\n",
    );
    for g in &s.groups {
        for st in [
            ProcState::Starting,
            ProcState::Ready,
            ProcState::Stopping,
            ProcState::Empty,
        ] {
            let n = g.processes.iter().filter(|p| p.state == st).count();
            let _ = writeln!(
                out,
                "rwsgi_daemon_processes{{group=\"{}\",state=\"{}\"}} {n}",
                esc(&g.name),
                st.label()
            );
        }
    }
    out.push_str(
        "# HELP rwsgi_daemon_threads Worker threads of ready daemon processes, busy or idle \
         (sampled every 200 ms).\n# TYPE rwsgi_daemon_threads gauge\n",
    );
    for g in &s.groups {
        let live = g.processes.iter().filter(|p| p.state == ProcState::Ready);
        let (busy, all) = live.fold((0, 0), |(b, a), p| {
            (b + p.busy.min(p.threads), a + p.threads)
        });
        for (state, n) in [("busy", busy), ("idle", all - busy)] {
            let _ = writeln!(
                out,
                "rwsgi_daemon_threads{{group=\"{}\",state=\"{state}\"}} {n}",
                esc(&g.name)
            );
        }
    }
    out.push_str(
        "# HELP rwsgi_daemon_restarts_total Daemon processes that ended, by reason.\n\
         # TYPE rwsgi_daemon_restarts_total counter\n",
    );
    for g in &s.groups {
        for (reason, n) in &g.record.restarts {
            let _ = writeln!(
                out,
                "rwsgi_daemon_restarts_total{{group=\"{}\",reason=\"{}\"}} {n}",
                esc(&g.name),
                reason.label()
            );
        }
    }
    out.push_str(
        "# HELP rwsgi_daemon_resident_bytes Resident memory of each live daemon process \
         (sampled every second).\n# TYPE rwsgi_daemon_resident_bytes gauge\n",
    );
    for g in &s.groups {
        for (i, p) in g.processes.iter().enumerate() {
            if p.pid != 0 && p.rss != 0 {
                let _ = writeln!(
                    out,
                    "rwsgi_daemon_resident_bytes{{group=\"{}\",process=\"{i}\",pid=\"{}\"}} {}",
                    esc(&g.name),
                    p.pid,
                    p.rss
                );
            }
        }
    }
    out.push_str(
        "# HELP rwsgi_daemon_python_gc_collections_total Python garbage collections in each \
         live daemon process, by generation (sampled every second).\n\
         # TYPE rwsgi_daemon_python_gc_collections_total counter\n",
    );
    for g in &s.groups {
        for (i, p) in g.processes.iter().enumerate() {
            if p.pid == 0 {
                continue;
            }
            for (generation, n) in p.gc.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "rwsgi_daemon_python_gc_collections_total{{group=\"{}\",process=\"{i}\",\
                     generation=\"{generation}\"}} {n}",
                    esc(&g.name)
                );
            }
        }
    }
    out.push_str(
        "# HELP rwsgi_daemon_python_gc_collected_total Objects Python's garbage collector \
         freed in each live daemon process (sampled every second).\n\
         # TYPE rwsgi_daemon_python_gc_collected_total counter\n",
    );
    for g in &s.groups {
        for (i, p) in g.processes.iter().enumerate() {
            if p.pid != 0 {
                let _ = writeln!(
                    out,
                    "rwsgi_daemon_python_gc_collected_total{{group=\"{}\",process=\"{i}\"}} {}",
                    esc(&g.name),
                    p.gc_collected
                );
            }
        }
    }
    out.push_str(
        "# HELP rwsgi_daemon_uptime_seconds How long each live daemon process has run.\n\
         # TYPE rwsgi_daemon_uptime_seconds gauge\n",
    );
    for g in &s.groups {
        for (i, p) in g.processes.iter().enumerate() {
            if p.pid != 0 && p.started != 0 {
                let _ = writeln!(
                    out,
                    "rwsgi_daemon_uptime_seconds{{group=\"{}\",process=\"{i}\"}} {}",
                    esc(&g.name),
                    now.saturating_sub(p.started)
                );
            }
        }
    }
    out
}

/// The httpd children's own figures (embedded mode), by scoreboard slot.
fn child_families(out: &mut String, s: &Snapshot) {
    out.push_str(
        "# HELP rwsgi_embedded_child_requests_total Embedded-mode requests each httpd child \
         has answered (since it started).\n# TYPE rwsgi_embedded_child_requests_total counter\n",
    );
    for c in &s.children {
        let _ = writeln!(
            out,
            "rwsgi_embedded_child_requests_total{{slot=\"{}\"}} {}",
            c.slot, c.requests
        );
    }
    out.push_str(
        "# HELP rwsgi_embedded_child_resident_bytes Resident memory of each httpd child that \
         runs Python (sampled at most once a second).\n\
         # TYPE rwsgi_embedded_child_resident_bytes gauge\n",
    );
    for c in s.children.iter().filter(|c| c.rss != 0) {
        let _ = writeln!(
            out,
            "rwsgi_embedded_child_resident_bytes{{slot=\"{}\"}} {}",
            c.slot, c.rss
        );
    }
    out.push_str(
        "# HELP rwsgi_embedded_child_python_gc_collections_total Python garbage collections \
         in each httpd child, by generation.\n\
         # TYPE rwsgi_embedded_child_python_gc_collections_total counter\n",
    );
    for c in &s.children {
        for (generation, n) in c.gc.iter().enumerate() {
            let _ = writeln!(
                out,
                "rwsgi_embedded_child_python_gc_collections_total{{slot=\"{}\",\
                 generation=\"{generation}\"}} {n}",
                c.slot
            );
        }
    }
}

/// The health verdict over `groups` (all daemon groups when empty): healthy when each has at
/// least one ready process that exists (`alive(pid)`), with one line per group saying so.
pub fn health(s: &Snapshot, groups: &[String], alive: impl Fn(u32) -> bool) -> (bool, String) {
    let mut ok = true;
    let mut body = String::new();
    let mut seen = 0;
    for g in &s.groups {
        if !groups.is_empty() && !groups.contains(&g.name) {
            continue;
        }
        seen += 1;
        let ready = g
            .processes
            .iter()
            .filter(|p| p.state == ProcState::Ready && alive(p.pid))
            .count();
        let count = |st: ProcState| g.processes.iter().filter(|p| p.state == st).count();
        if ready > 0 {
            let _ = writeln!(
                body,
                "ok: group '{}': {ready} of {} processes ready",
                g.name,
                g.processes.len()
            );
        } else {
            ok = false;
            let last = g
                .processes
                .iter()
                .filter_map(|p| p.last_reason)
                .map(|r| r.label())
                .next()
                .unwrap_or("none");
            let _ = writeln!(
                body,
                "unavailable: group '{}': no process ready ({} starting, {} stopping, {} not \
                 running; last exit: {last})",
                g.name,
                count(ProcState::Starting),
                count(ProcState::Stopping),
                count(ProcState::Empty)
            );
        }
    }
    for n in groups {
        if !s.groups.iter().any(|g| g.name == *n) {
            ok = false;
            let _ = writeln!(body, "unavailable: group '{n}': no such daemon group");
        }
    }
    if seen == 0 && groups.is_empty() {
        body.push_str("ok: no daemon groups\n");
    }
    (ok, body)
}

/// A daemon process's server-status fields: pid, state, uptime, threads, busy, served,
/// restarts, last exit.
fn fields(p: &ProcessView, now: u64, generation: u64) -> [String; 9] {
    let uptime = if p.started == 0 {
        0
    } else {
        now.saturating_sub(p.started)
    };
    [
        p.pid.to_string(),
        generation.to_string(),
        p.state.label().to_string(),
        uptime.to_string(),
        p.threads.to_string(),
        p.busy.to_string(),
        p.served.to_string(),
        p.restarts.to_string(),
        p.last_reason.map_or("none", |r| r.label()).to_string(),
    ]
}

/// The worker threads of a process that run a request now (WSGI; an ASGI request runs on the
/// process's event loop, not a worker thread), with their index.
fn running(p: &ProcessView) -> impl Iterator<Item = (usize, &ThreadView)> {
    p.workers
        .iter()
        .enumerate()
        .filter(move |(_, w)| p.pid != 0 && w.since_ms != 0)
}

/// A thread's request text: request line, client, request id.
fn parts(text: &str) -> (&str, &str, &str) {
    let mut it = text.splitn(3, '\t');
    (
        it.next().unwrap_or(""),
        it.next().unwrap_or(""),
        it.next().unwrap_or(""),
    )
}

/// The server-status section: `auto` gives `key: value` lines, otherwise HTML. `now_ms` is
/// `now` in milliseconds (for the running requests' times).
pub fn status(s: &Snapshot, now: u64, now_ms: u64, auto: bool) -> String {
    let mut out = String::new();
    let e = &s.embedded;
    if auto {
        let _ = writeln!(out, "RwsgiEmbeddedRequests: {}", e.requests());
        let _ = writeln!(out, "RwsgiEmbeddedInFlight: {}", e.in_flight);
        for c in &s.children {
            let _ = writeln!(
                out,
                "RwsgiEmbeddedChild{}: pid={} uptime={} requests={} in_flight={} rss={} gc={}/{}/{}",
                c.slot,
                c.pid,
                now.saturating_sub(c.started),
                c.requests,
                c.in_flight,
                c.rss,
                c.gc[0],
                c.gc[1],
                c.gc[2]
            );
        }
        for g in &s.groups {
            let n = &g.name;
            let _ = writeln!(out, "RwsgiGroup{n}Requests: {}", g.record.requests());
            let _ = writeln!(out, "RwsgiGroup{n}InFlight: {}", g.record.in_flight);
            let restarts: u64 = g.record.restarts.iter().map(|x| x.1).sum();
            let _ = writeln!(out, "RwsgiGroup{n}Restarts: {restarts}");
            for (i, p) in g.processes.iter().enumerate() {
                let f = fields(p, now, s.generation);
                let _ = writeln!(
                    out,
                    "RwsgiGroup{n}Process{i}: pid={} generation={} state={} uptime={} \
                     threads={} busy={} served={} restarts={} last_exit={}",
                    f[0], f[1], f[2], f[3], f[4], f[5], f[6], f[7], f[8]
                );
                for (t, w) in running(p) {
                    let (request, client, id) = parts(&w.text);
                    let _ = writeln!(
                        out,
                        "RwsgiGroup{n}Process{i}Thread{t}: time={:.3} request=\"{request}\" \
                         client={client} id={id}",
                        now_ms.saturating_sub(w.since_ms) as f64 / 1000.0
                    );
                }
            }
        }
        return out;
    }
    let h = |t: &str| {
        t.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
    };
    out.push_str("<hr />\n<h2>mod_rwsgi</h2>\n");
    let _ = writeln!(
        out,
        "<p>Embedded mode: {} requests, {} in flight.</p>",
        e.requests(),
        e.in_flight
    );
    if !s.children.is_empty() {
        out.push_str(
            "<table border=\"0\"><tr><th>Slot</th><th>PID</th><th>Uptime s</th>\
             <th>Requests</th><th>In flight</th><th>RSS MiB</th>\
             <th>GC collections (gen 0/1/2)</th></tr>\n",
        );
        for c in &s.children {
            let _ = writeln!(
                out,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.1}</td>\
                 <td>{}/{}/{}</td></tr>",
                c.slot,
                c.pid,
                now.saturating_sub(c.started),
                c.requests,
                c.in_flight,
                c.rss as f64 / 1048576.0,
                c.gc[0],
                c.gc[1],
                c.gc[2]
            );
        }
        out.push_str("</table>\n");
    }
    for g in &s.groups {
        let restarts: Vec<String> = g
            .record
            .restarts
            .iter()
            .filter(|x| x.1 > 0)
            .map(|(r, n)| format!("{} {n}", r.label()))
            .collect();
        let _ = writeln!(
            out,
            "<h3>Daemon group {}</h3>\n<p>{} requests, {} in flight; restarts: {}.</p>",
            h(&g.name),
            g.record.requests(),
            g.record.in_flight,
            if restarts.is_empty() {
                "none".to_string()
            } else {
                restarts.join(", ")
            }
        );
        out.push_str(
            "<table border=\"0\"><tr><th>#</th><th>PID</th><th>Generation</th><th>State</th>\
             <th>Uptime s</th>\
             <th>Threads</th><th>Busy</th><th>Served</th><th>Restarts</th><th>Last exit</th>\
             </tr>\n",
        );
        for (i, p) in g.processes.iter().enumerate() {
            let cells: String = fields(p, now, s.generation)
                .iter()
                .map(|f| format!("<td>{f}</td>"))
                .collect();
            let _ = writeln!(out, "<tr><td>{i}</td>{cells}</tr>");
        }
        out.push_str("</table>\n");
        let busy: Vec<String> = g
            .processes
            .iter()
            .enumerate()
            .flat_map(|(i, p)| {
                running(p).map(move |(t, w)| {
                    let (request, client, id) = parts(&w.text);
                    format!(
                        "<tr><td>{i}</td><td>{t}</td><td>{:.3}</td><td>{}</td><td>{}</td>\
                         <td>{}</td></tr>",
                        now_ms.saturating_sub(w.since_ms) as f64 / 1000.0,
                        h(request),
                        h(client),
                        h(id)
                    )
                })
            })
            .collect();
        if !busy.is_empty() {
            out.push_str(
                "<table border=\"0\"><tr><th>Process</th><th>Thread</th><th>Time s</th>\
                 <th>Request</th><th>Client</th><th>Request id</th></tr>\n",
            );
            for row in busy {
                out.push_str(&row);
                out.push('\n');
            }
            out.push_str("</table>\n");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::{GroupShape, Reason, Served, test_board};
    use super::*;

    fn board() -> super::super::Board {
        test_board(vec![GroupShape {
            name: "site".into(),
            processes: 2,
            threads: 4,
        }])
    }

    #[test]
    fn prometheus_lines_have_the_counts() {
        let b = board();
        b.request_started(Some(0));
        b.request_ended(
            Some(0),
            Served {
                status: 200,
                bytes_in: 3,
                bytes_out: 50,
                micros: 20_000,
            },
        );
        b.spawned(0, 0, 77, 100);
        b.ready(0, 0, 4);
        b.mirror(0, 0, 1, 9, Some(1 << 20));
        b.mirror_gc(0, 0, [5, 1, 1], 40);
        b.queue_waited(0, 2_000);
        b.websocket_opened(Some(0));
        b.websocket_message(Some(0), false);
        let t = prometheus(&b.snapshot(), 130);
        for want in [
            "rwsgi_queue_wait_seconds_bucket{group=\"site\",le=\"0.005\"} 1\n",
            "rwsgi_queue_wait_seconds_count{group=\"site\"} 1\n",
            "rwsgi_websocket_sessions_open{group=\"site\",mode=\"daemon\"} 1\n",
            "rwsgi_websocket_messages_total{group=\"site\",mode=\"daemon\",direction=\"out\"} 1\n",
            "rwsgi_daemon_python_gc_collections_total{group=\"site\",process=\"0\",generation=\"2\"} 1\n",
            "rwsgi_daemon_python_gc_collected_total{group=\"site\",process=\"0\"} 40\n",
            "rwsgi_requests_total{group=\"site\",mode=\"daemon\",code=\"2xx\"} 1\n",
            "rwsgi_requests_total{group=\"\",mode=\"embedded\",code=\"2xx\"} 0\n",
            "rwsgi_request_duration_seconds_bucket{group=\"site\",mode=\"daemon\",le=\"0.01\"} 0\n",
            "rwsgi_request_duration_seconds_bucket{group=\"site\",mode=\"daemon\",le=\"0.025\"} 1\n",
            "rwsgi_request_duration_seconds_bucket{group=\"site\",mode=\"daemon\",le=\"+Inf\"} 1\n",
            "rwsgi_request_duration_seconds_count{group=\"site\",mode=\"daemon\"} 1\n",
            "rwsgi_request_duration_seconds_sum{group=\"site\",mode=\"daemon\"} 0.02\n",
            "rwsgi_response_bytes_total{group=\"site\",mode=\"daemon\"} 50\n",
            "rwsgi_daemon_processes{group=\"site\",state=\"ready\"} 1\n",
            "rwsgi_daemon_processes{group=\"site\",state=\"empty\"} 1\n",
            "rwsgi_daemon_threads{group=\"site\",state=\"busy\"} 1\n",
            "rwsgi_daemon_threads{group=\"site\",state=\"idle\"} 3\n",
            "rwsgi_daemon_restarts_total{group=\"site\",reason=\"crash\"} 0\n",
            "rwsgi_daemon_resident_bytes{group=\"site\",process=\"0\",pid=\"77\"} 1048576\n",
            "rwsgi_daemon_uptime_seconds{group=\"site\",process=\"0\"} 30\n",
        ] {
            assert!(t.contains(want), "missing {want:?} in\n{t}");
        }
        // Every sample line belongs to a family declared before it.
        let mut declared = Vec::new();
        for line in t.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                declared.push(rest.split(' ').next().unwrap().to_string());
            } else if !line.starts_with('#') {
                let name = line.split(['{', ' ']).next().unwrap();
                assert!(
                    declared.iter().any(|d| name.starts_with(d.as_str())),
                    "{line}"
                );
            }
        }
    }

    #[test]
    fn health_needs_a_ready_live_process_per_group() {
        let b = board();
        let (ok, body) = health(&b.snapshot(), &[], |_| true);
        assert!(!ok, "{body}");
        assert!(
            body.contains("group 'site': no process ready (0 starting"),
            "{body}"
        );
        b.spawned(0, 1, 55, 1);
        b.ready(0, 1, 4);
        let (ok, body) = health(&b.snapshot(), &[], |_| true);
        assert!(ok && body.contains("1 of 2 processes ready"), "{body}");
        // A ready slot whose process is gone does not count.
        assert!(!health(&b.snapshot(), &[], |_| false).0);
        let (ok, body) = health(&b.snapshot(), &["nope".into()], |_| true);
        assert!(!ok && body.contains("no such daemon group"), "{body}");
        b.stopping(0, 1, Reason::InactivityTimeout);
        b.exited(0, 1, false);
        let (ok, body) = health(&b.snapshot(), &["site".into()], |_| true);
        assert!(
            !ok && body.contains("last exit: inactivity-timeout"),
            "{body}"
        );
    }

    #[test]
    fn status_section_auto_and_html() {
        let b = board().of(3);
        b.spawned(0, 0, 9, 10);
        b.ready(0, 0, 4);
        b.thread_busy(0, 0, 2, 12_500, b"GET /slow?x=<1>\t127.0.0.1:40000\tabc");
        let auto = status(&b.snapshot(), 15, 15_000, true);
        assert!(auto.contains(
            "RwsgiGroupsiteProcess0: pid=9 generation=3 state=ready uptime=5 threads=4 busy=0 \
             served=0 restarts=0 last_exit=none\n"
        ));
        assert!(auto.contains(
            "RwsgiGroupsiteProcess0Thread2: time=2.500 request=\"GET /slow?x=<1>\" \
             client=127.0.0.1:40000 id=abc\n"
        ));
        let html = status(&b.snapshot(), 15, 15_000, false);
        assert!(html.contains("<h3>Daemon group site</h3>"));
        assert!(html.contains("<td>9</td><td>3</td><td>ready</td>"));
        assert!(html.contains(
            "<td>0</td><td>2</td><td>2.500</td><td>GET /slow?x=&lt;1&gt;</td><td>127.0.0.1:40000</td>"
        ));
        b.thread_idle(0, 0, 2);
        assert!(!status(&b.snapshot(), 15, 15_000, true).contains("Thread"));
    }
}
