//! A daemon process of a `WSGIDaemonProcess` group, from just after the fork to its exit:
//! signal reset, httpd listeners closed, privileges dropped (any failure is fatal), parent-death
//! signal, limits, Python start-up, then `threads` workers that each accept a connection from an
//! httpd child and serve its request over the framed protocol. Runs in the daemon process only.
#![forbid(unsafe_code)]

pub mod conn;
pub mod guard;

use std::os::unix::net::UnixListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use pyo3::prelude::*;

use crate::config::GlobalConfig;
use crate::config::daemon::{DaemonSpec, GroupSpec, UserSpec};
use crate::error::Code;
use crate::protocol::{self, Frame};
use crate::request::Request;
use crate::sys;
use crate::wsgi::adapter::{self, Level, LogFn, Outcome, RequestIo};
use crate::wsgi::build::{self, ProcessFacts};
use conn::{Conn, DaemonBody, DaemonSink};

/// Everything a daemon process needs, captured in the httpd parent before the fork.
pub struct Launch {
    pub spec: DaemonSpec,
    pub global: GlobalConfig,
    /// The group's listening socket (inherited).
    pub listener: UnixListener,
    /// Other groups' listening sockets: closed at once.
    pub other_listeners: Vec<std::os::fd::RawFd>,
    pub secret: [u8; 16],
    pub generation: u32,
    /// The previous generation's credentials (its httpd children may still be serving).
    pub previous: Option<([u8; 16], u32)>,
    /// The httpd parent's pid (for the parent-death check).
    pub parent: u32,
    /// httpd's `User`/`Group`, the default identity.
    pub httpd_uid: u32,
    pub httpd_gid: u32,
    /// Seconds to wait before starting (respawn backoff after quick deaths).
    pub backoff: Duration,
    /// Apache's `Timeout`, the default socket timeout.
    pub apache_timeout: Duration,
    /// httpd's error log, for this process's messages.
    pub log: LogFn,
    /// The error log of the virtual host a request names (validated by the httpd layer).
    pub vhost_log: fn(usize) -> Option<LogFn>,
    /// Closes httpd's own listening sockets in this process.
    pub close_httpd_listeners: fn(),
    /// Starts Python (the FFI layer's initialiser) for this group.
    pub init_python: fn(&GlobalConfig) -> Result<(), String>,
}

/// The exit status of a daemon that could not start; the parent backs off on it.
/// (Above 64, so it cannot be mistaken for a signal number: APR reports either.)
pub const EXIT_STARTUP_FAILED: i32 = 86;

fn fatal(log: &LogFn, msg: &str) -> ! {
    log(Level::Error, msg);
    sys::exit_now(EXIT_STARTUP_FAILED)
}

fn resolve_user(u: &UserSpec) -> std::io::Result<sys::User> {
    match u {
        UserSpec::Name(n) => sys::user_by_name(n),
        UserSpec::Id(id) => sys::user_by_id(*id),
    }
}

fn resolve_group(g: &GroupSpec) -> std::io::Result<u32> {
    match g {
        GroupSpec::Name(n) => sys::group_by_name(n),
        GroupSpec::Id(id) => Ok(*id),
    }
}

/// Whom a group's processes run as: the user, the primary group, and the supplementary groups
/// (`None`: `initgroups()` for the user). Used by the daemon itself and by the parent's
/// start-up checks.
pub fn identity(
    spec: &DaemonSpec,
    httpd_uid: u32,
    httpd_gid: u32,
) -> Result<(sys::User, u32, Option<Vec<u32>>), String> {
    let name = &spec.name;
    let user = match &spec.user {
        Some(u) => resolve_user(u),
        None => sys::user_by_id(httpd_uid),
    }
    .map_err(|e| format!("daemon group '{name}': user: {e}"))?;
    let gid = match &spec.group {
        Some(g) => resolve_group(g),
        None if spec.user.is_some() => Ok(user.gid),
        None => Ok(httpd_gid),
    }
    .map_err(|e| format!("daemon group '{name}': group: {e}"))?;
    let supplementary = if spec.supplementary_groups.is_empty() {
        None
    } else {
        let mut v = vec![gid];
        for g in &spec.supplementary_groups {
            v.push(
                resolve_group(g)
                    .map_err(|e| format!("daemon group '{name}': supplementary group: {e}"))?,
            );
        }
        Some(v)
    };
    Ok((user, gid, supplementary))
}

/// The identity a group's processes will have, for permission checks. A server not started
/// as root cannot switch users: its daemons keep the parent's identity.
pub fn check_identity(
    spec: &DaemonSpec,
    httpd_uid: u32,
    httpd_gid: u32,
) -> Result<crate::diag::Identity, String> {
    if sys::euid() != 0 {
        return Ok(sys::current_identity());
    }
    let (user, gid, supplementary) = identity(spec, httpd_uid, httpd_gid)?;
    let groups = supplementary.unwrap_or_else(|| sys::groups_of(&user.name, gid));
    Ok(crate::diag::Identity {
        name: user.name,
        uid: user.uid,
        gid,
        groups,
    })
}

/// Shared counters of one daemon process.
struct State {
    stopping: AtomicBool,
    active: AtomicUsize,
    served: AtomicU64,
    /// Requests this process has accepted (sent `Accepted` for), for maximum-requests.
    admitted: AtomicU64,
    /// Workers still in their accept loop.
    accepting: AtomicUsize,
    /// When this process started serving (timestamps below are milliseconds since then).
    born: Instant,
    /// Per worker: when its current request started (ms + 1), or 0 when idle.
    busy_since: Vec<AtomicU64>,
    /// The last request start or end (ms).
    last_activity: AtomicU64,
    /// The last time the GIL could be taken (ms), for deadlock-timeout.
    gil_seen: AtomicU64,
    /// When the first request arrived (ms + 1), and whether its script has loaded.
    first_request: AtomicU64,
    script_loaded: AtomicBool,
    /// Why this process is stopping, and how long it may drain (set before SIGUSR2).
    reason: std::sync::Mutex<Option<(String, Duration)>>,
}

impl State {
    fn now_ms(&self) -> u64 {
        self.born.elapsed().as_millis() as u64
    }

    /// Asks the main thread to stop this process gracefully.
    fn restart(&self, reason: String, grace: Duration) {
        let mut r = self.reason.lock().unwrap_or_else(|p| p.into_inner());
        if r.is_none() {
            *r = Some((reason, grace));
            // From now on nothing new is taken; the main thread drains and exits.
            self.stopping.store(true, Ordering::SeqCst);
            sys::kill(sys::pids().0 as i32, libc::SIGUSR2);
        }
    }
}

/// Runs a daemon process; never returns.
pub fn run(l: Launch) -> ! {
    guard::test_panic("start");
    sys::reset_signals();
    (l.close_httpd_listeners)();
    for fd in &l.other_listeners {
        sys::close_fd(*fd);
    }
    let log = l.log.clone();
    let spec = l.spec;
    let name = spec.name.clone();
    if !l.backoff.is_zero() {
        std::thread::sleep(l.backoff);
    }
    sys::set_process_name(
        &spec
            .display_name_expanded()
            .unwrap_or_else(|| format!("wsgi:{name}")),
    );

    // Identity: drop root for good before anything else runs (CVE-2014-0240/8583).
    let home = if sys::euid() == 0 {
        let (user, gid, supplementary) = identity(&spec, l.httpd_uid, l.httpd_gid)
            .unwrap_or_else(|e| fatal(&log, &format!("{}: {e}", Code::DaemonStart.as_str())));
        if user.uid == 0 {
            fatal(
                &log,
                &format!(
                    "{}: daemon group '{name}' would run as root; refusing",
                    Code::DaemonStart.as_str()
                ),
            );
        }
        if let Err(e) = sys::drop_privileges(user.uid, gid, supplementary.as_deref(), &user.name) {
            fatal(
                &log,
                &format!(
                    "{}: daemon group '{name}': cannot switch to user '{}' (uid {}) group {gid}: {e}; \
                     the application is not started",
                    Code::DaemonStart.as_str(),
                    user.name,
                    user.uid
                ),
            );
        }
        spec.home.clone().unwrap_or(user.home)
    } else {
        spec.home.clone().unwrap_or_else(|| "/".into())
    };
    if let Err(e) = sys::die_with_parent(l.parent) {
        fatal(
            &log,
            &format!("{}: daemon group '{name}': {e}", Code::DaemonStart.as_str()),
        );
    }
    if let Some(mask) = spec.umask {
        sys::set_umask(mask);
    }
    if let Err(e) = std::env::set_current_dir(&home) {
        if spec.home.is_some() {
            fatal(
                &log,
                &format!(
                    "{}: daemon group '{name}': home={home}: {e}",
                    Code::DaemonStart.as_str()
                ),
            );
        }
        let _ = std::env::set_current_dir("/");
    }
    apply_limits(&spec, &log);
    // The Python configuration of this group: the server's, with the group's own overrides.
    let mut g = l.global.clone();
    if spec.python_home.is_some() {
        g.python_home = spec.python_home.clone();
    }
    g.python_path.extend(spec.python_path.iter().cloned());
    if spec.python_eggs.is_some() {
        g.python_eggs = spec.python_eggs.clone();
    }
    if spec.switch_interval.is_some() {
        g.switch_interval = spec.switch_interval;
    }
    g.restrict_embedded = false;
    if let Err(e) = (l.init_python)(&g) {
        fatal(
            &log,
            &format!(
                "{}: daemon group '{name}': cannot initialise Python: {e}. Check python-home",
                Code::PythonInit.as_str()
            ),
        );
    }
    crate::python::ensure_thread_state();
    let info = crate::python::ProcessInfo {
        threads_per_process: spec.threads as i32,
        maximum_processes: spec.processes as i32,
    };
    let boot_ok = Python::attach(|py| {
        crate::python::bootstrap(
            py,
            &g,
            &info,
            routed_log(log.clone(), false),
            routed_log(log.clone(), false),
            routed_log(log.clone(), true),
        )
        .map_err(|e| adapter::log_exception(py, &e, &log, "mod_rwsgi could not set up Python"))
        .is_ok()
    });
    if !boot_ok {
        fatal(
            &log,
            &format!(
                "{}: daemon group '{name}': bootstrap failed",
                Code::PythonInit.as_str()
            ),
        );
    }
    Python::attach(|py| {
        let m = py.import("mod_wsgi");
        if let Ok(m) = m {
            let _ = m.setattr("process_group", name.as_str());
        }
        // As mod_wsgi: an explicit home= goes first on sys.path, like a script's directory
        // under the command-line interpreter.
        if let Some(home) = &spec.home
            && let Err(e) = py
                .import("sys")
                .and_then(|sys| sys.getattr("path"))
                .and_then(|path| path.call_method1("insert", (0, home.as_str())))
        {
            adapter::log_exception(py, &e, &log, "mod_rwsgi could not put home= on sys.path");
        }
        for imp in g.import_scripts.iter().filter(|i| i.process_group == name) {
            if let Err(e) = crate::python::load_script(py, &imp.path, None, true, g.case_sensitive)
            {
                adapter::log_exception(
                    py,
                    &e,
                    &log,
                    &format!(
                        "{}: failed to import WSGI script '{}'",
                        Code::ScriptLoad.as_str(),
                        imp.path
                    ),
                );
            }
        }
    });

    // Serve.
    let signals = [
        libc::SIGTERM,
        libc::SIGINT,
        libc::SIGHUP,
        libc::SIGUSR1,
        libc::SIGUSR2,
    ];
    sys::block_signals(&signals);
    let state = Arc::new(State {
        stopping: AtomicBool::new(false),
        active: AtomicUsize::new(0),
        served: AtomicU64::new(0),
        admitted: AtomicU64::new(0),
        accepting: AtomicUsize::new(0),
        born: Instant::now(),
        busy_since: (0..spec.threads.max(1))
            .map(|_| AtomicU64::new(0))
            .collect(),
        last_activity: AtomicU64::new(0),
        gil_seen: AtomicU64::new(0),
        first_request: AtomicU64::new(0),
        script_loaded: AtomicBool::new(false),
        reason: std::sync::Mutex::new(None),
    });
    // Workers poll instead of blocking in accept(), so a stopping process leaves the shared
    // listen queue alone: what is queued is served by the group's other or next processes.
    if let Err(e) = l.listener.set_nonblocking(true) {
        fatal(
            &log,
            &format!("{}: daemon group '{name}': {e}", Code::DaemonStart.as_str()),
        );
    }
    let listener = Arc::new(l.listener);
    let ctx = Arc::new(Ctx {
        spec: spec.clone(),
        global: g,
        secret: l.secret,
        generation: l.generation,
        previous: l.previous,
        socket_timeout: spec.socket_timeout.unwrap_or(l.apache_timeout),
        log: log.clone(),
        vhost_log: l.vhost_log,
    });
    let threads = spec.threads.max(1);
    let peers = Arc::new(Peers::new().unwrap_or_else(|e| {
        fatal(
            &log,
            &format!("{}: daemon group '{name}': {e}", Code::DaemonStart.as_str()),
        )
    }));
    state.accepting.store(1, Ordering::SeqCst);
    {
        let (listener, state, peers) = (
            Arc::clone(&listener),
            Arc::clone(&state),
            Arc::clone(&peers),
        );
        let (log2, name2, grace) = (log.clone(), name.clone(), spec.graceful_timeout);
        if let Err(e) = std::thread::Builder::new()
            .name("rwsgi-dispatch".into())
            .spawn(move || {
                let run = || dispatcher(&listener, &peers, &state, threads as usize, &log2);
                if guard::contain(&log2, &name2, "the dispatcher thread", run).is_err() {
                    // What the dispatcher does when it stops, so the process can drain.
                    peers.close_all();
                    state.accepting.store(0, Ordering::SeqCst);
                    state.restart("a panic in the dispatcher thread".into(), grace);
                }
            })
        {
            fatal(
                &log,
                &format!(
                    "{}: daemon group '{name}': cannot start threads: {e}",
                    Code::DaemonStart.as_str()
                ),
            );
        }
    }
    for i in 0..threads {
        let (peers, state, ctx) = (Arc::clone(&peers), Arc::clone(&state), Arc::clone(&ctx));
        let mut b = std::thread::Builder::new().name(format!("rwsgi-worker-{i}"));
        if let Some(sz) = spec.stack_size {
            b = b.stack_size(sz as usize);
        }
        if let Err(e) = b.spawn(move || {
            let what = format!("worker thread {i}");
            if guard::contain(&ctx.log, &ctx.spec.name, &what, || {
                worker(i as usize, &peers, &state, &ctx)
            })
            .is_err()
            {
                state.restart(format!("a panic in {what}"), ctx.spec.graceful_timeout);
            }
        }) {
            fatal(
                &log,
                &format!(
                    "{}: daemon group '{name}': cannot start threads: {e}",
                    Code::DaemonStart.as_str()
                ),
            );
        }
    }
    {
        let (state, spec, log) = (Arc::clone(&state), spec.clone(), log.clone());
        let _ = std::thread::Builder::new()
            .name("rwsgi-monitor".into())
            .spawn(move || {
                let run = || monitor(&state, &spec, &log);
                if guard::contain(&log, &spec.name, "the monitor thread", run).is_err() {
                    state.restart(
                        "a panic in the monitor thread".into(),
                        spec.graceful_timeout,
                    );
                }
            });
    }
    if !spec.deadlock_timeout.is_zero() {
        let (state, log, name, grace) = (
            Arc::clone(&state),
            log.clone(),
            name.clone(),
            spec.graceful_timeout,
        );
        let _ = std::thread::Builder::new()
            .name("rwsgi-gil-probe".into())
            .spawn(move || {
                let run = || {
                    crate::python::ensure_thread_state();
                    loop {
                        Python::attach(|_| state.gil_seen.store(state.now_ms(), Ordering::SeqCst));
                        std::thread::sleep(Duration::from_millis(500));
                    }
                };
                if guard::contain(&log, &name, "the GIL probe thread", run).is_err() {
                    state.restart("a panic in the GIL probe thread".into(), grace);
                }
            });
    }
    log(
        Level::Info,
        &format!(
            "daemon process of group '{name}' started (pid {}, {threads} threads)",
            sys::pids().0
        ),
    );
    let sig = sys::wait_signal(&signals);
    state.stopping.store(true, Ordering::SeqCst);
    let (why, grace) = match sig {
        libc::SIGUSR2 => state
            .reason
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .unwrap_or(("restart requested".into(), spec.graceful_timeout)),
        // httpd's graceful signal to a daemon: eviction-timeout, if set, replaces it.
        libc::SIGUSR1 if !spec.eviction_timeout.is_zero() => {
            ("eviction signal".into(), spec.eviction_timeout)
        }
        libc::SIGUSR1 => ("graceful signal".into(), spec.graceful_timeout),
        _ => (format!("signal {sig}"), spec.shutdown_timeout),
    };
    log(
        Level::Info,
        &format!("daemon process of group '{name}' stopping: {why}"),
    );
    let deadline = Instant::now() + grace;
    // Workers leave their accept loop within one poll interval once idle, busy ones when their
    // request is done; only then is nothing of the shared listen queue taken by this process.
    while (state.active.load(Ordering::SeqCst) > 0 || state.accepting.load(Ordering::SeqCst) > 0)
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(10));
    }
    log(
        Level::Info,
        &format!(
            "daemon process of group '{name}' exiting ({} requests served, {} still active)",
            state.served.load(Ordering::Relaxed),
            state.active.load(Ordering::SeqCst)
        ),
    );
    sys::exit_now(0)
}

fn apply_limits(spec: &DaemonSpec, log: &LogFn) {
    let warn = |what: &str, e: std::io::Error| {
        log(
            Level::Warning,
            &format!("daemon group '{}': cannot set {what}: {e}", spec.name),
        )
    };
    if let Some(m) = spec.memory_limit
        && let Err(e) = sys::set_limit(sys::Limit::Data, m, m)
    {
        warn("memory-limit", e);
    }
    if let Some(m) = spec.virtual_memory_limit
        && let Err(e) = sys::set_limit(sys::Limit::AddressSpace, m, m)
    {
        warn("virtual-memory-limit", e);
    }
    if let Some(c) = spec.cpu_time_limit {
        let hard = c + 1 + spec.shutdown_timeout.as_secs();
        if let Err(e) = sys::set_limit(sys::Limit::Cpu, c, hard) {
            warn("cpu-time-limit", e);
        }
    }
    if spec.cpu_priority != 0
        && let Err(e) = sys::set_priority(spec.cpu_priority)
    {
        warn("cpu-priority", e);
    }
    // Called before the daemon starts any thread.
    if let Some(lang) = &spec.lang {
        sys::set_env_single_threaded("LANG", lang);
    }
    if let Some(locale) = &spec.locale {
        sys::set_env_single_threaded("LC_ALL", locale);
    }
}

thread_local! {
    /// The log of the request this worker runs (its virtual host), for print()/sys.stderr.
    static CURRENT_LOG: std::cell::RefCell<Option<LogFn>> = const { std::cell::RefCell::new(None) };
    /// The same, with the request id on every line, for Python `logging` records.
    static CURRENT_REQUEST_LOG: std::cell::RefCell<Option<LogFn>> =
        const { std::cell::RefCell::new(None) };
}

/// A log function that follows the calling thread's current request (`with_id`: the log that
/// prefixes the request id).
fn routed_log(fallback: LogFn, with_id: bool) -> LogFn {
    Arc::new(move |l, m| {
        let current = if with_id {
            CURRENT_REQUEST_LOG.with(|c| c.borrow().clone())
        } else {
            CURRENT_LOG.with(|c| c.borrow().clone())
        };
        match current {
            Some(f) => f(l, m),
            None => fallback(l, m),
        }
    })
}

/// Per-process request context.
struct Ctx {
    spec: DaemonSpec,
    global: GlobalConfig,
    secret: [u8; 16],
    generation: u32,
    previous: Option<([u8; 16], u32)>,
    socket_timeout: Duration,
    log: LogFn,
    vhost_log: fn(usize) -> Option<LogFn>,
}

/// A connection between an httpd child and this daemon, kept open across requests.
struct Peer {
    conn: Conn,
    /// The handshake has been done on this connection.
    authenticated: bool,
}

/// The kept connections of this process while no worker serves them, each registered
/// one-shot with `poll` under its token. Idle workers wait on `poll` together: a connection
/// that becomes readable (a request, or the httpd child closing it) wakes one worker, which
/// takes it out, serves it and puts it back re-armed. No thread sits between the socket and
/// the worker, so a request costs one wake-up in the daemon.
struct Peers {
    poll: sys::OneShotPoll,
    slots: std::sync::Mutex<Slots>,
}

struct Slots {
    idle: std::collections::HashMap<u64, Peer>,
    /// Accepted connections no worker has taken yet (their first request is still waiting).
    fresh: usize,
    next_token: u64,
    /// False once the process stops: connections are closed instead of kept.
    open: bool,
}

impl Peers {
    fn new() -> std::io::Result<Self> {
        Ok(Peers {
            poll: sys::OneShotPoll::new()?,
            slots: std::sync::Mutex::new(Slots {
                idle: std::collections::HashMap::new(),
                fresh: 0,
                next_token: 1,
                open: true,
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Slots> {
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a newly accepted connection.
    fn add(&self, p: Peer, log: &LogFn) {
        let mut s = self.lock();
        if !s.open {
            return;
        }
        let token = s.next_token;
        s.next_token += 1;
        let fd = p.conn.fd();
        s.idle.insert(token, p);
        s.fresh += 1;
        if let Err(e) = self.poll.add(fd, token) {
            s.idle.remove(&token);
            s.fresh -= 1;
            log(
                Level::Warning,
                &format!("daemon cannot watch a new connection: {e}"),
            );
        }
    }

    /// Waits for a connection with something to read and takes it out, counting the calling
    /// worker as active (under the lock, so a stopping process never sees an idle moment while
    /// a connection is in a worker's hands). `None` after `timeout`.
    fn take(&self, state: &State, timeout: Duration) -> Option<(u64, Peer)> {
        let token = self.poll.wait(timeout)?;
        let mut s = self.lock();
        let p = s.idle.remove(&token)?;
        if !p.authenticated {
            s.fresh = s.fresh.saturating_sub(1);
        }
        state.active.fetch_add(1, Ordering::SeqCst);
        Some((token, p))
    }

    /// Accepted connections not yet taken by a worker.
    fn fresh(&self) -> usize {
        self.lock().fresh
    }

    /// Puts a connection that can carry another request back, watched again; closes it when
    /// the process is stopping.
    fn give_back(&self, token: u64, mut p: Peer) {
        p.conn.trim_idle();
        let mut s = self.lock();
        let fd = p.conn.fd();
        if !s.open {
            self.poll.remove(fd);
            return;
        }
        s.idle.insert(token, p);
        if self.poll.rearm(fd, token).is_err() {
            s.idle.remove(&token);
            self.poll.remove(fd);
        }
    }

    /// Closes a connection that is not given back.
    fn forget(&self, p: Peer) {
        self.poll.remove(p.conn.fd());
    }

    /// Stops keeping connections and closes the idle ones: httpd children notice before
    /// reusing them and send their next request to another or the next process.
    fn close_all(&self) {
        let mut s = self.lock();
        s.open = false;
        s.fresh = 0;
        for (_, p) in s.idle.drain() {
            self.poll.remove(p.conn.fd());
        }
    }
}

/// Accepts connections and hands them to the workers. Stops accepting (leaving the shared listen
/// queue to the group's other and next processes) and closes idle connections when the process
/// stops.
///
/// The group's processes share one listening socket and every httpd child keeps the connections
/// it made, so where a connection lands is where its requests go. A process takes new
/// connections one at a time, at once, while it has a thread to spare (its running requests
/// plus the accepted connections no worker has taken yet are fewer than its threads). When it
/// has none, it leaves what is queued `BUSY_DEFER` to the group's other processes and then
/// takes whatever is still queued, so that a live but busy group still answers `Welcome` (a
/// dead group is a fast 503, not a wait) and a burst of connections waits that long once.
fn dispatcher(listener: &UnixListener, peers: &Peers, state: &State, threads: usize, log: &LogFn) {
    const BUSY_DEFER: Duration = Duration::from_millis(20);
    let listen_fd = std::os::fd::AsRawFd::as_raw_fd(listener);
    while !state.stopping.load(Ordering::SeqCst) {
        if !sys::wait_readable(listen_fd, Duration::from_millis(250)) {
            continue;
        }
        guard::test_panic("dispatcher");
        if state.active.load(Ordering::SeqCst) + peers.fresh() < threads {
            accept_one(listener, peers, log);
            continue;
        }
        std::thread::sleep(BUSY_DEFER);
        if state.stopping.load(Ordering::SeqCst) {
            break;
        }
        while accept_one(listener, peers, log) {}
    }
    peers.close_all();
    state.accepting.store(0, Ordering::SeqCst);
}

/// Accepts one queued connection, answers `Welcome` and hands it to the workers; false when
/// none was queued (another process took it) or accepting failed.
fn accept_one(listener: &UnixListener, peers: &Peers, log: &LogFn) -> bool {
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                let _ = stream.set_nonblocking(false);
                let mut conn = Conn::new(stream);
                if conn.send(&Frame::Welcome).is_ok() {
                    peers.add(
                        Peer {
                            conn,
                            authenticated: false,
                        },
                        log,
                    );
                }
                return true;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
            Err(e) => {
                log(Level::Warning, &format!("daemon accept failed: {e}"));
                std::thread::sleep(Duration::from_millis(100));
                return false;
            }
        }
    }
}

fn worker(index: usize, peers: &Peers, state: &State, ctx: &Ctx) {
    crate::python::ensure_thread_state();
    loop {
        let Some((token, mut peer)) = peers.take(state, Duration::from_millis(100)) else {
            if state.stopping.load(Ordering::SeqCst) && state.accepting.load(Ordering::SeqCst) == 0
            {
                return;
            }
            continue;
        };
        if state.stopping.load(Ordering::SeqCst) {
            // Not read, not run: the httpd child sends it to another or the next process.
            let _ = peer.conn.send(&Frame::Reject {
                reason: protocol::REJECT_SHUTTING_DOWN,
            });
            peers.forget(peer);
            state.active.fetch_sub(1, Ordering::SeqCst);
            continue;
        }
        let now = state.now_ms();
        state.busy_since[index].store(now + 1, Ordering::SeqCst);
        let served = guard::contain(&ctx.log, &ctx.spec.name, "a worker's request", || {
            serve(peer, ctx, state)
        });
        state.busy_since[index].store(0, Ordering::SeqCst);
        let Ok(outcome) = served else {
            // The connection was closed as the panic unwound (the httpd child answers 502 or
            // aborts the response); release the worker's claim and recycle the process.
            CURRENT_LOG.with(|c| *c.borrow_mut() = None);
            CURRENT_REQUEST_LOG.with(|c| *c.borrow_mut() = None);
            state.active.fetch_sub(1, Ordering::SeqCst);
            state.restart(
                format!("a panic in worker {index}'s request"),
                ctx.spec.graceful_timeout,
            );
            continue;
        };
        if outcome.ran && outcome.counts {
            // WSGIIgnoreActivity On requests (health checks) do not postpone inactivity-timeout.
            state.last_activity.store(state.now_ms(), Ordering::SeqCst);
        }
        // A connection not given back is closed by now, which ended its registration.
        if let Some(p) = outcome.back {
            peers.give_back(token, p);
        }
        state.active.fetch_sub(1, Ordering::SeqCst);
        if !outcome.ran {
            continue;
        }
        let n = state.served.fetch_add(1, Ordering::SeqCst) + 1;
        if ctx.spec.maximum_requests > 0 && n >= ctx.spec.maximum_requests {
            // Recycle: no further request is taken; what runs finishes; the parent starts a
            // fresh process.
            state.restart(
                format!("maximum-requests ({n}) reached; recycling"),
                ctx.spec.graceful_timeout,
            );
        }
    }
}

/// Watches the process's clocks: restart-interval, inactivity-timeout, request-timeout,
/// startup-timeout (graceful restarts) and deadlock-timeout (immediate exit). Runs always, so no
/// option silently depends on another (mod_wsgi only started its monitor for some options).
fn monitor(state: &State, spec: &DaemonSpec, log: &LogFn) {
    let ms = |d: Duration| d.as_millis() as u64;
    loop {
        std::thread::sleep(Duration::from_millis(200));
        if state.stopping.load(Ordering::SeqCst) {
            return;
        }
        guard::test_panic("monitor");
        let now = state.now_ms();
        if !spec.restart_interval.is_zero() && now >= ms(spec.restart_interval) {
            state.restart("restart-interval reached".into(), spec.graceful_timeout);
        }
        if !spec.inactivity_timeout.is_zero()
            && state.active.load(Ordering::SeqCst) == 0
            && now.saturating_sub(state.last_activity.load(Ordering::SeqCst))
                >= ms(spec.inactivity_timeout)
        {
            state.restart("inactivity-timeout reached".into(), Duration::ZERO);
        }
        if !spec.request_timeout.is_zero() {
            for (i, t) in state.busy_since.iter().enumerate() {
                let since = t.load(Ordering::SeqCst);
                if since > 0 && now.saturating_sub(since - 1) >= ms(spec.request_timeout) {
                    state.restart(
                        format!(
                            "request-timeout: worker {i} has been running one request for more \
                             than {} s",
                            spec.request_timeout.as_secs_f32()
                        ),
                        spec.graceful_timeout,
                    );
                }
            }
        }
        let first = state.first_request.load(Ordering::SeqCst);
        if !spec.startup_timeout.is_zero()
            && first > 0
            && !state.script_loaded.load(Ordering::SeqCst)
            && now.saturating_sub(first - 1) >= ms(spec.startup_timeout)
        {
            state.restart(
                "startup-timeout: the WSGI script has not loaded".into(),
                Duration::ZERO,
            );
        }
        if !spec.deadlock_timeout.is_zero()
            && now.saturating_sub(state.gil_seen.load(Ordering::SeqCst))
                >= ms(spec.deadlock_timeout)
            && now >= ms(spec.deadlock_timeout)
        {
            log(
                Level::Error,
                &format!(
                    "{}: daemon group '{}': the Python GIL has not been available for {} s \
                     (deadlock-timeout); restarting the process now",
                    Code::DaemonExited.as_str(),
                    spec.name,
                    spec.deadlock_timeout.as_secs()
                ),
            );
            sys::exit_now(1);
        }
    }
}

/// Serves one connection: handshake, one request, response.
/// What serving one connection did.
struct Served {
    /// A request was read and run (counts towards maximum-requests).
    ran: bool,
    /// It counts as activity (inactivity-timeout).
    counts: bool,
    /// The connection, if it can carry another request.
    back: Option<Peer>,
}

const NOTHING: Served = Served {
    ran: false,
    counts: false,
    back: None,
};

/// Serves one request on a connection: the handshake first if the connection is new.
fn serve(peer: Peer, ctx: &Ctx, state: &State) -> Served {
    let Peer {
        conn: mut c,
        authenticated,
    } = peer;
    if !authenticated {
        c.set_timeouts(ctx.socket_timeout);
        if !handshake(&mut c, ctx) {
            return NOTHING;
        }
    }
    let req = match c.recv() {
        Ok(Frame::Request { meta, env }) => Request { env, meta },
        // The httpd child closed a connection it had kept: nothing to do.
        Err(e) if authenticated && e.kind() == std::io::ErrorKind::UnexpectedEof => {
            return NOTHING;
        }
        Ok(other) => {
            (ctx.log)(
                Level::Error,
                &format!(
                    "{}: expected Request, got {}",
                    Code::DaemonProtocol.as_str(),
                    other.name()
                ),
            );
            return NOTHING;
        }
        Err(e) => {
            (ctx.log)(
                Level::Error,
                &format!(
                    "{}: reading the request: {e}",
                    Code::DaemonProtocol.as_str()
                ),
            );
            return NOTHING;
        }
    };
    let _ = state.first_request.compare_exchange(
        0,
        state.now_ms() + 1,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    if !ctx.spec.queue_timeout.is_zero() {
        let queued = req.meta.queue_start_secs();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        if queued > 0.0 && now - queued > ctx.spec.queue_timeout.as_secs_f64() {
            (ctx.log)(
                Level::Error,
                &format!(
                    "{}: daemon group '{}': a request waited {:.1} s for a free thread \
                     (queue-timeout {} s); answered 504",
                    Code::DaemonUnavailable.as_str(),
                    ctx.spec.name,
                    now - queued,
                    ctx.spec.queue_timeout.as_secs_f32()
                ),
            );
            let _ = c.send(&Frame::Reject {
                reason: protocol::REJECT_QUEUE_TIMEOUT,
            });
            return Served {
                back: c.reusable().then_some(Peer {
                    conn: c,
                    authenticated: true,
                }),
                ..NOTHING
            };
        }
    }
    let counts = req.counts_as_activity();
    // As mod_wsgi does in daemon mode, a changed script restarts the process (so the modules it
    // imports are fresh too). Checked before `Accepted`: the request goes to another or the
    // next process.
    let script = req.script();
    let mtime = req.script_mtime();
    if req.script_reloading()
        && !crate::python::script_loaded_at(&script, mtime, ctx.global.case_sensitive)
        && Python::attach(|py| {
            crate::python::script_changed(py, &script, mtime, ctx.global.case_sensitive)
        })
    {
        let _ = c.send(&Frame::Reject {
            reason: protocol::REJECT_SHUTTING_DOWN,
        });
        state.restart(
            format!("script '{script}' changed"),
            ctx.spec.graceful_timeout,
        );
        return NOTHING;
    }
    // maximum-requests counts requests as they are accepted: one that arrives while the last
    // allowed one is still finishing goes to the next process instead (the recycle follows
    // once the running ones are done).
    if ctx.spec.maximum_requests > 0
        && state.admitted.fetch_add(1, Ordering::SeqCst) >= ctx.spec.maximum_requests
    {
        let _ = c.send(&Frame::Reject {
            reason: protocol::REJECT_SHUTTING_DOWN,
        });
        return NOTHING;
    }
    // From here on the request is ours: the httpd child must not send it anywhere else.
    if c.send(&Frame::Accepted).is_err() {
        return NOTHING;
    }
    guard::test_panic("worker");
    let conn = Arc::new(std::sync::Mutex::new(c));
    let finish = Python::attach(|py| run_request(py, ctx, state, req, &conn));
    // The end of the response (End, with the last queued blocks) is sent without the GIL.
    if let Some(f) = finish {
        f.run();
    }
    CURRENT_LOG.with(|c| *c.borrow_mut() = None);
    CURRENT_REQUEST_LOG.with(|c| *c.borrow_mut() = None);
    // Every other holder (wsgi.input, the response sink) is gone once the request has ended.
    let back = Arc::try_unwrap(conn)
        .ok()
        .map(|m| m.into_inner().unwrap_or_else(|p| p.into_inner()))
        .filter(Conn::reusable)
        .map(|conn| Peer {
            conn,
            authenticated: true,
        });
    Served {
        ran: true,
        counts,
        back,
    }
}

/// Checks a new connection's handshake: protocol version and this server's credentials.
fn handshake(c: &mut Conn, ctx: &Ctx) -> bool {
    match c.recv() {
        Ok(Frame::Hello {
            version,
            secret,
            generation,
        }) if version == protocol::PROTOCOL_VERSION
            && ((secret == ctx.secret && generation == ctx.generation)
                || ctx.previous == Some((secret, generation))) => {}
        Ok(Frame::Hello { .. }) => {
            (ctx.log)(
                Level::Error,
                &format!(
                    "{}: daemon group '{}': refused a connection with a wrong protocol version, \
                     secret or server generation",
                    Code::DaemonProtocol.as_str(),
                    ctx.spec.name
                ),
            );
            let _ = c.send(&Frame::Reject {
                reason: protocol::REJECT_BAD_CREDENTIALS,
            });
            return false;
        }
        Ok(other) => {
            (ctx.log)(
                Level::Error,
                &format!(
                    "{}: daemon group '{}': refused a connection that did not start with Hello \
                     (got {})",
                    Code::DaemonProtocol.as_str(),
                    ctx.spec.name,
                    other.name()
                ),
            );
            return false;
        }
        // Not a frame at all (garbage, an oversized length): refused like a wrong secret.
        Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
            (ctx.log)(
                Level::Error,
                &format!(
                    "{}: daemon group '{}': refused a connection whose handshake is not a \
                     protocol frame: {e}",
                    Code::DaemonProtocol.as_str(),
                    ctx.spec.name
                ),
            );
            return false;
        }
        Err(e) => {
            (ctx.log)(
                Level::Debug,
                &format!("daemon connection closed before the handshake: {e}"),
            );
            return false;
        }
    }
    true
}

fn run_request(
    py: Python<'_>,
    ctx: &Ctx,
    state: &State,
    req: Request<Vec<u8>>,
    conn: &Arc<std::sync::Mutex<Conn>>,
) -> Option<adapter::Finish> {
    let script = req.script();
    let request_id = req.request_id();
    let base_log = usize::try_from(req.meta.server_id)
        .ok()
        .and_then(ctx.vhost_log)
        .unwrap_or_else(|| ctx.log.clone());
    CURRENT_LOG.with(|c| *c.borrow_mut() = Some(base_log.clone()));
    let log: LogFn = Arc::new(move |l, m| base_log(l, &format!("[{request_id}] {m}")));
    CURRENT_REQUEST_LOG.with(|c| *c.borrow_mut() = Some(log.clone()));
    let fail = |msg: &str| {
        let mut c = conn.lock().unwrap_or_else(|p| p.into_inner());
        let _ = c.send(&Frame::Fail {
            code: 500,
            message: msg.as_bytes().to_vec(),
        });
    };

    let Some(app) = crate::python::load_app(
        py,
        &script,
        req.script_mtime(),
        req.script_reloading(),
        ctx.global.case_sensitive,
        &req.callable_object(),
        &log,
    ) else {
        fail("the application could not be loaded");
        return None;
    };
    state.script_loaded.store(true, Ordering::SeqCst);
    let process = ProcessFacts {
        multithread: ctx.spec.multithread(),
        multiprocess: ctx.spec.multiprocess(),
        run_once: ctx.spec.run_once(),
        daemon: true,
    };
    let body = Box::new(DaemonBody::new(Arc::clone(conn)));
    let built = match build::environ(py, &req, &process, body, &log, ctx.log.clone()) {
        Ok(v) => v,
        Err(e) => {
            adapter::log_exception(py, &e, &log, "cannot build the environ");
            fail("environ");
            return None;
        }
    };
    let io = RequestIo {
        sink: Box::new(DaemonSink::new(Arc::clone(conn))),
        input: built.input,
        errors: built.errors,
        log,
        script,
        stream_flush: true,
        head_request: req.meta.head_request,
    };
    let (outcome, finish) = adapter::run(py, &app, built.environ, io);
    if outcome == Outcome::ServerError {
        fail("application error");
    }
    finish
}
