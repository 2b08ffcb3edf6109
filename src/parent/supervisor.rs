//! Daemon groups seen from httpd: the parent creates each group's socket (mode 0600, owned by
//! the child user), forks the daemon processes in the real configuration pass, supervises them
//! through APR's other-child mechanism (restart with backoff, never while stopping), and stops
//! them on restart and stop. httpd children close the listeners they inherit. Runs in the httpd
//! parent (spawn, supervise) and the httpd child (`child_init_close`).
#![forbid(unsafe_code)]

use std::ffi::c_int;
use std::os::fd::{IntoRawFd, RawFd};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::config::GlobalConfig;
use crate::config::daemon::DaemonSpec;
use crate::daemon::{self, Launch};
use crate::error::Code;
use crate::httpd::base::global;
use crate::httpd::ffi::{APLOG_ERR, APLOG_INFO, APLOG_WARNING};
use crate::httpd::pool::{CREDENTIALS, KEPT_LISTENERS, Pool};
use crate::httpd::process::{self, Forked, InChild, OtherChild, Reason};
use crate::httpd::server::Server;
use crate::python;
use crate::sys;

/// One group of this generation, as every process forked from the parent sees it.
#[derive(Clone)]
pub(crate) struct Group {
    pub spec: DaemonSpec,
    pub socket: String,
    pub listener: RawFd,
}

/// The daemon groups of the current configuration generation.
#[derive(Clone, Default)]
pub(crate) struct Generation {
    pub groups: Vec<Group>,
    pub secret: [u8; 16],
    pub number: u32,
    /// The previous generation's credentials, still accepted by this generation's daemons.
    pub previous: Option<([u8; 16], u32)>,
}

static GENERATION: Mutex<Option<Arc<Generation>>> = Mutex::new(None);
/// Live daemon processes (pid, group index) of this generation.
static LIVE: Mutex<Vec<(i32, usize)>> = Mutex::new(Vec::new());
static STOPPING: Mutex<bool> = Mutex::new(false);

pub(crate) fn generation() -> Option<Arc<Generation>> {
    GENERATION.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

/// Looks a group up by name: the generation and the group's index in it.
pub(crate) fn group(name: &str) -> Option<(Arc<Generation>, usize)> {
    let gen_ = generation()?;
    let i = gen_.groups.iter().position(|x| x.spec.name == name)?;
    Some((gen_, i))
}

pub(crate) fn httpd_identity() -> (u32, u32) {
    process::httpd_identity()
}

fn mpm_running() -> bool {
    process::mpm_running() && !*STOPPING.lock().unwrap_or_else(|p| p.into_inner())
}

/// Supervision state of one daemon process slot.
struct Slot {
    pconf: Pool,
    server: Server,
    group: usize,
    /// The process's index in its group (its board slot).
    process: usize,
    /// 0 once the process is gone or being stopped.
    pid: std::cell::Cell<i32>,
    started: Instant,
    quick_deaths: u32,
}

/// A group's socket path and its owner (uid, gid).
type SocketPlan = (String, (u32, u32));

/// Each group's socket path and owner (uid, gid), after checking that the path fits a UNIX
/// socket and that the owner can reach its directory. Run by `check_config` (so `apachectl -t`
/// reports it) and again when the sockets are created.
pub(crate) fn socket_plan(pconf: Pool, g: &GlobalConfig) -> Result<Vec<SocketPlan>, String> {
    let (uid, gid) = httpd_identity();
    let parent = sys::pids().0;
    let prefix = match &g.socket_prefix {
        Some(p) => pconf.server_root_relative(p),
        None => pconf.runtime_dir_relative("rwsgi"),
    };
    let mut out = Vec::new();
    let mut checked: Vec<(u32, u32)> = Vec::new();
    for (i, spec) in g.daemons.iter().enumerate() {
        let path = format!("{prefix}.{parent}.{i}.sock");
        if path.len() >= 108 {
            return Err(format!(
                "{}: daemon group '{}': socket path '{path}' is longer than a UNIX socket path may \
                 be (107 bytes); use a shorter WSGISocketPrefix",
                Code::DaemonStart.as_str(),
                spec.name
            ));
        }
        let dir = std::path::Path::new(&path)
            .parent()
            .unwrap_or(std::path::Path::new("/"));
        let who = match &spec.socket_user {
            Some(u) => match u {
                crate::config::daemon::UserSpec::Name(n) => sys::user_by_name(n),
                crate::config::daemon::UserSpec::Id(id) => sys::user_by_id(*id),
            }
            .map(|u| (u.uid, u.gid, u.name)),
            None => Ok((uid, gid, sys::user_name(uid))),
        };
        let (ouid, ogid, name) = match who {
            Ok(o) => o,
            Err(e) => {
                return Err(format!(
                    "{}: daemon group '{}': socket-user: {e}",
                    Code::DaemonStart.as_str(),
                    spec.name
                ));
            }
        };
        // Every group's socket is in the same directory: each owner is checked once.
        let reachable = if checked.contains(&(ouid, ogid)) {
            Ok(())
        } else {
            checked.push((ouid, ogid));
            let who = sys::user_identity(name, ouid, ogid);
            crate::diag::access_problem(dir, &who, crate::diag::Need::Search)
        };
        if let Err(blocked) = reachable {
            return Err(format!(
                "{}: daemon group '{}': the httpd child user cannot reach the socket directory \
                 '{}': {blocked}. Use WSGISocketPrefix with a directory it can search (e.g. \
                 WSGISocketPrefix run/rwsgi, relative to ServerRoot)",
                Code::DaemonStart.as_str(),
                spec.name,
                dir.display()
            ));
        }
        out.push((path, (ouid, ogid)));
    }
    Ok(out)
}

/// Post-config (the real pass): creates sockets and starts every group's processes.
/// Returns an error message for the operator, or `None`.
pub(crate) fn start_all(pconf: Pool, s: Server, g: &GlobalConfig) -> Option<String> {
    *STOPPING.lock().unwrap_or_else(|p| p.into_inner()) = false;
    install_board(pconf, s, g);
    if g.daemons.is_empty() {
        *GENERATION.lock().unwrap_or_else(|p| p.into_inner()) = None;
        return None;
    }
    let sockets = match socket_plan(pconf, g) {
        Ok(v) => v,
        Err(msg) => return Some(msg),
    };
    let mut kept = kept_listeners(s);
    let mut groups = Vec::new();
    for (spec, (path, owner)) in g.daemons.iter().zip(sockets) {
        let sys_owner = if sys::euid() == 0 { Some(owner) } else { None };
        // A graceful restart keeps the group's listening socket: connections queued in its
        // backlog while the old daemons stop are served by the new ones, never reset.
        if let Some(pos) = kept.iter().position(|(fd, p)| {
            *p == path
                && std::path::Path::new(&path).exists()
                && sys::listening_unix_path(*fd).as_deref() == Some(path.as_str())
        }) {
            let (fd, _) = kept.remove(pos);
            if let Err(e) = sys::refresh_listener(fd, &path, spec.listen_backlog, sys_owner) {
                return Some(format!(
                    "{}: daemon group '{}': cannot reuse socket '{path}': {e}",
                    Code::DaemonStart.as_str(),
                    spec.name
                ));
            }
            groups.push(Group {
                spec: spec.clone(),
                socket: path,
                listener: fd,
            });
            continue;
        }
        match sys::unix_listen(&path, spec.listen_backlog, sys_owner) {
            Ok(fd) => groups.push(Group {
                spec: spec.clone(),
                socket: path,
                listener: fd.into_raw_fd(),
            }),
            Err(e) => {
                return Some(format!(
                    "{}: daemon group '{}': cannot create socket '{path}': {e}",
                    Code::DaemonStart.as_str(),
                    spec.name
                ));
            }
        }
    }
    for g in &groups {
        if let Err(e) = sys::set_socket_buffers(
            g.listener,
            g.spec.send_buffer_size,
            g.spec.receive_buffer_size,
        ) {
            return Some(format!(
                "{}: daemon group '{}': cannot set send-buffer-size/receive-buffer-size on '{}': \
                 {e}",
                Code::DaemonStart.as_str(),
                g.spec.name,
                g.socket
            ));
        }
    }
    let secret = match sys::random16() {
        Ok(b) => b,
        Err(e) => {
            return Some(format!(
                "{}: cannot read /dev/urandom: {e}",
                Code::DaemonStart.as_str()
            ));
        }
    };
    // Sockets of groups the new configuration no longer has.
    for (fd, path) in kept {
        sys::close_fd(fd);
        if !groups.iter().any(|g| g.socket == path) {
            let _ = std::fs::remove_file(&path);
        }
    }
    keep_listeners(s, &groups);
    let previous = swap_credentials(s, secret);
    let number = previous.map_or(1, |(_, n)| n.wrapping_add(1));
    *GENERATION.lock().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(Generation {
        groups: groups.clone(),
        secret,
        number,
        previous,
    }));
    // Sockets go away with this generation (registered first, so it runs after the daemons
    // have been stopped by their own cleanups).
    pconf.on_cleanup("remove_sockets", remove_sockets);
    for (gi, grp) in groups.iter().enumerate() {
        for p in 0..grp.spec.processes as usize {
            spawn(pconf, s, gi, p, 0, Duration::ZERO);
        }
    }
    // Registered after the daemons' own cleanups, so it runs first: signal every daemon at
    // once and wait for them together (not one shutdown-timeout after another).
    pconf.on_cleanup("stop daemons", stop_all);
    None
}

/// Shares a fresh board with everything this generation forks (the previous generation's
/// processes keep theirs until they exit); its memory is unmapped here when pconf goes.
fn install_board(pconf: Pool, s: Server, g: &GlobalConfig) {
    let layout = crate::board::Layout::with_children(
        crate::httpd::process::server_limit(),
        g.daemons
            .iter()
            .map(|d| crate::board::GroupShape {
                name: d.name.clone(),
                processes: d.processes as usize,
                threads: d.threads as usize,
            })
            .collect(),
    );
    let generation = crate::httpd::process::config_generation();
    let board = match sys::SharedWords::new(layout.words) {
        Ok(mem) => crate::board::Board::new(layout, Box::new(mem)).map(|b| b.of(generation)),
        Err(e) => {
            s.log(
                APLOG_WARNING,
                &format!("mod_rwsgi: no shared memory for metrics and server-status: {e}"),
            );
            None
        }
    };
    drop(crate::board::install(board));
    pconf.on_cleanup("board", || drop(crate::board::install(None)));
}

/// Records this generation's secret and returns the previous generation's credentials. httpd
/// unloads and reloads the module on every restart, so they live in the process pool (which
/// survives restarts), not in a static. httpd children of the previous generation may still be
/// finishing keep-alive connections after a graceful restart; the new daemons accept them.
fn swap_credentials(s: Server, secret: [u8; 16]) -> Option<([u8; 16], u32)> {
    let pool = s.process_pool();
    let buf = CREDENTIALS
        .load(pool)
        .unwrap_or_else(|| vec![0; CREDENTIALS.len()]);
    let mut old = [0u8; 16];
    old.copy_from_slice(&buf[..16]);
    let old_number = u32::from_be_bytes([buf[16], buf[17], buf[18], buf[19]]);
    let number = old_number.wrapping_add(1).max(1);
    let mut new = [0u8; 20];
    new[..16].copy_from_slice(&secret);
    new[16..].copy_from_slice(&number.to_be_bytes());
    CREDENTIALS.store(pool, &new);
    (old_number != 0).then_some((old, old_number))
}

/// pconf cleanup: stops every live daemon of this generation at once.
fn stop_all() {
    let live: Vec<(i32, usize)> =
        std::mem::take(&mut *LIVE.lock().unwrap_or_else(|p| p.into_inner()));
    let grace = generation()
        .map(|g| {
            g.groups
                .iter()
                .map(|x| x.spec.shutdown_timeout)
                .max()
                .unwrap_or_default()
        })
        .unwrap_or(Duration::from_secs(5));
    for (pid, _) in &live {
        sys::kill(*pid, libc::SIGTERM);
    }
    let deadline = Instant::now() + grace + Duration::from_secs(1);
    for (pid, _) in &live {
        let left = deadline.saturating_duration_since(Instant::now());
        if !sys::reap(*pid, left) {
            sys::kill(*pid, libc::SIGKILL);
            sys::reap(*pid, Duration::from_secs(2));
        }
    }
}

fn is_live(pid: i32) -> bool {
    LIVE.lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .any(|(p, _)| *p == pid)
}

fn forget(pid: i32) {
    LIVE.lock()
        .unwrap_or_else(|p| p.into_inner())
        .retain(|(p, _)| *p != pid);
}

/// pconf cleanup: this generation ends; its sockets go too if httpd is exiting.
fn remove_sockets() {
    let g = GENERATION.lock().unwrap_or_else(|p| p.into_inner()).take();
    let exiting = process::httpd_exiting();
    if exiting && let Some(g) = g {
        // httpd is stopping: the sockets go. On a restart they are kept for the next
        // generation (start_all), so nothing queued on them is lost.
        for grp in &g.groups {
            sys::close_fd(grp.listener);
            let _ = std::fs::remove_file(&grp.socket);
        }
    }
}

const KEPT_LEN: usize = KEPT_LISTENERS.len();

/// The listening sockets kept from the previous generation: "fd path" lines in a buffer in
/// the process pool, which (unlike this module's statics) survives restarts.
fn kept_listeners(s: Server) -> Vec<(RawFd, String)> {
    let Some(buf) = KEPT_LISTENERS.load(s.process_pool()) else {
        return Vec::new();
    };
    // NUL-terminated text written by keep_listeners.
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    let text = String::from_utf8_lossy(&buf[..end]);
    text.lines()
        .filter_map(|l| {
            let (fd, path) = l.split_once(' ')?;
            Some((fd.parse().ok()?, path.to_string()))
        })
        .collect()
}

fn keep_listeners(s: Server, groups: &[Group]) {
    let mut text = String::new();
    for g in groups {
        text.push_str(&format!("{} {}\n", g.listener, g.socket));
    }
    if text.len() >= KEPT_LEN {
        text.clear(); // too many groups to remember: the next generation makes new sockets
    }
    let mut bytes = text.into_bytes();
    bytes.push(0);
    KEPT_LISTENERS.store(s.process_pool(), &bytes);
}

/// httpd children do not serve the daemon sockets: close the inherited listeners.
pub(crate) fn child_init_close() {
    if let Some(g) = generation() {
        for grp in &g.groups {
            sys::close_fd(grp.listener);
        }
    }
}

fn spawn(
    pconf: Pool,
    s: Server,
    group: usize,
    process: usize,
    quick_deaths: u32,
    backoff: Duration,
) {
    let Some(gen_) = generation() else { return };
    let Some(grp) = gen_.groups.get(group).cloned() else {
        return;
    };
    let child = match process::fork(pconf) {
        Ok(Forked::Child(in_child)) => {
            // Nothing may unwind from here into the httpd code that forked this process.
            daemon::guard::forked_entry(&crate::httpd::base::main_log(), &grp.spec.name, || {
                start_forked(in_child, &gen_, &grp, (group, process), s, backoff)
            })
        }
        Ok(Forked::Parent(child)) => child,
        Err(rv) => {
            s.log(
                APLOG_ERR,
                &format!(
                    "{}: daemon group '{}': fork failed (apr status {rv})",
                    Code::DaemonStart.as_str(),
                    grp.spec.name
                ),
            );
            return;
        }
    };
    let pid = child.pid();
    if let Some(b) = crate::board::installed() {
        b.spawned(group, process, pid as u32, sys::unix_now());
    }
    LIVE.lock()
        .unwrap_or_else(|p| p.into_inner())
        .push((pid, group));
    let slot = Slot {
        pconf,
        server: s,
        group,
        process,
        pid: std::cell::Cell::new(pid),
        started: Instant::now(),
        quick_deaths,
    };
    child.watch(move |oc, reason, status| maintenance(&slot, oc, reason, status));
}

/// The body of a freshly forked daemon process: what it inherits, then the daemon's run.
fn start_forked(
    in_child: InChild,
    gen_: &Generation,
    grp: &Group,
    slot: (usize, usize),
    s: Server,
    backoff: Duration,
) {
    let g = global();
    let (uid, gid) = httpd_identity();
    let others: Vec<RawFd> = gen_
        .groups
        .iter()
        .filter(|x| x.socket != grp.socket)
        .map(|x| x.listener)
        .collect();
    // The listener was created by this parent for this group (kept as a bare descriptor) and
    // is owned by no other object in the new process.
    let listener = in_child.adopt_listener(grp.listener);
    daemon::run(Launch {
        spec: grp.spec.clone(),
        global: GlobalConfig::clone(&g),
        listener,
        other_listeners: others,
        secret: gen_.secret,
        generation: gen_.number,
        slot,
        previous: gen_.previous,
        parent: sys::pids().1,
        httpd_uid: uid,
        httpd_gid: gid,
        backoff,
        apache_timeout: s.timeout(),
        log: crate::httpd::base::main_log(),
        vhost_log: crate::httpd::base::vhost_log,
        close_httpd_listeners: process::close_listeners,
        init_python: python::initialize,
    });
}

/// A daemon process's other-child callback: it died, httpd restarts or stops, or the
/// registration goes away with its pool.
fn maintenance(slot: &Slot, oc: &OtherChild, reason: Reason, status: c_int) {
    let name = generation()
        .and_then(|g| g.groups.get(slot.group).map(|x| x.spec.name.clone()))
        .unwrap_or_default();
    match reason {
        Reason::Death | Reason::Lost => {
            let pid = slot.pid.replace(0);
            forget(pid);
            // Re-enters this callback with Unregister (pid is 0 by then: nothing to stop).
            oc.unregister();
            if !mpm_running() {
                return;
            }
            // A daemon that failed while starting (its fatal exit, or death within 2 s)
            // counts as a failure; after the first, restarts wait 1, 2, 4 ... 60 s, so a
            // broken configuration cannot become a fork storm. Any other death (a crash or
            // kill after it served) is repaired at once.
            let failed = status == daemon::EXIT_STARTUP_FAILED
                || slot.started.elapsed() < Duration::from_secs(2);
            let deaths = if failed { slot.quick_deaths + 1 } else { 0 };
            if let Some(b) = crate::board::installed() {
                b.exited(
                    slot.group,
                    slot.process,
                    status == daemon::EXIT_STARTUP_FAILED,
                );
            }
            let backoff = if deaths <= 1 {
                Duration::ZERO
            } else {
                Duration::from_secs((1u64 << (deaths - 2).min(6)).min(60))
            };
            slot.server.log(
                if status == 0 {
                    APLOG_INFO
                } else {
                    APLOG_WARNING
                },
                &format!(
                    "{}: daemon process {pid} of group '{name}' exited ({}); starting a new one{}",
                    Code::DaemonExited.as_str(),
                    describe(status),
                    if backoff.is_zero() {
                        String::new()
                    } else {
                        format!(" in {} s", backoff.as_secs())
                    }
                ),
            );
            spawn(
                slot.pconf,
                slot.server,
                slot.group,
                slot.process,
                deaths,
                backoff,
            );
        }
        Reason::Restart => {
            *STOPPING.lock().unwrap_or_else(|p| p.into_inner()) = true;
            // Re-enters this callback with Unregister, which stops the process.
            oc.unregister();
        }
        Reason::Unregister if slot.pid.get() > 0 => {
            let pid = slot.pid.replace(0);
            if !is_live(pid) {
                return; // already stopped and reaped by stop_all
            }
            forget(pid);
            let grace = generation()
                .and_then(|g| g.groups.get(slot.group).map(|x| x.spec.shutdown_timeout))
                .unwrap_or(Duration::from_secs(5));
            stop_process(pid, grace);
        }
        _ => {}
    }
}

/// APR hands the callback an exit code or a signal number, without saying which.
fn describe(status: c_int) -> String {
    if status == daemon::EXIT_STARTUP_FAILED {
        "it could not start; see the lines before".into()
    } else {
        format!("exit status or signal {status}")
    }
}

/// SIGTERM, wait up to `grace` (+1 s), then SIGKILL; always reaped, so httpd never meets it as
/// a "long lost child".
fn stop_process(pid: i32, grace: Duration) {
    sys::kill(pid, libc::SIGTERM);
    if !sys::reap(pid, grace + Duration::from_secs(1)) {
        sys::kill(pid, libc::SIGKILL);
        sys::reap(pid, Duration::from_secs(2));
    }
}
