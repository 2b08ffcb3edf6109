//! Daemon groups seen from httpd: the parent creates each group's socket (mode 0600, owned by
//! the child user), forks the daemon processes in the real configuration pass, supervises them
//! through APR's other-child mechanism (restart with backoff, never while stopping), and stops
//! them on restart and stop. httpd children close the listeners they inherit. Runs in the httpd
//! parent (spawn, supervise) and the httpd child (`child_init_close`).

use std::ffi::{c_int, c_void};
use std::os::fd::{IntoRawFd, RawFd};
use std::ptr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::config::GlobalConfig;
use crate::config::daemon::DaemonSpec;
use crate::daemon::{self, Launch};
use crate::error::Code;
use crate::httpd::ffi::*;
use crate::httpd::{global, guard, log_server, pool_box};
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
    // SAFETY: ap_unixd_config is httpd's exported, fully initialised configuration record.
    unsafe { (ap_unixd_config.user_id, ap_unixd_config.group_id) }
}

fn mpm_running() -> bool {
    let mut state: c_int = 0;
    // SAFETY: ap_mpm_query writes one int.
    unsafe { ap_mpm_query(AP_MPMQ_MPM_STATE, &mut state) };
    state == AP_MPMQ_RUNNING && !*STOPPING.lock().unwrap_or_else(|p| p.into_inner())
}

/// Supervision state of one daemon process slot.
struct Slot {
    pconf: *mut apr_pool_t,
    server: *mut server_rec,
    group: usize,
    pid: i32,
    started: Instant,
    quick_deaths: u32,
}

/// A group's socket path and its owner (uid, gid).
type SocketPlan = (String, (u32, u32));

/// Each group's socket path and owner (uid, gid), after checking that the path fits a UNIX
/// socket and that the owner can reach its directory. Run by `check_config` (so `apachectl -t`
/// reports it) and again when the sockets are created.
pub(crate) fn socket_plan(
    pconf: *mut apr_pool_t,
    g: &GlobalConfig,
) -> Result<Vec<SocketPlan>, String> {
    let (uid, gid) = httpd_identity();
    let parent = sys::pids().0;
    let prefix = match &g.socket_prefix {
        Some(p) => {
            let c = crate::httpd::cstring(p);
            // SAFETY: resolves a path against ServerRoot into pconf.
            text(unsafe { ap_server_root_relative(pconf, c.as_ptr()) })
        }
        // SAFETY: resolves a name inside DefaultRuntimeDir into pconf.
        None => text(unsafe { ap_runtime_dir_relative(pconf, c"rwsgi".as_ptr()) }),
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
pub(crate) fn start_all(
    pconf: *mut apr_pool_t,
    s: *mut server_rec,
    g: &GlobalConfig,
) -> Option<String> {
    *STOPPING.lock().unwrap_or_else(|p| p.into_inner()) = false;
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
    // SAFETY: pconf lives for this generation; the cleanup is a plain function.
    unsafe {
        apr_pool_cleanup_register(
            pconf,
            ptr::null(),
            Some(remove_sockets),
            Some(apr_pool_cleanup_null),
        )
    };
    for (gi, grp) in groups.iter().enumerate() {
        for _ in 0..grp.spec.processes {
            spawn(pconf, s, gi, 0, Duration::ZERO);
        }
    }
    // Registered after the daemons' own cleanups, so it runs first: signal every daemon at
    // once and wait for them together (not one shutdown-timeout after another).
    // SAFETY: as above.
    unsafe {
        apr_pool_cleanup_register(
            pconf,
            ptr::null(),
            Some(stop_all),
            Some(apr_pool_cleanup_null),
        )
    };
    None
}

/// Records this generation's secret and returns the previous generation's credentials. httpd
/// unloads and reloads the module on every restart, so they live in the process pool (which
/// survives restarts), not in a static. httpd children of the previous generation may still be
/// finishing keep-alive connections after a graceful restart; the new daemons accept them.
fn swap_credentials(s: *mut server_rec, secret: [u8; 16]) -> Option<([u8; 16], u32)> {
    const KEY: &std::ffi::CStr = c"mod_rwsgi.credentials";
    const LEN: usize = 20;
    // SAFETY: s->process->pool lives as long as the httpd parent; the userdata is a 20-byte
    // buffer allocated in that same pool, read and written only here (single-threaded parent).
    unsafe {
        let pool = (*(*s).process).pool;
        let mut data: *mut c_void = ptr::null_mut();
        apr_pool_userdata_get(&mut data, KEY.as_ptr(), pool);
        if data.is_null() {
            data = apr_palloc(pool, LEN);
            ptr::write_bytes(data as *mut u8, 0, LEN);
            apr_pool_userdata_set(data, KEY.as_ptr(), None, pool);
        }
        let buf = std::slice::from_raw_parts_mut(data as *mut u8, LEN);
        let mut old = [0u8; 16];
        old.copy_from_slice(&buf[..16]);
        let old_number = u32::from_be_bytes([buf[16], buf[17], buf[18], buf[19]]);
        let number = old_number.wrapping_add(1).max(1);
        buf[..16].copy_from_slice(&secret);
        buf[16..].copy_from_slice(&number.to_be_bytes());
        (old_number != 0).then_some((old, old_number))
    }
}

unsafe extern "C" fn stop_all(_d: *mut c_void) -> apr_status_t {
    guard("stop daemons", APR_SUCCESS as apr_status_t, || {
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
        APR_SUCCESS as apr_status_t
    })
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

fn close_httpd_listeners() {
    // SAFETY: ap_close_listeners closes httpd's listening sockets in this (daemon) process.
    unsafe { ap_close_listeners() }
}

fn text(p: *const std::ffi::c_char) -> String {
    if p.is_null() {
        return String::new();
    }
    // SAFETY: a NUL-terminated string returned by httpd.
    unsafe { std::ffi::CStr::from_ptr(p) }
        .to_string_lossy()
        .into_owned()
}

unsafe extern "C" fn remove_sockets(_d: *mut c_void) -> apr_status_t {
    guard("remove_sockets", APR_SUCCESS as apr_status_t, || {
        let g = GENERATION.lock().unwrap_or_else(|p| p.into_inner()).take();
        // SAFETY: a plain query of httpd's state.
        let exiting = unsafe { ap_state_query(AP_SQ_MAIN_STATE) } == AP_SQ_MS_EXITING;
        if exiting && let Some(g) = g {
            // httpd is stopping: the sockets go. On a restart they are kept for the next
            // generation (start_all), so nothing queued on them is lost.
            for grp in &g.groups {
                sys::close_fd(grp.listener);
                let _ = std::fs::remove_file(&grp.socket);
            }
        }
        APR_SUCCESS as apr_status_t
    })
}

const KEPT_KEY: &std::ffi::CStr = c"mod_rwsgi.listeners";
const KEPT_LEN: usize = 8192;

/// The listening sockets kept from the previous generation: "fd path" lines in a buffer in
/// the process pool, which (unlike this module's statics) survives restarts.
fn kept_listeners(s: *mut server_rec) -> Vec<(RawFd, String)> {
    // SAFETY: s->process->pool outlives every generation; the buffer is NUL-terminated text
    // written by keep_listeners (or absent).
    let text = unsafe {
        let mut data: *mut c_void = ptr::null_mut();
        apr_pool_userdata_get(&mut data, KEPT_KEY.as_ptr(), (*(*s).process).pool);
        if data.is_null() {
            return Vec::new();
        }
        std::ffi::CStr::from_ptr(data as *const std::ffi::c_char)
            .to_string_lossy()
            .into_owned()
    };
    text.lines()
        .filter_map(|l| {
            let (fd, path) = l.split_once(' ')?;
            Some((fd.parse().ok()?, path.to_string()))
        })
        .collect()
}

fn keep_listeners(s: *mut server_rec, groups: &[Group]) {
    let mut text = String::new();
    for g in groups {
        text.push_str(&format!("{} {}\n", g.listener, g.socket));
    }
    if text.len() >= KEPT_LEN {
        text.clear(); // too many groups to remember: the next generation makes new sockets
    }
    // SAFETY: the buffer is allocated once in the process pool (KEPT_LEN bytes) and only
    // written here, in the single-threaded parent; the text fits with its NUL.
    unsafe {
        let pool = (*(*s).process).pool;
        let mut data: *mut c_void = ptr::null_mut();
        apr_pool_userdata_get(&mut data, KEPT_KEY.as_ptr(), pool);
        if data.is_null() {
            data = apr_palloc(pool, KEPT_LEN);
            apr_pool_userdata_set(data, KEPT_KEY.as_ptr(), None, pool);
        }
        let buf = std::slice::from_raw_parts_mut(data as *mut u8, KEPT_LEN);
        buf[..text.len()].copy_from_slice(text.as_bytes());
        buf[text.len()] = 0;
    }
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
    pconf: *mut apr_pool_t,
    s: *mut server_rec,
    group: usize,
    quick_deaths: u32,
    backoff: Duration,
) {
    let Some(gen_) = generation() else { return };
    let Some(grp) = gen_.groups.get(group).cloned() else {
        return;
    };
    // SAFETY: apr_palloc returns pconf memory large enough for an apr_proc_t, zeroed below.
    let proc_ = unsafe {
        let p = apr_palloc(pconf, std::mem::size_of::<apr_proc_t>()) as *mut apr_proc_t;
        ptr::write_bytes(p, 0, 1);
        p
    };
    // SAFETY: apr_proc_fork forks this (single-threaded) parent; `proc_` is valid.
    let rv = unsafe { apr_proc_fork(proc_, pconf) };
    if rv == APR_INCHILD as apr_status_t {
        // Nothing may unwind from here into the httpd code that forked this process.
        daemon::guard::forked_entry(&crate::httpd::main_log(), &grp.spec.name, || {
            start_forked(&gen_, &grp, s, backoff)
        });
    }
    if rv != APR_INPARENT as apr_status_t {
        log_server(
            s,
            APLOG_ERR,
            &format!(
                "{}: daemon group '{}': fork failed (apr status {rv})",
                Code::DaemonStart.as_str(),
                grp.spec.name
            ),
        );
        return;
    }
    // SAFETY: the fork succeeded, so `proc_` holds the child's pid.
    let pid = unsafe { (*proc_).pid };
    LIVE.lock()
        .unwrap_or_else(|p| p.into_inner())
        .push((pid, group));
    let slot = pool_box(
        pconf,
        Slot {
            pconf,
            server: s,
            group,
            pid,
            started: Instant::now(),
            quick_deaths,
        },
    );
    // SAFETY: registers a maintenance callback for `proc_` in pconf; `slot` lives in pconf.
    unsafe {
        apr_proc_other_child_register(proc_, Some(maintenance), slot, ptr::null_mut(), pconf)
    };
}

/// The body of a freshly forked daemon process: what it inherits, then the daemon's run.
fn start_forked(gen_: &Generation, grp: &Group, s: *mut server_rec, backoff: Duration) {
    let g = global();
    let (uid, gid) = httpd_identity();
    let others: Vec<RawFd> = gen_
        .groups
        .iter()
        .filter(|x| x.socket != grp.socket)
        .map(|x| x.listener)
        .collect();
    // SAFETY: the listener was created by this parent for this group and is owned by no
    // other object in the new process.
    let listener = unsafe { sys::listener_from_fd(grp.listener) };
    // SAFETY: the server's timeout is a plain field of the live main server.
    let timeout = Duration::from_micros(unsafe { (*s).timeout }.max(0) as u64);
    daemon::run(Launch {
        spec: grp.spec.clone(),
        global: GlobalConfig::clone(&g),
        listener,
        other_listeners: others,
        secret: gen_.secret,
        generation: gen_.number,
        previous: gen_.previous,
        parent: sys::pids().1,
        httpd_uid: uid,
        httpd_gid: gid,
        backoff,
        apache_timeout: timeout,
        log: crate::httpd::main_log(),
        vhost_log: crate::httpd::vhost_log,
        close_httpd_listeners,
        init_python: python::initialize,
    });
}

/// httpd's other-child callback: a daemon died, httpd restarts or stops, or the registration
/// goes away with its pool.
unsafe extern "C" fn maintenance(reason: c_int, data: *mut c_void, status: c_int) {
    guard("daemon maintenance", (), || {
        // SAFETY: `data` is the Slot registered with this callback, alive while registered.
        let slot = unsafe { &mut *(data as *mut Slot) };
        let name = generation()
            .and_then(|g| g.groups.get(slot.group).map(|x| x.spec.name.clone()))
            .unwrap_or_default();
        match reason {
            APR_OC_REASON_DEATH | APR_OC_REASON_LOST => {
                let pid = slot.pid;
                slot.pid = 0;
                forget(pid);
                // SAFETY: unregistering the data we registered (re-enters with UNREGISTER).
                unsafe { apr_proc_other_child_unregister(data) };
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
                let backoff = if deaths <= 1 {
                    Duration::ZERO
                } else {
                    Duration::from_secs((1u64 << (deaths - 2).min(6)).min(60))
                };
                log_server(
                    slot.server,
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
                spawn(slot.pconf, slot.server, slot.group, deaths, backoff);
            }
            APR_OC_REASON_RESTART => {
                *STOPPING.lock().unwrap_or_else(|p| p.into_inner()) = true;
                // SAFETY: as above; the UNREGISTER re-entry stops the process.
                unsafe { apr_proc_other_child_unregister(data) };
            }
            APR_OC_REASON_UNREGISTER if slot.pid > 0 => {
                let pid = slot.pid;
                slot.pid = 0;
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
    })
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
