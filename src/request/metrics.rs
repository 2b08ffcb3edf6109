//! The per-process request counters behind `mod_wsgi.process_metrics()` (cumulative) and
//! `mod_wsgi.request_metrics()` (per interval, drained by each call) (pure: atomics, a mutex
//! and a clock, no I/O): off until the application calls `mod_wsgi.start_recording_metrics()`,
//! as in mod_wsgi 6, so a process that never asks pays one relaxed load per request. Updated
//! by the WSGI driver in whichever process runs the application (httpd child or daemon).
#![forbid(unsafe_code)]

use std::cell::Cell;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Instant, SystemTime};

static RECORDING: AtomicBool = AtomicBool::new(false);
static REQUESTS: AtomicU64 = AtomicU64::new(0);
static ACTIVE: AtomicU64 = AtomicU64::new(0);
static BUSY_US: AtomicU64 = AtomicU64::new(0);
static NEXT_THREAD: AtomicU64 = AtomicU64::new(1);
static STARTED: OnceLock<(SystemTime, Instant)> = OnceLock::new();
/// What the current interval has seen (and the per-thread counts `process_metrics` reports).
static INTERVAL: Mutex<Interval> = Mutex::new(Interval::new());

thread_local! {
    static THREAD_NUM: Cell<u64> = const { Cell::new(0) };
}

/// Buckets of mod_wsgi's phase histograms: below 1 ms, then 16 octaves (1 ms to 65.536 s) of
/// 4 linear sub-buckets each, then 65.536 s and more.
pub const BUCKETS: usize = 65;

/// The histogram bucket of a duration of `us` microseconds, laid out as mod_wsgi 6 lays its
/// `*_buckets` lists out (a value on a boundary goes to the higher bucket).
pub fn bucket(us: u64) -> usize {
    if us < 1000 {
        return 0;
    }
    if us >= 65_536_000 {
        return BUCKETS - 1;
    }
    let octave = 63 - (us / 1000).leading_zeros() as u64;
    let low = 1000u64 << octave;
    let sub = ((us - low) * 4 / low).min(3);
    (octave * 4 + sub) as usize
}

/// Python's garbage collections in this process (all interpreters), per generation, and the
/// objects they freed.
static GC_COLLECTIONS: [AtomicU64; 3] = [const { AtomicU64::new(0) }; 3];
static GC_COLLECTED: AtomicU64 = AtomicU64::new(0);

/// A collection of `generation` freed `collected` objects (Python's `gc.callbacks`).
pub fn gc_collected(generation: usize, collected: u64) {
    if let Some(n) = GC_COLLECTIONS.get(generation) {
        n.fetch_add(1, Ordering::Relaxed);
    }
    GC_COLLECTED.fetch_add(collected, Ordering::Relaxed);
}

/// Collections per generation and objects freed so far.
pub fn gc_counts() -> ([u64; 3], u64) {
    (
        std::array::from_fn(|i| GC_COLLECTIONS[i].load(Ordering::Relaxed)),
        GC_COLLECTED.load(Ordering::Relaxed),
    )
}

/// Remembers when this process started serving (the first call wins).
pub fn mark_process_start() {
    STARTED.get_or_init(|| (SystemTime::now(), Instant::now()));
}

/// `mod_wsgi.start_recording_metrics()`: idempotent. The first call starts the first interval;
/// `cpu`: the process's CPU seconds now (user, system).
pub fn start_recording(cpu: (f64, f64)) {
    mark_process_start();
    if !RECORDING.swap(true, Ordering::Relaxed) {
        interval().since = Some(Baseline::now(cpu.0, cpu.1));
    }
}

pub fn recording() -> bool {
    RECORDING.load(Ordering::Relaxed)
}

fn interval() -> MutexGuard<'static, Interval> {
    INTERVAL.lock().unwrap_or_else(|p| p.into_inner())
}

fn micros(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// When a request passed each point, in microseconds since the epoch (what the environ's
/// `mod_wsgi.*_start` keys say, as floats).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stamps {
    /// httpd read the request line.
    pub request_start: i64,
    /// Daemon mode: the httpd child queued it for the daemon (0 in embedded mode).
    pub queue_start: i64,
    /// Daemon mode: a daemon thread took it (0 in embedded mode).
    pub daemon_start: i64,
    /// The application was about to be called.
    pub application_start: i64,
}

/// How a request's exchange with the application went, as the driver counted it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ended {
    /// The status the client gets (0: none was decided, counted as a 5xx as mod_wsgi does).
    pub status: u16,
    pub input_bytes: u64,
    pub input_reads: u64,
    pub input_read_us: u64,
    pub output_bytes: u64,
    pub output_writes: u64,
    pub output_write_us: u64,
    /// The request thread's CPU time while the application ran (user, system), microseconds.
    pub cpu_user_us: u64,
    pub cpu_system_us: u64,
}

/// One request running in this thread while recording; counted when ended (or dropped).
pub struct Running {
    since: Instant,
    thread: u64,
    stamps: Stamps,
    ended: bool,
}

/// Call when a request starts running the application; `None` when not recording.
pub fn begin(stamps: Stamps) -> Option<Running> {
    if !recording() {
        return None;
    }
    ACTIVE.fetch_add(1, Ordering::Relaxed);
    let thread = THREAD_NUM.with(|n| {
        if n.get() == 0 {
            n.set(NEXT_THREAD.fetch_add(1, Ordering::Relaxed));
        }
        n.get()
    });
    let since = Instant::now();
    interval().threads.entry(thread).or_default().running = Some(since);
    Some(Running {
        since,
        thread,
        stamps,
        ended: false,
    })
}

impl Running {
    /// The request has ended with `ended`; `finish`: epoch microseconds now.
    pub fn end(mut self, ended: Ended, finish: i64) {
        self.ended = true;
        self.record(ended, finish);
    }

    fn record(&self, e: Ended, finish: i64) {
        let busy = micros(self.since.elapsed());
        BUSY_US.fetch_add(busy, Ordering::Relaxed);
        REQUESTS.fetch_add(1, Ordering::Relaxed);
        ACTIVE.fetch_sub(1, Ordering::Relaxed);
        let s = self.stamps;
        let gap = |later: i64, earlier: i64| u64::try_from(later - earlier).unwrap_or(0);
        let daemon = s.queue_start > 0;
        let server = if daemon {
            gap(s.queue_start, s.request_start)
        } else {
            gap(s.application_start, s.request_start)
        };
        let (queue, in_daemon) = if daemon {
            (
                gap(s.daemon_start, s.queue_start),
                gap(s.application_start, s.daemon_start),
            )
        } else {
            (0, 0)
        };
        let application = gap(finish, s.application_start);
        let mut iv = interval();
        iv.requests += 1;
        let p = &mut iv.phases;
        p[Phase::Server as usize].add(server);
        if daemon {
            p[Phase::Queue as usize].add(queue);
            p[Phase::Daemon as usize].add(in_daemon);
        }
        p[Phase::Application as usize].add(application);
        p[Phase::Request as usize].add(server + queue + in_daemon + application);
        p[Phase::InputRead as usize].add(e.input_read_us);
        p[Phase::OutputWrite as usize].add(e.output_write_us);
        let class = match e.status {
            100..=599 => usize::from(e.status / 100) - 1,
            _ => 4,
        };
        iv.status[class] += 1;
        iv.input_bytes += e.input_bytes;
        iv.input_reads += e.input_reads;
        iv.output_bytes += e.output_bytes;
        iv.output_writes += e.output_writes;
        let cpu = e.cpu_user_us + e.cpu_system_us;
        let t = iv.threads.entry(self.thread).or_default();
        t.running = None;
        t.requests += 1;
        t.completed += 1;
        t.busy_us += busy;
        t.cpu_us += cpu;
        t.max_us = t.max_us.max(busy);
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if !self.ended {
            // Unwound before the driver could say how it ended: a failed request.
            self.record(Ended::default(), now_us());
        }
    }
}

/// `t` as seconds since the epoch.
fn epoch(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Microseconds since the epoch now (the unit of `Stamps`).
pub fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

/// The phases of a request, as mod_wsgi names them (`<name>_time` keys).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// httpd: from the request line to the hand-over (embedded: to the application call).
    Server = 0,
    /// Daemon mode: waiting for a daemon thread.
    Queue = 1,
    /// Daemon mode: the daemon's own work before the application call.
    Daemon = 2,
    Application = 3,
    /// All of the above.
    Request = 4,
    /// Time spent reading the request body.
    InputRead = 5,
    /// Time spent writing the response.
    OutputWrite = 6,
}

impl Phase {
    pub const ALL: [Phase; 7] = [
        Phase::Server,
        Phase::Queue,
        Phase::Daemon,
        Phase::Application,
        Phase::Request,
        Phase::InputRead,
        Phase::OutputWrite,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Phase::Server => "server_time",
            Phase::Queue => "queue_time",
            Phase::Daemon => "daemon_time",
            Phase::Application => "application_time",
            Phase::Request => "request_time",
            Phase::InputRead => "input_read_time",
            Phase::OutputWrite => "output_write_time",
        }
    }
}

/// One phase over an interval.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PhaseTotals {
    pub count: u64,
    pub total_us: u64,
    pub min_us: u64,
    pub max_us: u64,
    pub buckets: [u64; BUCKETS],
}

impl PhaseTotals {
    const fn new() -> PhaseTotals {
        PhaseTotals {
            count: 0,
            total_us: 0,
            min_us: u64::MAX,
            max_us: 0,
            buckets: [0; BUCKETS],
        }
    }

    fn add(&mut self, us: u64) {
        self.count += 1;
        self.total_us = self.total_us.saturating_add(us);
        self.min_us = self.min_us.min(us);
        self.max_us = self.max_us.max(us);
        self.buckets[bucket(us)] += 1;
    }

    /// Mean, min and max in seconds (`None` for min and max when nothing was counted).
    pub fn mean(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.total_us as f64 / self.count as f64 / 1e6
        }
    }

    pub fn min_max_us(&self) -> Option<(u64, u64)> {
        (self.count > 0).then_some((self.min_us, self.max_us))
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct ThreadCounts {
    /// Since recording started (`process_metrics`).
    requests: u64,
    /// In the current interval.
    completed: u64,
    busy_us: u64,
    cpu_us: u64,
    max_us: u64,
    running: Option<Instant>,
}

/// Where the current interval started: time and the process's CPU then.
#[derive(Clone, Copy, Debug)]
struct Baseline {
    wall: SystemTime,
    mono: Instant,
    cpu_user: f64,
    cpu_system: f64,
}

impl Baseline {
    fn now(cpu_user: f64, cpu_system: f64) -> Baseline {
        Baseline {
            wall: SystemTime::now(),
            mono: Instant::now(),
            cpu_user,
            cpu_system,
        }
    }
}

struct Interval {
    since: Option<Baseline>,
    requests: u64,
    phases: [PhaseTotals; 7],
    status: [u64; 5],
    input_bytes: u64,
    input_reads: u64,
    output_bytes: u64,
    output_writes: u64,
    threads: BTreeMap<u64, ThreadCounts>,
}

impl Interval {
    const fn new() -> Interval {
        Interval {
            since: None,
            requests: 0,
            phases: [const { PhaseTotals::new() }; 7],
            status: [0; 5],
            input_bytes: 0,
            input_reads: 0,
            output_bytes: 0,
            output_writes: 0,
            threads: BTreeMap::new(),
        }
    }
}

/// One thread's part of an interval (`request_threads_*` lists).
#[derive(Clone, Debug, PartialEq)]
pub struct ThreadInterval {
    pub thread: u64,
    pub completed: u64,
    pub busy_time: f64,
    pub cpu_time: f64,
    /// The request it runs now: seconds so far (0.0 when idle).
    pub current_elapsed: f64,
    pub max_duration: f64,
}

/// What `request_metrics()` reports of one interval (the caller adds the OS's figures).
#[derive(Clone, Debug, PartialEq)]
pub struct IntervalReport {
    /// Epoch seconds at the interval's start and end; its length in seconds.
    pub start_time: f64,
    pub stop_time: f64,
    pub sample_period: f64,
    /// The process's CPU utilisation over the interval (CPU seconds per second).
    pub cpu_user_utilization: f64,
    pub cpu_system_utilization: f64,
    pub request_count: u64,
    pub request_busy_time: f64,
    pub phases: Vec<(Phase, PhaseTotals)>,
    pub status: [u64; 5],
    pub input_bytes: u64,
    pub input_reads: u64,
    pub output_bytes: u64,
    pub output_writes: u64,
    /// Threads that served a request so far, by thread number.
    pub threads: Vec<ThreadInterval>,
}

/// Ends the current interval and starts the next; `cpu`: the process's CPU seconds now (user,
/// system). `None` when not recording (mod_wsgi then returns None).
pub fn drain(cpu: (f64, f64)) -> Option<IntervalReport> {
    if !recording() {
        return None;
    }
    let now = Baseline::now(cpu.0, cpu.1);
    let mut iv = interval();
    let since = iv.since.replace(now).unwrap_or(now);
    let period = now.mono.duration_since(since.mono).as_secs_f64().max(1e-6);
    let phases = std::mem::replace(&mut iv.phases, [const { PhaseTotals::new() }; 7]);
    let threads = iv
        .threads
        .iter_mut()
        .map(|(n, t)| {
            let view = ThreadInterval {
                thread: *n,
                completed: t.completed,
                busy_time: t.busy_us as f64 / 1e6,
                cpu_time: t.cpu_us as f64 / 1e6,
                current_elapsed: t
                    .running
                    .map_or(0.0, |s| now.mono.duration_since(s).as_secs_f64()),
                max_duration: t.max_us as f64 / 1e6,
            };
            (t.completed, t.busy_us, t.cpu_us, t.max_us) = (0, 0, 0, 0);
            view
        })
        .collect::<Vec<_>>();
    let report = IntervalReport {
        start_time: epoch(since.wall),
        stop_time: epoch(now.wall),
        sample_period: period,
        cpu_user_utilization: (cpu.0 - since.cpu_user).max(0.0) / period,
        cpu_system_utilization: (cpu.1 - since.cpu_system).max(0.0) / period,
        request_count: iv.requests,
        request_busy_time: threads.iter().map(|t| t.busy_time).sum(),
        phases: Phase::ALL.iter().copied().zip(phases).collect(),
        status: iv.status,
        input_bytes: iv.input_bytes,
        input_reads: iv.input_reads,
        output_bytes: iv.output_bytes,
        output_writes: iv.output_writes,
        threads,
    };
    iv.requests = 0;
    iv.status = [0; 5];
    (
        iv.input_bytes,
        iv.input_reads,
        iv.output_bytes,
        iv.output_writes,
    ) = (0, 0, 0, 0);
    Some(report)
}

/// What `process_metrics()` reports from the counters (the caller adds the OS's figures).
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    pub request_count: u64,
    pub active_requests: u64,
    pub request_busy_time: f64,
    /// (thread number, requests it has served), by thread number.
    pub threads: Vec<(u64, u64)>,
    /// Seconds since the epoch when the process started serving, and seconds since then.
    pub restart_time: f64,
    pub running_time: f64,
}

/// The counters now; `None` when not recording (mod_wsgi then returns None).
pub fn snapshot() -> Option<Snapshot> {
    if !recording() {
        return None;
    }
    let (wall, mono) = *STARTED.get_or_init(|| (SystemTime::now(), Instant::now()));
    let threads = interval()
        .threads
        .iter()
        .filter(|(_, t)| t.requests > 0)
        .map(|(k, t)| (*k, t.requests))
        .collect();
    Some(Snapshot {
        request_count: REQUESTS.load(Ordering::Relaxed),
        active_requests: ACTIVE.load(Ordering::Relaxed),
        request_busy_time: BUSY_US.load(Ordering::Relaxed) as f64 / 1e6,
        threads,
        restart_time: epoch(wall),
        running_time: mono.elapsed().as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gc_collections_add_up_per_generation() {
        let (before, freed) = gc_counts();
        gc_collected(0, 5);
        gc_collected(2, 7);
        gc_collected(9, 1); // no such generation: only its objects count
        let (after, freed_after) = gc_counts();
        assert_eq!(after[0] - before[0], 1);
        assert_eq!(after[1] - before[1], 0);
        assert_eq!(after[2] - before[2], 1);
        assert_eq!(freed_after - freed, 13);
    }

    #[test]
    fn buckets_follow_mod_wsgi_layout() {
        // Below 1 ms, and [1 ms, 1.25 ms), share bucket 0; each octave has 4 linear parts.
        assert_eq!(bucket(0), 0);
        assert_eq!(bucket(999), 0);
        assert_eq!(bucket(1000), 0);
        assert_eq!(bucket(1249), 0);
        assert_eq!(bucket(1250), 1);
        assert_eq!(bucket(1500), 2);
        assert_eq!(bucket(1999), 3);
        assert_eq!(bucket(2000), 4);
        assert_eq!(bucket(3000), 6);
        assert_eq!(bucket(1_000_000), 9 * 4 + 3); // 1 s: octave 9 (512..1024 ms), sub 3
        assert_eq!(bucket(65_535_999), 63);
        assert_eq!(bucket(65_536_000), 64);
        assert_eq!(bucket(u64::MAX), 64);
        // Monotonic over a sweep.
        let mut last = 0;
        for us in (0..70_000_000).step_by(997) {
            let b = bucket(us);
            assert!(b >= last && b < BUCKETS, "{us}");
            last = b;
        }
    }

    #[test]
    fn counts_only_while_recording_per_thread_and_per_interval() {
        // One test owns the process-wide counters (tests run in threads of one process).
        let stamps = |r: i64, q: i64, d: i64, a: i64| Stamps {
            request_start: r,
            queue_start: q,
            daemon_start: d,
            application_start: a,
        };
        assert!(begin(Stamps::default()).is_none());
        assert!(snapshot().is_none());
        assert!(drain((0.0, 0.0)).is_none());
        start_recording((1.0, 0.5));
        start_recording((9.0, 9.0));
        let a = begin(stamps(1_000, 0, 0, 3_000)).expect("recording");
        let s = snapshot().unwrap();
        assert_eq!((s.request_count, s.active_requests), (0, 1));
        let ended = Ended {
            status: 200,
            input_bytes: 10,
            input_reads: 1,
            output_bytes: 5,
            output_writes: 2,
            output_write_us: 40,
            ..Ended::default()
        };
        a.end(ended, 8_000);
        // A daemon-mode request: queue and daemon phases counted too.
        begin(stamps(1_000, 2_000, 4_000, 7_000)).unwrap().end(
            Ended {
                status: 404,
                ..ended
            },
            9_000,
        );
        // Dropped without an end (a panic): a 5xx.
        let now = now_us();
        std::thread::spawn(move || drop(begin(stamps(now - 3_000, 0, 0, now - 1_000))))
            .join()
            .unwrap();
        let s = snapshot().unwrap();
        assert_eq!((s.request_count, s.active_requests), (3, 0));
        assert_eq!(s.threads.len(), 2);
        assert_eq!(s.threads.iter().map(|t| t.1).sum::<u64>(), 3);
        assert!(s.threads.iter().any(|t| t.1 == 2));
        assert!(s.restart_time > 1.0e9 && s.running_time >= 0.0);

        let r = drain((1.0, 0.5)).unwrap();
        assert_eq!(r.request_count, 3);
        assert_eq!(r.status, [0, 1, 0, 1, 1]);
        assert_eq!(
            (r.input_bytes, r.output_bytes, r.output_writes),
            (20, 10, 4)
        );
        let phase = |p: Phase| r.phases.iter().find(|x| x.0 == p).unwrap().1.clone();
        // Embedded: server 2 ms, application 5 ms. Daemon: server 1, queue 2, daemon 3,
        // application 2 ms. The dropped one: server 2 ms, application 1 ms and a bit.
        assert_eq!(phase(Phase::Server).min_max_us(), Some((1_000, 2_000)));
        assert_eq!(phase(Phase::Queue).count, 1);
        assert_eq!(phase(Phase::Queue).total_us, 2_000);
        assert_eq!(phase(Phase::Daemon).total_us, 3_000);
        let (lo, hi) = phase(Phase::Application).min_max_us().unwrap();
        assert!((1_000..2_000).contains(&lo) && hi == 5_000, "{lo} {hi}");
        assert_eq!(phase(Phase::Request).max_us, 8_000);
        assert_eq!(phase(Phase::Request).buckets.iter().sum::<u64>(), 3);
        assert_eq!(phase(Phase::OutputWrite).total_us, 80);
        assert_eq!(r.threads.iter().map(|t| t.completed).sum::<u64>(), 3);
        assert!(r.sample_period > 0.0 && r.stop_time >= r.start_time);

        // The next interval starts empty; the cumulative counts stay.
        let r = drain((1.0, 0.5)).unwrap();
        assert_eq!(r.request_count, 0);
        assert_eq!(r.status, [0; 5]);
        assert!(r.phases.iter().all(|p| p.1.min_max_us().is_none()));
        assert_eq!(r.cpu_user_utilization, 0.0);
        assert_eq!(snapshot().unwrap().request_count, 3);
    }
}
