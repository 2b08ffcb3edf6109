//! The few system calls rwsgi-express needs beyond the module's shared `sys` wrappers: timed
//! signal waits, becoming the reaper of Apache's orphans, a parent-death signal for Apache,
//! and listing child processes. The tool's FFI layer: every `unsafe`
//! block is documented. Runs in the rwsgi-express tool.

use std::io;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::Duration;

/// Waits up to `timeout` for one of `signals` (which must be blocked); `None` on timeout.
pub fn wait_signal_for(signals: &[libc::c_int], timeout: Duration) -> Option<libc::c_int> {
    let set = crate::sys::sigset(signals);
    let ts = libc::timespec {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: sigtimedwait reads the set and the timespec and writes nothing else (the info
    // pointer may be NULL).
    let sig = unsafe { libc::sigtimedwait(&set, std::ptr::null_mut(), &ts) };
    (sig > 0).then_some(sig)
}

/// Makes this process the reaper of its orphaned descendants, so nothing Apache started can
/// outlive rwsgi-express unnoticed.
pub fn become_subreaper() -> io::Result<()> {
    // SAFETY: prctl with integer arguments only.
    let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1 as libc::c_ulong, 0, 0, 0) };
    if rc == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Prepares the process `cmd` spawns: an empty signal mask (this process blocks the signals
/// it waits for, and a child would inherit that), and SIGTERM (Apache's stop signal) if
/// rwsgi-express dies, even by SIGKILL.
pub fn prepare_child(cmd: &mut Command) {
    // SAFETY: getpid cannot fail.
    let parent = unsafe { libc::getpid() };
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
            // rwsgi-express exited while starting Apache. No allocation here (a forked child
            // of a threaded process): a plain errno, not a message.
            if libc::getppid() != parent {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        })
    };
}

/// Sends `sig` to every process of the process group `pgid`.
pub fn kill_group(pgid: i32, sig: libc::c_int) {
    if pgid > 1 {
        // SAFETY: plain system call on a process group we created.
        unsafe { libc::kill(-pgid, sig) };
    }
}

/// Live (not zombie) processes whose parent is `pid`, read from /proc.
pub fn children_of(pid: u32) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in dir.flatten() {
        let Some(child) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else {
            continue;
        };
        // "pid (comm) state ppid ...": comm may hold spaces and parentheses.
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
            continue;
        };
        let mut f = rest.split_whitespace();
        let (state, ppid) = (f.next(), f.next().and_then(|p| p.parse::<u32>().ok()));
        if ppid == Some(pid) && state != Some("Z") {
            out.push(child);
        }
    }
    out
}

/// Reaps every child that has already exited, without waiting.
pub fn reap_exited() {
    loop {
        let mut status = 0;
        // SAFETY: waitpid with WNOHANG and a valid status pointer.
        if unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) } <= 0 {
            return;
        }
    }
}
