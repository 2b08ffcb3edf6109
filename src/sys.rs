//! Thin safe wrappers over the few POSIX calls daemon mode needs (signals, privilege drop,
//! parent-death signal, resource limits, UNIX listening sockets, reaping, passing descriptors with
//! `SCM_RIGHTS`, user and group lookups, the board's shared memory, resource usage, heap
//! trimming). Part of the
//! FFI layer: every `unsafe` block here is documented. Used by the httpd parent (sockets, reaping,
//! start-up checks), the httpd children (receiving descriptors; `current_identity` to explain a
//! script they cannot read), the daemon processes (everything else), and rwsgi-express, which
//! compiles this file in (user lookups, signals, and the calls it alone uses to supervise Apache,
//! marked `allow(dead_code)` since the module does not use them).

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixListener;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::{Duration, Instant};

fn check(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

fn cstr(s: &str) -> io::Result<CString> {
    CString::new(s).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in name"))
}

/// A file's modification time in µs since the epoch (as httpd's `apr_time_t`), if it can be
/// read.
pub fn mtime_us(path: &str) -> Option<i64> {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .and_then(|d| i64::try_from(d.as_micros()).ok())
}

/// Puts every catchable signal back to its default action and unblocks all signals (a daemon
/// forked from the httpd parent inherits the MPM's handlers and mask), except SIGPIPE, which
/// is ignored as in httpd and in Python: a write to a connection whose httpd child went away
/// (the client stopped reading, response-socket-timeout) must fail with EPIPE, not kill the
/// process.
pub fn reset_signals() {
    for sig in 1..32 {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        let action = if sig == libc::SIGPIPE {
            libc::SIG_IGN
        } else {
            libc::SIG_DFL
        };
        // SAFETY: installing SIG_DFL or SIG_IGN for a valid signal number has no memory
        // effects.
        unsafe { libc::signal(sig, action) };
    }
    // SAFETY: an empty set, initialised by sigemptyset, passed by pointer to sigprocmask.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
    }
}

/// A signal set holding `signals`.
pub fn sigset(signals: &[libc::c_int]) -> libc::sigset_t {
    // SAFETY: sigemptyset/sigaddset initialise and fill the zeroed set.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for &s in signals {
            libc::sigaddset(&mut set, s);
        }
        set
    }
}

/// Blocks `signals` in the calling thread (and threads it starts later), so `wait_signal` can
/// take them synchronously.
pub fn block_signals(signals: &[libc::c_int]) {
    let set = sigset(signals);
    // SAFETY: a valid set; the old mask is not needed.
    unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
}

/// Waits for one of `signals` (which must be blocked) and returns it.
pub fn wait_signal(signals: &[libc::c_int]) -> libc::c_int {
    let set = sigset(signals);
    let mut sig: libc::c_int = 0;
    loop {
        // SAFETY: `set` is valid and `sig` is a writable int.
        if unsafe { libc::sigwait(&set, &mut sig) } == 0 {
            return sig;
        }
    }
}

/// Waits up to `timeout` for one of `signals` (which must be blocked); `None` on timeout.
#[allow(dead_code, reason = "used by rwsgi-express only")]
pub fn wait_signal_for(signals: &[libc::c_int], timeout: Duration) -> Option<libc::c_int> {
    let set = sigset(signals);
    let ts = libc::timespec {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: sigtimedwait reads the set and the timespec and writes nothing else (the info
    // pointer may be NULL).
    let sig = unsafe { libc::sigtimedwait(&set, std::ptr::null_mut(), &ts) };
    (sig > 0).then_some(sig)
}

/// A user from the password database.
#[derive(Clone, Debug)]
pub struct User {
    pub uid: u32,
    pub gid: u32,
    pub name: String,
    pub home: String,
}

/// Copies a password-database entry (`NULL`: not found, described by `what`).
///
/// # Safety
/// `pw` must be NULL or point to a valid `passwd` from getpwnam/getpwuid, not yet overwritten
/// by another such call (single-threaded use).
unsafe fn user_from(pw: *const libc::passwd, what: String) -> io::Result<User> {
    if pw.is_null() {
        return Err(io::Error::new(io::ErrorKind::NotFound, what));
    }
    // SAFETY: per the contract; the strings are NUL-terminated C strings of the entry.
    unsafe {
        Ok(User {
            uid: (*pw).pw_uid,
            gid: (*pw).pw_gid,
            name: CStr::from_ptr((*pw).pw_name).to_string_lossy().into_owned(),
            home: CStr::from_ptr((*pw).pw_dir).to_string_lossy().into_owned(),
        })
    }
}

/// Looks a user up by name (in the single-threaded parent, or a daemon before its threads).
pub fn user_by_name(name: &str) -> io::Result<User> {
    let c = cstr(name)?;
    // SAFETY: getpwnam returns NULL or static storage, read at once by user_from.
    unsafe {
        user_from(
            libc::getpwnam(c.as_ptr()),
            format!("no user named '{name}'"),
        )
    }
}

/// Looks a user up by id (same conditions as `user_by_name`).
pub fn user_by_id(uid: u32) -> io::Result<User> {
    // SAFETY: as in `user_by_name`.
    unsafe { user_from(libc::getpwuid(uid), format!("no user with uid {uid}")) }
}

/// Looks a group id up by name.
pub fn group_by_name(name: &str) -> io::Result<u32> {
    let c = cstr(name)?;
    // SAFETY: getgrnam returns NULL or static storage, read at once (single threaded here).
    unsafe {
        let gr = libc::getgrnam(c.as_ptr());
        if gr.is_null() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("no group named '{name}'"),
            ));
        }
        Ok((*gr).gr_gid)
    }
}

/// The groups of user `name` whose primary group is `gid` (what `initgroups()` would set).
pub fn groups_of(name: &str, gid: u32) -> Vec<u32> {
    let Ok(c) = cstr(name) else {
        return vec![gid];
    };
    let mut n: libc::c_int = 64;
    for _ in 0..4 {
        let mut buf = vec![0 as libc::gid_t; n as usize];
        let mut count = n;
        // SAFETY: `buf` holds `count` gids; getgrouplist writes at most that many and sets
        // `count` to the number needed when it returns -1.
        let rc = unsafe { libc::getgrouplist(c.as_ptr(), gid, buf.as_mut_ptr(), &mut count) };
        if rc >= 0 {
            buf.truncate(count.max(0) as usize);
            return buf;
        }
        n = count.max(n * 2);
    }
    vec![gid]
}

/// A user's name by id, thread-safe (`getpwuid_r`); `#uid` if unknown.
pub fn user_name(uid: u32) -> String {
    let mut buf = vec![0 as libc::c_char; 4096];
    // SAFETY: an all-zero passwd is a valid value to be overwritten.
    let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
    let mut out: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer refers to live local storage of the stated size; on success `out`
    // points to `pw`, whose strings live in `buf`.
    let rc = unsafe { libc::getpwuid_r(uid, &mut pw, buf.as_mut_ptr(), buf.len(), &mut out) };
    if rc != 0 || out.is_null() {
        return format!("#{uid}");
    }
    // SAFETY: pw_name is a NUL-terminated string inside `buf`.
    unsafe { CStr::from_ptr(pw.pw_name) }
        .to_string_lossy()
        .into_owned()
}

/// The identity this process has now (effective uid/gid and supplementary groups).
pub fn current_identity() -> crate::diag::Identity {
    // SAFETY: geteuid/getegid cannot fail; getgroups(0, NULL) returns the count, then fills a
    // buffer of that size.
    let (uid, gid, groups) = unsafe {
        let n = libc::getgroups(0, std::ptr::null_mut()).max(0);
        let mut g = vec![0 as libc::gid_t; n as usize];
        let got = libc::getgroups(n, g.as_mut_ptr()).max(0);
        g.truncate(got as usize);
        (libc::geteuid(), libc::getegid(), g)
    };
    crate::diag::Identity {
        name: user_name(uid),
        uid,
        gid,
        groups,
    }
}

/// The identity user `name` (`uid`) gets with primary group `gid` after `initgroups()`.
pub fn user_identity(name: String, uid: u32, gid: u32) -> crate::diag::Identity {
    crate::diag::Identity {
        groups: groups_of(&name, gid),
        name,
        uid,
        gid,
    }
}

/// The effective user id.
pub fn euid() -> u32 {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() }
}

/// Drops root privileges for good: group, supplementary groups, then user. Every step is
/// checked, and the result verified (CVE-2014-0240, CVE-2014-8583: never carry on half-dropped).
pub fn drop_privileges(
    uid: u32,
    gid: u32,
    supplementary: Option<&[u32]>,
    user_name: &str,
) -> io::Result<()> {
    // SAFETY: plain system calls with integer arguments / a valid C string / a valid array.
    unsafe {
        check(libc::setgid(gid))?;
        match supplementary {
            Some(groups) => {
                check(libc::setgroups(groups.len(), groups.as_ptr()))?;
            }
            None => {
                let name = cstr(user_name)?;
                check(libc::initgroups(name.as_ptr(), gid))?;
            }
        }
        check(libc::setuid(uid))?;
        if libc::getuid() != uid || libc::geteuid() != uid || libc::getgid() != gid {
            return Err(io::Error::other("privileges were not dropped completely"));
        }
        if uid != 0 && libc::setuid(0) == 0 {
            return Err(io::Error::other(
                "could regain root after dropping privileges",
            ));
        }
    }
    Ok(())
}

/// Confines the process to `dir` (`chroot`, then `chdir("/")`); needs root.
pub fn chroot(dir: &str) -> io::Result<()> {
    let c = cstr(dir)?;
    // SAFETY: chroot and chdir with valid NUL-terminated paths.
    unsafe {
        check(libc::chroot(c.as_ptr()))?;
        check(libc::chdir(c"/".as_ptr()))?;
    }
    Ok(())
}

/// Asks the kernel to send SIGTERM when the parent dies, then checks the parent is still
/// `parent` (it may have died before the request). Must run after the privilege drop, which
/// clears the setting.
pub fn die_with_parent(parent: u32) -> io::Result<()> {
    // SAFETY: prctl with PR_SET_PDEATHSIG and a signal number; getppid cannot fail.
    unsafe {
        check(libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGTERM as libc::c_ulong,
            0,
            0,
            0,
        ))?;
        if libc::getppid() as u32 != parent {
            return Err(io::Error::other("the httpd parent is gone"));
        }
    }
    Ok(())
}

/// Prepares the process `cmd` spawns: an empty signal mask (this process blocks the signals
/// it waits for, and a child would inherit that), and SIGTERM (Apache's stop signal) if this
/// process dies, even by SIGKILL.
#[allow(dead_code, reason = "used by rwsgi-express only")]
pub fn prepare_dependent_child(cmd: &mut Command) {
    let parent = pids().0 as libc::pid_t;
    // SAFETY: the closure runs in the forked child before exec and only makes the
    // async-signal-safe calls sigemptyset, sigprocmask, prctl and getppid, on a local set, and
    // builds its errors from errno values (no allocation).
    unsafe {
        cmd.pre_exec(move || {
            let mut none: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut none);
            if libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut()) == -1 {
                return Err(io::Error::last_os_error());
            }
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGTERM as libc::c_ulong,
                0,
                0,
                0,
            ) == -1
            {
                return Err(io::Error::last_os_error());
            }
            // This process exited while the child was starting. No allocation here (a forked
            // child of a threaded process): a plain errno, not a message.
            if libc::getppid() != parent {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        })
    };
}

/// Makes this process the reaper of its orphaned descendants (rwsgi-express: nothing Apache
/// started can outlive it unnoticed).
#[allow(dead_code, reason = "used by rwsgi-express only")]
pub fn become_subreaper() -> io::Result<()> {
    // SAFETY: prctl with integer arguments only.
    check(unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1 as libc::c_ulong, 0, 0, 0) })?;
    Ok(())
}

/// Sets the process name shown by `ps -o comm` and `top` (at most 15 bytes).
pub fn set_process_name(name: &str) {
    if let Ok(c) = cstr(&name.chars().take(15).collect::<String>()) {
        // SAFETY: PR_SET_NAME copies up to 16 bytes from a valid C string.
        unsafe { libc::prctl(libc::PR_SET_NAME, c.as_ptr() as libc::c_ulong, 0, 0, 0) };
    }
}

/// The resource limits daemon mode sets.
pub enum Limit {
    Cpu,
    Data,
    AddressSpace,
}

/// Sets a soft and hard resource limit.
pub fn set_limit(which: Limit, soft: u64, hard: u64) -> io::Result<()> {
    let res = match which {
        Limit::Cpu => libc::RLIMIT_CPU,
        Limit::Data => libc::RLIMIT_DATA,
        Limit::AddressSpace => libc::RLIMIT_AS,
    };
    let lim = libc::rlimit {
        rlim_cur: soft as libc::rlim_t,
        rlim_max: hard as libc::rlim_t,
    };
    // SAFETY: a valid resource id and a valid struct.
    check(unsafe { libc::setrlimit(res, &lim) })?;
    Ok(())
}

/// Sets the process's scheduling priority (nice value).
pub fn set_priority(prio: i32) -> io::Result<()> {
    // SAFETY: plain system call.
    check(unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, prio) })?;
    Ok(())
}

/// Sets the file mode creation mask.
pub fn set_umask(mask: u32) {
    // SAFETY: plain system call.
    unsafe { libc::umask(mask as libc::mode_t) };
}

/// Creates a listening UNIX socket at `path` (replacing a stale one) with mode 0600, owned by
/// `owner` (uid, gid) when given. Returns the listening descriptor.
pub fn unix_listen(path: &str, backlog: u32, owner: Option<(u32, u32)>) -> io::Result<OwnedFd> {
    let _ = std::fs::remove_file(path);
    // Create it private from the first instant: no window in which others may connect.
    // SAFETY: umask is process-wide but the parent is single threaded here.
    let old = unsafe { libc::umask(0o077) };
    let bound = UnixListener::bind(path);
    // SAFETY: as above, restoring the previous mask.
    unsafe { libc::umask(old) };
    let listener = bound?;
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::chown(path, Some(uid), Some(gid))?;
    }
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    let fd: OwnedFd = listener.into();
    // Raise the backlog from std's default to the configured one.
    // SAFETY: listen on a valid, bound socket descriptor.
    check(unsafe {
        libc::listen(
            std::os::fd::AsRawFd::as_raw_fd(&fd),
            backlog.min(65535) as libc::c_int,
        )
    })?;
    Ok(fd)
}

/// `SO_SNDBUF` / `SO_RCVBUF` of a socket (0: leave it); the kernel doubles what it is given.
/// Connections a listening socket accepts inherit its sizes.
pub fn set_socket_buffers(fd: RawFd, send: u32, receive: u32) -> io::Result<()> {
    for (opt, size) in [(libc::SO_SNDBUF, send), (libc::SO_RCVBUF, receive)] {
        if size == 0 {
            continue;
        }
        let v = libc::c_int::try_from(size).unwrap_or(libc::c_int::MAX);
        // SAFETY: setsockopt reads one int from the pointer for these options.
        check(unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                opt,
                (&raw const v).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        })?;
    }
    Ok(())
}

/// The filesystem path a descriptor is listening on, if it is a listening UNIX socket.
pub fn listening_unix_path(fd: RawFd) -> Option<String> {
    // SAFETY: getsockopt/getsockname write at most the given lengths into valid buffers; an
    // invalid or foreign fd just makes them fail.
    unsafe {
        let mut accepting: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        let rc = libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ACCEPTCONN,
            (&raw mut accepting).cast(),
            &mut len,
        );
        if rc != 0 || accepting == 0 {
            return None;
        }
        let mut addr: libc::sockaddr_un = std::mem::zeroed();
        let mut alen = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
        if libc::getsockname(fd, (&raw mut addr).cast(), &mut alen) != 0
            || addr.sun_family != libc::AF_UNIX as libc::sa_family_t
        {
            return None;
        }
        let path: Vec<u8> = addr
            .sun_path
            .iter()
            .take_while(|&&c| c != 0)
            .map(|&c| c as u8)
            .collect();
        String::from_utf8(path).ok()
    }
}

/// Re-applies a listening socket's backlog, owner and mode (when it is reused by a new
/// configuration generation).
pub fn refresh_listener(
    fd: RawFd,
    path: &str,
    backlog: u32,
    owner: Option<(u32, u32)>,
) -> io::Result<()> {
    // SAFETY: listen on a descriptor checked to be a listening socket by the caller.
    check(unsafe { libc::listen(fd, backlog.min(65535) as libc::c_int) })?;
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::chown(path, Some(uid), Some(gid))?;
    }
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
}

/// Waits until `fd` is readable (for a listener: a connection is queued) or `timeout` passes.
pub fn wait_readable(fd: RawFd, timeout: Duration) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd; an interrupted poll just reports "not readable".
    let rc = unsafe {
        libc::poll(
            &mut p,
            1,
            timeout.as_millis().min(i32::MAX as u128) as libc::c_int,
        )
    };
    rc > 0 && p.revents & libc::POLLIN != 0
}

/// An epoll instance whose registrations are one-shot: an event for a descriptor is delivered
/// to one waiting thread, and the descriptor reports nothing more until it is re-armed. The
/// daemon's workers wait on it together (the kernel wakes one waiter per event), so a request
/// on a kept connection wakes exactly the worker that will serve it.
pub struct OneShotPoll {
    fd: OwnedFd,
}

impl OneShotPoll {
    pub fn new() -> io::Result<Self> {
        // SAFETY: epoll_create1 has no pointer arguments; the result is checked.
        let fd = check(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
        // SAFETY: a descriptor just created and owned by nothing else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(OneShotPoll { fd })
    }

    fn ctl(&self, op: libc::c_int, fd: RawFd, token: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event {
            events: (libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLONESHOT) as u32,
            u64: token,
        };
        // SAFETY: a valid epoll descriptor and event structure; errors are returned.
        check(unsafe {
            libc::epoll_ctl(std::os::fd::AsRawFd::as_raw_fd(&self.fd), op, fd, &mut ev)
        })
        .map(|_| ())
    }

    /// Watches `fd` for one readiness event, reported with `token`.
    pub fn add(&self, fd: RawFd, token: u64) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_ADD, fd, token)
    }

    /// Watches an added `fd` for its next readiness event.
    pub fn rearm(&self, fd: RawFd, token: u64) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_MOD, fd, token)
    }

    /// Stops watching `fd` (before it is closed).
    pub fn remove(&self, fd: RawFd) {
        let _ = self.ctl(libc::EPOLL_CTL_DEL, fd, 0);
    }

    /// Waits up to `timeout` for one event; its token, or `None` (timeout or signal).
    pub fn wait(&self, timeout: Duration) -> Option<u64> {
        let mut ev = libc::epoll_event { events: 0, u64: 0 };
        // SAFETY: room for exactly one event is passed; the count is checked.
        let n = unsafe {
            libc::epoll_wait(
                std::os::fd::AsRawFd::as_raw_fd(&self.fd),
                &mut ev,
                1,
                timeout.as_millis().min(i32::MAX as u128) as libc::c_int,
            )
        };
        (n == 1).then_some(ev.u64)
    }
}

/// An eventfd: a counter another thread bumps (`notify`) to wake whoever polls it.
pub struct EventFd {
    fd: OwnedFd,
}

impl EventFd {
    pub fn new() -> io::Result<Self> {
        // SAFETY: eventfd has no pointer arguments; the result is checked.
        let fd = check(unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) })?;
        // SAFETY: a descriptor just created and owned by nothing else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(EventFd { fd })
    }

    pub fn fd(&self) -> RawFd {
        std::os::fd::AsRawFd::as_raw_fd(&self.fd)
    }

    /// Makes the descriptor readable.
    pub fn notify(&self) {
        let one: u64 = 1;
        // SAFETY: writing 8 bytes from a live u64 to our eventfd.
        unsafe { libc::write(self.fd(), (&one as *const u64).cast(), 8) };
    }

    /// Makes it unreadable again (until the next `notify`).
    pub fn clear(&self) {
        let mut v: u64 = 0;
        // SAFETY: reading 8 bytes into a live u64 from our (non-blocking) eventfd.
        unsafe { libc::read(self.fd(), (&mut v as *mut u64).cast(), 8) };
    }
}

/// Takes ownership of an inherited listening socket.
///
/// # Safety
/// `fd` must be an open listening UNIX socket not owned by anything else in this process.
pub unsafe fn listener_from_fd(fd: RawFd) -> UnixListener {
    // SAFETY: per the contract.
    unsafe { UnixListener::from_raw_fd(fd) }
}

/// Closes a descriptor this process does not need (e.g. another group's listener).
pub fn close_fd(fd: RawFd) {
    // SAFETY: closing an fd we own; errors are irrelevant.
    unsafe { libc::close(fd) };
}

/// Sends a signal to a process.
pub fn kill(pid: i32, sig: libc::c_int) -> bool {
    // SAFETY: plain system call.
    pid > 0 && unsafe { libc::kill(pid, sig) } == 0
}

/// Sends a signal to every process of the process group `pgid` (one this process created; never
/// group 0, this process's own, or 1).
#[allow(dead_code, reason = "used by rwsgi-express only")]
pub fn kill_group(pgid: i32, sig: libc::c_int) -> bool {
    // SAFETY: plain system call.
    pgid > 1 && unsafe { libc::kill(-pgid, sig) } == 0
}

/// Reaps `pid` if it has exited, waiting at most `timeout`. Returns true once reaped (or gone).
pub fn reap(pid: i32, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        let mut status = 0;
        // SAFETY: waitpid on our own child with a valid status pointer.
        let rc = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if rc == pid
            || (rc == -1 && io::Error::last_os_error().raw_os_error() == Some(libc::ECHILD))
        {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Reaps every child that has already exited, without waiting.
#[allow(dead_code, reason = "used by rwsgi-express only")]
pub fn reap_exited() {
    loop {
        let mut status = 0;
        // SAFETY: waitpid with WNOHANG and a valid status pointer.
        if unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) } <= 0 {
            return;
        }
    }
}

/// Ends the process at once, without running atexit handlers or destructors (a forked daemon
/// must not run the httpd parent's cleanups).
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit never returns and touches no Rust state.
    unsafe { libc::_exit(code) }
}

/// This process's id and its parent's.
pub fn pids() -> (u32, u32) {
    // SAFETY: getpid/getppid cannot fail.
    unsafe { (libc::getpid() as u32, libc::getppid() as u32) }
}

/// This process's CPU time (user, system, in seconds) and peak resident size (bytes).
pub fn resource_usage() -> (f64, f64, u64) {
    // SAFETY: an all-zero rusage is a valid value for getrusage to overwrite.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: ru is a valid, writable rusage; RUSAGE_SELF cannot fail with it.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } != 0 {
        return (0.0, 0.0, 0);
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    let max_rss = u64::try_from(ru.ru_maxrss)
        .unwrap_or(0)
        .saturating_mul(1024);
    (secs(ru.ru_utime), secs(ru.ru_stime), max_rss)
}

/// The calling thread's CPU time so far (user, system), in microseconds.
pub fn thread_cpu_us() -> (u64, u64) {
    // SAFETY: an all-zero rusage is a valid value for getrusage to overwrite.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: ru is a valid, writable rusage; RUSAGE_THREAD is supported on Linux >= 2.6.26.
    if unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) } != 0 {
        return (0, 0);
    }
    let us = |t: libc::timeval| {
        u64::try_from(t.tv_sec)
            .unwrap_or(0)
            .saturating_mul(1_000_000)
            .saturating_add(u64::try_from(t.tv_usec).unwrap_or(0))
    };
    (us(ru.ru_utime), us(ru.ru_stime))
}

/// This process's resident size now (bytes), from /proc/self/statm.
pub fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages.saturating_mul(u64::try_from(page).ok()?))
}

/// Caps the number of glibc malloc arenas this process creates (`M_ARENA_MAX`), before its
/// threads start. glibc gives each thread its own arena up to 8 per core, and `malloc_trim`
/// cannot shrink the top of a thread arena: after a large body each arena kept about its
/// size resident (15 worker threads: 15 MiB). Returns whether glibc took the setting.
#[allow(dead_code)] // rwsgi-express compiles this file in and never calls it
pub fn limit_heap_arenas(n: u32) -> bool {
    let n = libc::c_int::try_from(n).unwrap_or(libc::c_int::MAX);
    // SAFETY: mallopt has no preconditions; M_ARENA_MAX only bounds arenas created later.
    unsafe { libc::mallopt(libc::M_ARENA_MAX, n) == 1 }
}

/// Gives the heap's free pages back to the system (glibc's `malloc_trim(0)`, every arena): what
/// large request and response bodies used stays in glibc's arenas after they are freed
/// (their size raises glibc's mmap threshold, so later ones come from the arenas too).
/// Returns whether any memory was released.
#[allow(dead_code)] // rwsgi-express compiles this file in and has no heap to trim
pub fn trim_heap() -> bool {
    // SAFETY: malloc_trim has no preconditions; it takes each arena's lock itself.
    unsafe { libc::malloc_trim(0) == 1 }
}

/// Zeroed memory shared with every process forked after it is made (an anonymous
/// `MAP_SHARED` mapping), seen as atomic 64-bit words; unmapped (in this process) when dropped.
pub struct SharedWords {
    ptr: *mut std::sync::atomic::AtomicU64,
    len: usize,
}

// SAFETY: the words are atomics and the mapping lives until drop; sharing the handle between
// threads only shares atomic access to them.
unsafe impl Send for SharedWords {}
// SAFETY: as above: every access goes through `&AtomicU64`.
unsafe impl Sync for SharedWords {}

impl SharedWords {
    pub fn new(len: usize) -> io::Result<SharedWords> {
        let bytes = len
            .max(1)
            .checked_mul(8)
            .ok_or(io::ErrorKind::InvalidInput)?;
        // SAFETY: a fresh anonymous mapping with no address hint; the kernel zero-fills it.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(SharedWords {
            ptr: p.cast(),
            len: len.max(1),
        })
    }
}

impl std::ops::Deref for SharedWords {
    type Target = [std::sync::atomic::AtomicU64];
    fn deref(&self) -> &Self::Target {
        // SAFETY: `ptr` is a live, page-aligned mapping of `len` zero-initialised u64 words
        // (a valid AtomicU64 bit pattern) until drop; only atomic access is handed out.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

impl Drop for SharedWords {
    fn drop(&mut self) {
        // SAFETY: the mapping was made in `new` with this length and no reference to it
        // outlives `self` (the slice borrows it).
        unsafe { libc::munmap(self.ptr.cast(), self.len * 8) };
    }
}

/// Whether process `pid` exists (a process of another user counts: EPERM).
pub fn process_exists(pid: i32) -> bool {
    if pid <= 0 {
        return false;
    }
    // SAFETY: signal 0 only checks for existence and permission.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Milliseconds since the epoch, now.
pub fn unix_now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Seconds since the epoch, now.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// 16 random bytes from the kernel.
pub fn random16() -> io::Result<[u8; 16]> {
    use std::io::Read;
    let mut b = [0u8; 16];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut b)?;
    Ok(b)
}

/// Sets an environment variable. Only for a process that has not started threads yet (a
/// freshly forked daemon), since the environment is not thread-safe.
pub fn set_env_single_threaded(key: &str, value: &str) {
    // SAFETY: the caller guarantees no other thread exists that could read the environment.
    unsafe { std::env::set_var(key, value) };
}

/// What `wait_peer_or_hangup` saw.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Watched {
    /// `peer` has something to read (or was closed).
    Readable,
    /// `watched` hung up (its peer closed or shut down its side).
    HungUp,
    /// Neither, within the timeout.
    TimedOut,
}

/// Waits until `peer` is readable or `watched` hangs up (`POLLRDHUP`: a client socket whose
/// client closed it; its plain readability, a pipelined request, is not watched), at most
/// `timeout`. A signal ends the wait early as `TimedOut`'s caller would retry.
pub fn wait_peer_or_hangup(peer: RawFd, watched: RawFd, timeout: Duration) -> Watched {
    let mut fds = [
        libc::pollfd {
            fd: peer,
            events: libc::POLLIN,
            revents: 0,
        },
        libc::pollfd {
            fd: watched,
            events: libc::POLLRDHUP,
            revents: 0,
        },
    ];
    let ms = timeout.as_millis().min(i32::MAX as u128) as libc::c_int;
    // SAFETY: `fds` is a live array of two pollfd structs.
    let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, ms) };
    if n <= 0 {
        return Watched::TimedOut;
    }
    if fds[0].revents != 0 {
        return Watched::Readable;
    }
    if fds[1].revents & (libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR) != 0 {
        return Watched::HungUp;
    }
    Watched::TimedOut
}

/// Waits up to `timeout` until `a` is readable, or writable when `a_write`, or `b` (when
/// given) is readable (or either hung up); whether anything is. A signal or the timeout gives
/// false.
pub fn wait_either(a: RawFd, a_write: bool, b: Option<RawFd>, timeout: Duration) -> bool {
    let mut fds = [
        libc::pollfd {
            fd: a,
            events: libc::POLLIN | if a_write { libc::POLLOUT } else { 0 },
            revents: 0,
        },
        libc::pollfd {
            fd: b.unwrap_or(-1),
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    let ms = timeout.as_millis().min(i32::MAX as u128) as libc::c_int;
    // SAFETY: `fds` is a live array of two pollfd structs (a negative fd is ignored).
    let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, ms) };
    n > 0
}

/// Most descriptors one `recv_with_fds` accepts; more (never sent by our peer) is an error.
const MAX_RECV_FDS: usize = 4;

/// Sends all of `bytes` on the UNIX stream socket `sock`, with `fd` attached (`SCM_RIGHTS`) to
/// the first byte. The receiver gets its own descriptor for the same open file.
pub fn send_with_fd(sock: RawFd, bytes: &[u8], fd: RawFd) -> io::Result<()> {
    if bytes.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "a descriptor must travel with at least one byte",
        ));
    }
    let fd_len = std::mem::size_of::<libc::c_int>() as libc::c_uint;
    // SAFETY: CMSG_SPACE is a pure size computation.
    let space = unsafe { libc::CMSG_SPACE(fd_len) } as usize;
    // u64 elements keep the control buffer aligned for cmsghdr.
    let mut control = vec![0u64; space.div_ceil(8)];
    let mut iov = libc::iovec {
        iov_base: bytes.as_ptr() as *mut libc::c_void,
        iov_len: bytes.len(),
    };
    // SAFETY: an all-zero msghdr is a valid empty message.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = space as _;
    // SAFETY: `msg` points at our live iovec and control buffer, which has room for one
    // cmsghdr carrying one int (CMSG_SPACE above); CMSG_FIRSTHDR is non-NULL for it.
    let sent = unsafe {
        let c = libc::CMSG_FIRSTHDR(&msg);
        (*c).cmsg_level = libc::SOL_SOCKET;
        (*c).cmsg_type = libc::SCM_RIGHTS;
        (*c).cmsg_len = libc::CMSG_LEN(fd_len) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<libc::c_int>(), fd);
        loop {
            let n = libc::sendmsg(sock, &msg, libc::MSG_NOSIGNAL);
            if n >= 0 {
                break n as usize;
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    };
    // The descriptor went with the first byte; the rest is plain data.
    let mut off = sent;
    while off < bytes.len() {
        // SAFETY: sending from a live slice of the stated length.
        let n = unsafe {
            libc::send(
                sock,
                bytes[off..].as_ptr().cast(),
                bytes.len() - off,
                libc::MSG_NOSIGNAL,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        off += n as usize;
    }
    Ok(())
}

/// Receives up to `buf.len()` bytes from the UNIX stream socket `sock` (honouring its receive
/// timeout); descriptors that arrive with them are appended to `fds` (close-on-exec).
/// `Ok(0)` is the end of the stream.
pub fn recv_with_fds(sock: RawFd, buf: &mut [u8], fds: &mut Vec<OwnedFd>) -> io::Result<usize> {
    // SAFETY: `buf` is live and writable for its length during the call.
    unsafe { recv_with_fds_raw(sock, buf.as_mut_ptr(), buf.len(), fds) }
}

/// As [`recv_with_fds`], appending at most `max` bytes to `out` (its spare capacity, reserved
/// here, is written by the kernel: nothing is zeroed first).
pub fn recv_append(
    sock: RawFd,
    out: &mut Vec<u8>,
    max: usize,
    fds: &mut Vec<OwnedFd>,
) -> io::Result<usize> {
    out.reserve(max);
    let spare = out.spare_capacity_mut();
    let len = spare.len().min(max);
    // SAFETY: the spare capacity is live and writable for `len` bytes; recvmsg initialises
    // exactly the count it returns, and only that count becomes part of the vector.
    unsafe {
        let n = recv_with_fds_raw(sock, spare.as_mut_ptr().cast(), len, fds)?;
        out.set_len(out.len() + n.min(len));
        Ok(n)
    }
}

/// Room for the ancillary data of [`MAX_RECV_FDS`] descriptors, in `u64` words (aligned as
/// `cmsghdr` needs).
const RECV_CONTROL_WORDS: usize = 8;

/// # Safety
/// `buf` must be valid for writes of `len` bytes for the duration of the call. On `Ok(n)`,
/// exactly the first `n` bytes were written.
pub unsafe fn recv_with_fds_raw(
    sock: RawFd,
    buf: *mut u8,
    len: usize,
    fds: &mut Vec<OwnedFd>,
) -> io::Result<usize> {
    let fd_len = std::mem::size_of::<libc::c_int>() as libc::c_uint;
    // SAFETY: CMSG_SPACE is a pure size computation.
    let space = unsafe { libc::CMSG_SPACE(fd_len * MAX_RECV_FDS as libc::c_uint) } as usize;
    // On the stack: this runs for every read of every connection.
    let mut control = [0u64; RECV_CONTROL_WORDS];
    assert!(
        space <= std::mem::size_of_val(&control),
        "control buffer too small"
    );
    let mut iov = libc::iovec {
        iov_base: buf.cast(),
        iov_len: len,
    };
    // SAFETY: an all-zero msghdr is a valid empty message.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = space as _;
    // SAFETY: `msg` points at the caller's writable buffer (the caller's contract) and our
    // control buffer, both live for the call.
    let n = unsafe { libc::recvmsg(sock, &mut msg, libc::MSG_CMSG_CLOEXEC) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut truncated = msg.msg_flags & libc::MSG_CTRUNC != 0;
    // SAFETY: walking the control messages the kernel wrote into `control` with the CMSG_*
    // helpers, which stay within msg_controllen; each SCM_RIGHTS payload holds
    // (cmsg_len - CMSG_LEN(0)) / sizeof(int) descriptors that are now ours.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                let count = ((*c).cmsg_len as usize - libc::CMSG_LEN(0) as usize) / fd_len as usize;
                let data = libc::CMSG_DATA(c).cast::<libc::c_int>();
                for i in 0..count {
                    let fd = std::ptr::read_unaligned(data.add(i));
                    let owned = OwnedFd::from_raw_fd(fd);
                    if fds.len() < MAX_RECV_FDS {
                        fds.push(owned);
                    } else {
                        truncated = true; // dropped: closed
                    }
                }
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    if truncated {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "more file descriptors arrived than expected",
        ));
    }
    Ok(n as usize)
}

/// Reads up to `buf.len()` bytes at `offset` of the file open on `fd`, without moving its
/// position (`pread`).
pub fn pread(fd: RawFd, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    loop {
        // SAFETY: reading into a live, writable buffer of the stated length.
        let n = unsafe {
            libc::pread(
                fd,
                buf.as_mut_ptr().cast(),
                buf.len(),
                offset as libc::off_t,
            )
        };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Sets the socket's receive low-water mark: a blocking read waits until at least `bytes` are
/// queued (or the peer closes, an error or the read timeout ends the wait, returning what is
/// there).
pub fn set_recv_low_water(fd: RawFd, bytes: usize) -> io::Result<()> {
    let v: libc::c_int = bytes.min(libc::c_int::MAX as usize) as libc::c_int;
    // SAFETY: a valid int option value of the right size; errors are returned.
    check(unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVLOWAT,
            (&v as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    })
    .map(|_| ())
}

/// The size of the regular file open on `fd`, or `None` if it is not a regular file.
pub fn regular_file_size(fd: RawFd) -> Option<u64> {
    // SAFETY: an all-zero stat is a valid out-buffer for fstat.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat writes into our live stat buffer.
    let rc = unsafe { libc::fstat(fd, &mut st) };
    (rc == 0 && st.st_mode & libc::S_IFMT == libc::S_IFREG).then_some(st.st_size as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn regular_file_size_only_for_regular_files() {
        let path = std::env::temp_dir().join(format!("rwsgi-sys-size-{}", std::process::id()));
        std::fs::write(&path, b"12345").unwrap();
        let f = std::fs::File::open(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(regular_file_size(f.as_raw_fd()), Some(5));
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        assert_eq!(regular_file_size(a.as_raw_fd()), None);
        assert_eq!(regular_file_size(-1), None);
    }

    #[test]
    fn pread_leaves_the_position_alone() {
        use std::io::{Read, Seek};
        let path = std::env::temp_dir().join(format!("rwsgi-sys-pread-{}", std::process::id()));
        std::fs::write(&path, b"0123456789").unwrap();
        let mut f = std::fs::File::open(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        let mut buf = [0u8; 4];
        assert_eq!(pread(f.as_raw_fd(), &mut buf, 6).unwrap(), 4);
        assert_eq!(&buf, b"6789");
        assert_eq!(f.stream_position().unwrap(), 0);
        let mut first = [0u8; 2];
        f.read_exact(&mut first).unwrap();
        assert_eq!(&first, b"01");
    }
}
