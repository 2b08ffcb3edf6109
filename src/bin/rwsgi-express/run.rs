//! Runs Apache in the foreground for start-server: spawns it in its own process group (so a
//! terminal's Ctrl-C reaches only rwsgi-express, which stops Apache in order), passes signals
//! on, and once Apache has exited makes sure nothing it started is left (processes, daemon
//! sockets, pid file). Runs in the rwsgi-express tool.

use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::sys;

/// How long Apache may take to stop after SIGTERM before its process group is killed.
const STOP_LIMIT: Duration = Duration::from_secs(60);
/// How long processes Apache left behind get between SIGTERM and SIGKILL.
const LEFTOVER_GRACE: Duration = Duration::from_secs(5);

/// Runs `httpd -f conf -DFOREGROUND` until it exits; returns rwsgi-express's exit status.
pub fn foreground(httpd: &Path, conf: &Path, server_root: &Path) -> i32 {
    let signals = [
        libc::SIGINT,
        libc::SIGTERM,
        libc::SIGHUP,
        libc::SIGUSR1,
        libc::SIGCHLD,
    ];
    // Blocked here and taken with sigtimedwait; the child gets an empty mask again.
    sys::block_signals(&signals);
    if let Err(e) = sys::become_subreaper() {
        eprintln!("rwsgi-express: warning: cannot adopt Apache's orphans: {e}");
    }
    let mut cmd = Command::new(httpd);
    cmd.arg("-f")
        .arg(conf)
        .arg("-DFOREGROUND")
        .current_dir(server_root)
        .stdin(Stdio::null())
        .process_group(0);
    sys::prepare_dependent_child(&mut cmd);
    let relays = [
        relay_if_needed(&mut cmd, Stream::Stdout),
        relay_if_needed(&mut cmd, Stream::Stderr),
    ];
    let spawned = cmd.spawn();
    drop(cmd); // our copies of the relay pipes' write ends: the relays end when Apache's do
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => {
            eprintln!("rwsgi-express: cannot run {}: {e}", httpd.display());
            return 1;
        }
    };
    let pid = child.id() as i32;
    let mut stop_sent: Option<Instant> = None;
    let status = loop {
        match sys::wait_signal_for(&signals, Duration::from_millis(500)) {
            Some(libc::SIGINT | libc::SIGTERM) => {
                if stop_sent.is_none() {
                    eprintln!("rwsgi-express: stopping Apache (pid {pid})");
                    stop_sent = Some(Instant::now());
                }
                sys::kill(pid, libc::SIGTERM);
            }
            // Restart and graceful restart, as Apache understands them.
            Some(sig @ (libc::SIGHUP | libc::SIGUSR1)) => {
                sys::kill(pid, sig);
            }
            _ => {}
        }
        match child.try_wait() {
            Ok(Some(st)) => break Some(st),
            Ok(None) => {}
            Err(e) => {
                eprintln!("rwsgi-express: cannot wait for Apache: {e}");
                break None;
            }
        }
        if stop_sent.is_some_and(|t| t.elapsed() > STOP_LIMIT) {
            eprintln!(
                "rwsgi-express: Apache did not stop within {} s; killing its process group",
                STOP_LIMIT.as_secs()
            );
            sys::kill_group(pid, libc::SIGKILL);
            break child.wait().ok();
        }
    };
    let left = stop_leftovers();
    if left > 0 {
        eprintln!("rwsgi-express: stopped {left} process(es) Apache left behind");
    }
    remove_runtime_files(server_root, pid);
    let deadline = Instant::now() + Duration::from_secs(3);
    for r in relays.into_iter().flatten() {
        while !r.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    match status {
        // Stopped on request: a clean stop, or SIGTERM before Apache had set its handlers.
        Some(st) if stop_sent.is_some() && (st.success() || st.signal() == Some(libc::SIGTERM)) => {
            0
        }
        Some(st) if st.success() => 0,
        Some(st) => {
            match (st.code(), st.signal()) {
                (Some(c), _) => eprintln!(
                    "rwsgi-express: Apache exited with status {c} (its messages are above)"
                ),
                (_, Some(s)) => eprintln!("rwsgi-express: Apache was killed by signal {s}"),
                _ => eprintln!("rwsgi-express: Apache ended ({st})"),
            }
            st.code().filter(|&c| c != 0).unwrap_or(1)
        }
        None => 1,
    }
}

#[derive(Clone, Copy)]
enum Stream {
    Stdout,
    Stderr,
}

/// Apache logs to the terminal by opening /dev/stdout and /dev/stderr, which fails when they
/// are a socket or a descriptor another user opened (say, a non-root run under a root shell's
/// redirection). Then Apache gets a pipe of ours instead, and a thread copies it through.
fn relay_if_needed(cmd: &mut Command, which: Stream) -> Option<std::thread::JoinHandle<()>> {
    let dev = match which {
        Stream::Stdout => "/dev/stdout",
        Stream::Stderr => "/dev/stderr",
    };
    if std::fs::OpenOptions::new().append(true).open(dev).is_ok() {
        return None;
    }
    let (mut reader, writer) = match std::io::pipe() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("rwsgi-express: warning: {dev} cannot be reopened and no pipe: {e}");
            return None;
        }
    };
    match which {
        Stream::Stdout => cmd.stdout(writer),
        Stream::Stderr => cmd.stderr(writer),
    };
    std::thread::Builder::new()
        .name(format!("relay {dev}"))
        .spawn(move || {
            let _ = match which {
                Stream::Stdout => std::io::copy(&mut reader, &mut std::io::stdout()),
                Stream::Stderr => std::io::copy(&mut reader, &mut std::io::stderr()),
            };
        })
        .ok()
}

/// Stops and reaps every process left to us (Apache's orphans, which the subreaper setting
/// hands to rwsgi-express); returns how many there were.
fn stop_leftovers() -> usize {
    sys::reap_exited();
    let me = sys::pids().0;
    let left = children_of(me);
    if left.is_empty() {
        return 0;
    }
    for &p in &left {
        sys::kill(p, libc::SIGTERM);
    }
    let deadline = Instant::now() + LEFTOVER_GRACE;
    for &p in &left {
        if !sys::reap(p, deadline.saturating_duration_since(Instant::now())) {
            sys::kill(p, libc::SIGKILL);
            sys::reap(p, Duration::from_secs(2));
        }
    }
    left.len()
}

/// Removes what a crashed or killed Apache may have left in the server root: its daemon
/// sockets (`rwsgi.<pid>.<n>.sock`) and the pid file.
fn remove_runtime_files(root: &Path, pid: i32) {
    let prefix = format!("rwsgi.{pid}.");
    if let Ok(dir) = std::fs::read_dir(root) {
        for e in dir.flatten() {
            let name = e.file_name();
            let name = name.to_string_lossy();
            if name.starts_with(&prefix) && name.ends_with(".sock") {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    let pid_file = root.join(crate::config::PID_FILE);
    if std::fs::read_to_string(&pid_file).is_ok_and(|t| t.trim() == pid.to_string()) {
        let _ = std::fs::remove_file(pid_file);
    }
}

/// Live (not zombie) processes whose parent is `pid`, read from /proc.
fn children_of(pid: u32) -> Vec<i32> {
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
