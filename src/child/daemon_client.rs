//! The httpd child's side of daemon mode: connect to the group's socket (retrying until
//! connect-timeout, or reuse a kept connection), send the handshake and the environ, and once
//! the daemon has accepted the request, serve its response (`relay`). An unreachable daemon is
//! a 503, a refusal until connect-timeout a 503 (504 for queue-timeout). Runs in the httpd
//! child.
#![forbid(unsafe_code)]

use std::ffi::c_int;
use std::io;
use std::os::unix::net::UnixStream;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::environ::recycle_environ;
use super::relay::{Peer, SpareWire, encode_request, relay};
use super::settings::{RequestSettings, refuse};
use crate::config::DirConfig;
use crate::config::daemon::{DaemonSpec, GroupSpec, UserSpec};
use crate::daemon::conn::Conn;
use crate::error::Code;
use crate::httpd::ffi::{HTTP_BAD_GATEWAY, HTTP_GATEWAY_TIME_OUT, HTTP_SERVICE_UNAVAILABLE};
use crate::httpd::request::Request;
use crate::parent::supervisor::Group;
use crate::protocol::{self, Frame};
use crate::request as core;
use crate::wsgi::adapter::Level;

fn connect(path: &str, timeout: Duration) -> Result<UnixStream, String> {
    let deadline = Instant::now() + timeout;
    let mut delay = Duration::from_millis(5);
    loop {
        match UnixStream::connect(path) {
            Ok(s) => return Ok(s),
            Err(e) => {
                let retry = matches!(
                    e.raw_os_error(),
                    Some(libc::ECONNREFUSED)
                        | Some(libc::EAGAIN)
                        | Some(libc::ENOENT)
                        | Some(libc::EINTR)
                );
                if !retry {
                    let why = if e.raw_os_error() == Some(libc::EACCES) {
                        "permission denied (the socket must belong to the httpd child user; see socket-user)"
                    } else {
                        "unexpected error"
                    };
                    return Err(format!(
                        "cannot connect to daemon socket '{path}': {e}: {why}"
                    ));
                }
                if Instant::now() >= deadline {
                    let why = match e.raw_os_error() {
                        Some(libc::ENOENT) => {
                            "the socket does not exist (daemon not started or being restarted)"
                        }
                        Some(libc::ECONNREFUSED) => {
                            "no daemon process is listening (dead or restarting)"
                        }
                        _ => "the daemon's listen queue is full (all threads busy)",
                    };
                    return Err(format!(
                        "unable to connect to daemon socket '{path}' within connect-timeout ({} s): {e}: {why}",
                        timeout.as_secs_f32()
                    ));
                }
                std::thread::sleep(delay);
                delay = (delay * 2).min(Duration::from_millis(250));
            }
        }
    }
}

/// Idle connections to daemons, kept by this httpd child for the next requests (mod_wsgi opens
/// one connection per request; that cost is a large part of its daemon-mode overhead).
static POOL: Mutex<Vec<(String, u32, Conn)>> = Mutex::new(Vec::new());
const POOL_MAX: usize = 128;

/// A kept connection to `socket` that the daemon has not closed meanwhile.
fn pool_take(socket: &str, generation: u32) -> Option<Conn> {
    let mut pool = POOL.lock().unwrap_or_else(|p| p.into_inner());
    while let Some(i) = pool
        .iter()
        .rposition(|(s, g, _)| s == socket && *g == generation)
    {
        let (_, _, c) = pool.swap_remove(i);
        // Readable while idle means closed (or unexpected data): not usable.
        if !crate::sys::wait_readable(c.fd(), Duration::ZERO) {
            return Some(c);
        }
    }
    None
}

fn pool_give(socket: &str, generation: u32, mut c: Conn) {
    if !c.reusable() {
        return;
    }
    c.trim_idle();
    let mut pool = POOL.lock().unwrap_or_else(|p| p.into_inner());
    if pool.len() < POOL_MAX {
        pool.push((socket.to_string(), generation, c));
    }
}

/// The answer to a daemon's refusal.
fn rejected(req: Request, name: &str, reason: u8) -> c_int {
    let why = match reason {
        protocol::REJECT_BAD_CREDENTIALS => {
            "it refused this server's credentials (stale generation?)"
        }
        protocol::REJECT_SHUTTING_DOWN => "its processes kept shutting down until connect-timeout",
        protocol::REJECT_QUEUE_TIMEOUT => "the request waited longer than queue-timeout",
        _ => "it refused the request",
    };
    if reason == protocol::REJECT_QUEUE_TIMEOUT {
        req.log(
            Level::Error,
            &format!(
                "{}: daemon group '{name}': {why}",
                Code::DaemonUnavailable.as_str()
            ),
        );
        return HTTP_GATEWAY_TIME_OUT;
    }
    unavailable(req, name, why)
}

fn unavailable(req: Request, group: &str, msg: &str) -> c_int {
    req.log(
        Level::Error,
        &format!(
            "{}: daemon group '{group}': {msg}",
            Code::DaemonUnavailable.as_str()
        ),
    );
    HTTP_SERVICE_UNAVAILABLE
}

fn bad_gateway(req: Request, group: &str, msg: &str) -> c_int {
    req.log(
        Level::Error,
        &format!(
            "{}: daemon group '{group}': {msg}",
            Code::DaemonProtocol.as_str()
        ),
    );
    HTTP_BAD_GATEWAY
}

/// `script-user=` / `script-group=`: why the group may not run the requested file (its owner
/// is not the one required; the reason, as mod_wsgi answers 403), or `None`.
fn script_owner_problem(spec: &DaemonSpec, req: Request) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    if spec.script_user.is_none() && spec.script_group.is_none() {
        return None;
    }
    let file = String::from_utf8_lossy(req.filename().unwrap_or(b"")).into_owned();
    let meta = match std::fs::metadata(&file) {
        Ok(m) => m,
        Err(e) => return Some(format!("cannot check the owner of '{file}': {e}")),
    };
    let group = &spec.name;
    if let Some(u) = &spec.script_user {
        let want = match u {
            UserSpec::Id(uid) => Ok(*uid),
            UserSpec::Name(n) => crate::sys::user_by_name(n).map(|u| u.uid),
        };
        return match want {
            Ok(uid) if uid == meta.uid() => None,
            Ok(uid) => Some(format!(
                "daemon group '{group}' runs only scripts owned by script-user= (uid {uid}); \
                 '{file}' is owned by uid {}",
                meta.uid()
            )),
            Err(e) => Some(format!(
                "daemon group '{group}': script-user= cannot be resolved: {e}"
            )),
        };
    }
    if let Some(g) = &spec.script_group {
        let want = match g {
            GroupSpec::Id(gid) => Ok(*gid),
            GroupSpec::Name(n) => crate::sys::group_by_name(n),
        };
        return match want {
            Ok(gid) if gid == meta.gid() => None,
            Ok(gid) => Some(format!(
                "daemon group '{group}' runs only scripts owned by script-group= (gid {gid}); \
                 '{file}' has gid {}",
                meta.gid()
            )),
            Err(e) => Some(format!(
                "daemon group '{group}': script-group= cannot be resolved: {e}"
            )),
        };
    }
    None
}

/// Daemon mode: the request (`prepare` builds it once the group is known to exist), sent to
/// its group's daemon.
pub fn serve(
    req: Request,
    set: &RequestSettings,
    dcfg: &DirConfig,
    prepare: impl FnOnce() -> Result<core::Request<String>, c_int>,
) -> c_int {
    let Some((generation, index)) = crate::parent::supervisor::group(&set.process_group) else {
        return refuse(
            req,
            500,
            Code::RequestRefused,
            &format!(
                "no WSGIDaemonProcess defines process group '{}' (selected by WSGIProcessGroup, \
                 process-group= or a WSGIDispatchScript)",
                set.process_group
            ),
        );
    };
    let group = &generation.groups[index];
    if let Some(why) = script_owner_problem(&group.spec, req) {
        return refuse(req, 403, Code::RequestRefused, &why);
    }
    let request = match prepare() {
        Ok(v) => v,
        Err(rc) => return rc,
    };
    let timeout = Duration::from_micros(req.server_timeout_us().max(0) as u64);
    run(
        req,
        group,
        generation.secret,
        generation.number,
        request,
        timeout,
        dcfg.error_override.unwrap_or(false),
        set,
    )
}

/// Serves the request through daemon group `group`.
#[allow(clippy::too_many_arguments)]
fn run(
    req: Request,
    group: &Group,
    secret: [u8; 16],
    generation: u32,
    request: core::Request<String>,
    apache_timeout: Duration,
    error_override: bool,
    set: &RequestSettings,
) -> c_int {
    let name = group.spec.name.as_str();
    let timeout = group.spec.socket_timeout.unwrap_or(apache_timeout);
    // A WebSocket handshake: checked here, answered by the application (WsAccept).
    let websocket = match super::websocket::precheck(req, &request.env) {
        Ok(key) => key,
        Err(status) => return status,
    };
    // The handshake goes only on a new connection; a kept one carries just the request.
    let mut hello = Vec::new();
    let mut wire = SpareWire::take();
    // Queued for the daemon from now (`mod_wsgi.queue_start`, stamped where mod_wsgi stamps
    // it: before connecting to the daemon).
    let mut request = request;
    request.meta.queue_start = crate::request::metrics::now_us();
    let (encoded, request) = encode_request(request, &mut wire.0);
    recycle_environ(request.env);
    let encoded = encoded.and_then(|_| {
        protocol::encode(
            &Frame::Hello {
                version: protocol::PROTOCOL_VERSION,
                secret,
                generation,
            },
            &mut hello,
        )
    });
    if let Err(e) = encoded {
        return bad_gateway(req, name, &format!("cannot encode the request: {e}"));
    }
    // Until the daemon says `Accepted`, nothing of the request has run, so it may go to another
    // connection or process: when a daemon refuses it because it is stopping (graceful restart,
    // recycling, script reload), or a kept connection turns out closed. After `Accepted` it is
    // never sent again (a failure then is a 502 or an aborted response).
    let deadline = Instant::now() + group.spec.connect_timeout;
    let mut restore_timeout = false;
    let c = loop {
        let retry_left = Instant::now() < deadline;
        let (mut c, kept) = match pool_take(&group.socket, generation) {
            Some(c) => (c, true),
            None => {
                let left = deadline.saturating_duration_since(Instant::now());
                match connect(&group.socket, left.max(Duration::from_millis(1))) {
                    Ok(stream) => (Conn::new(stream), false),
                    Err(msg) => return unavailable(req, name, &msg),
                }
            }
        };
        let sent = if kept {
            c.send_raw(&wire.0)
        } else {
            c.send_raw(&[hello.as_slice(), wire.0.as_slice()].concat())
        };
        if let Err(e) = sent {
            if kept || retry_left {
                continue;
            }
            return bad_gateway(req, name, &format!("sending the request failed: {e}"));
        }
        if !kept {
            // A live daemon process answers a new connection at once; with the socket held
            // open by the parent, a dead group would otherwise just leave it queued.
            c.set_timeouts(
                deadline
                    .saturating_duration_since(Instant::now())
                    .max(Duration::from_millis(1)),
            );
            match c.recv() {
                Ok(Frame::Welcome) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return unavailable(
                        req,
                        name,
                        &format!(
                            "no daemon process accepted the connection on '{}' within \
                             connect-timeout ({} s): the group's processes are not running \
                             or cannot start (see its RW0013/RW0016 log lines)",
                            group.socket,
                            group.spec.connect_timeout.as_secs_f32()
                        ),
                    );
                }
                Err(_) if retry_left => continue,
                Err(e) => {
                    return unavailable(
                        req,
                        name,
                        &format!("the daemon closed the connection: {e}"),
                    );
                }
                Ok(other) => {
                    return bad_gateway(
                        req,
                        name,
                        &format!("unexpected {} frame from the daemon", other.name()),
                    );
                }
            }
        }
        c.set_timeouts(timeout);
        // The daemon sends `Accepted` (a bare header) before it runs the application, and the
        // response follows. Waiting for more bytes than that header lets a quick response wake
        // this thread once rather than twice; a Reject (longer), the daemon closing, a signal
        // or the timeout still end the wait early, with whatever has arrived.
        let waited = Instant::now();
        if c.set_low_water(protocol::HEADER_LEN + 1).is_err() {
            return bad_gateway(req, name, "cannot set the socket's receive low-water mark");
        }
        let first = c.recv();
        if c.set_low_water(1).is_err() {
            return bad_gateway(
                req,
                name,
                "cannot reset the socket's receive low-water mark",
            );
        }
        match first {
            Ok(Frame::Accepted) => {
                if !c.more_buffered() {
                    // `Accepted` came alone: the wait may have used up part of the timeout,
                    // which bounds the wait for the response head as if `Accepted` had been
                    // read at once.
                    let left = timeout.saturating_sub(waited.elapsed());
                    c.set_timeouts(left.max(Duration::from_millis(1)));
                    restore_timeout = true;
                }
                break c;
            }
            Ok(Frame::Reject {
                reason: protocol::REJECT_SHUTTING_DOWN,
            }) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Ok(Frame::Reject { reason }) => return rejected(req, name, reason),
            // Closed before accepting the request: it never ran, send it elsewhere.
            Err(e)
                if Instant::now() < deadline
                    && matches!(
                        e.kind(),
                        io::ErrorKind::UnexpectedEof
                            | io::ErrorKind::ConnectionReset
                            | io::ErrorKind::BrokenPipe
                    ) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                req.log(
                    Level::Error,
                    &format!(
                        "{}: daemon group '{name}': no thread picked the request up within \
                         socket-timeout ({} s)",
                        Code::DaemonUnavailable.as_str(),
                        timeout.as_secs()
                    ),
                );
                return HTTP_GATEWAY_TIME_OUT;
            }
            Err(e) => {
                return bad_gateway(
                    req,
                    name,
                    &format!("the daemon did not take the request: {e}"),
                );
            }
            Ok(other) => {
                return bad_gateway(
                    req,
                    name,
                    &format!("unexpected {} frame instead of Accepted", other.name()),
                );
            }
        }
    };
    // header-buffer-size bounds one header line from the daemon (mod_wsgi: 500).
    let header_limit = match group.spec.header_buffer_size {
        0 => 32768,
        n => n as usize,
    };
    let label = format!("daemon group '{name}'");
    let peer = Peer {
        name: &label,
        side: "the daemon",
        timeout,
        timeout_setting: "socket-timeout",
        header_limit,
        error_override,
        sendfile: set.enable_sendfile,
        websocket_max_message: set.websocket_max_message,
        record: if websocket.is_some() {
            super::observe::record_of(name)
        } else {
            None
        },
        flush_delay: group.spec.response_flush_delay,
    };
    // response-socket-timeout (else socket-timeout) bounds each write to the client while
    // the response is relayed; by default httpd's Timeout does.
    let client_timeout = group
        .spec
        .response_socket_timeout
        .or(group.spec.socket_timeout)
        .filter(|_| websocket.is_none())
        .and_then(|t| req.set_client_timeout(t));
    let (status, reusable) = relay(req, c, &peer, websocket.as_deref(), restore_timeout);
    if let Some(old) = client_timeout {
        req.restore_client_timeout(old);
    }
    if let Some(c) = reusable {
        pool_give(&group.socket, generation, c);
    }
    status
}
