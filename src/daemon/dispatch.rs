//! The connections from httpd children and the threads that serve them: the dispatcher thread
//! accepts from the group's shared listening socket (`Peers` keeps the accepted connections
//! between requests, watched for the next one), and the worker threads each take a readable
//! connection and serve one request on it. A connection whose request went to an ASGI event
//! loop stays with the loop, which gives it back (`LoopHost`) with a request it does not run.
//! Runs in the daemon process.
#![forbid(unsafe_code)]

use std::os::unix::net::UnixListener;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::protocol::{self, Frame};
use crate::request::Request;
use crate::sys;
use crate::wsgi::adapter::{Level, LogFn};

use super::conn::Conn;
use super::guard;
use super::serve::{Ctx, HandOver, forget_request_logs, serve};
use super::state::State;

/// Starts serving on the group's `listener`: the dispatcher thread and `threads` workers,
/// each guarded (a panic is logged and recycles the process). `Err` is what to report as the
/// process's start-up failure.
pub(super) fn start(
    listener: UnixListener,
    state: &Arc<State>,
    ctx: &Arc<Ctx>,
    threads: u32,
) -> Result<(), String> {
    // Workers poll instead of blocking in accept(), so a stopping process leaves the shared
    // listen queue alone: what is queued is served by the group's other or next processes.
    listener.set_nonblocking(true).map_err(|e| e.to_string())?;
    let listener = Arc::new(listener);
    let peers = Arc::new(Peers::new().map_err(|e| e.to_string())?);
    let host: Arc<dyn crate::asgi::Host> = Arc::new(LoopHost {
        peers: Arc::clone(&peers),
        state: Arc::clone(state),
        ctx: Arc::clone(ctx),
    });
    let cannot_start = |e: std::io::Error| format!("cannot start threads: {e}");
    state.accepting.store(1, Ordering::SeqCst);
    {
        let (listener, state, peers) =
            (Arc::clone(&listener), Arc::clone(state), Arc::clone(&peers));
        let (log, name, grace) = (
            ctx.log.clone(),
            ctx.spec.name.clone(),
            ctx.spec.graceful_timeout,
        );
        std::thread::Builder::new()
            .name("rwsgi-dispatch".into())
            .spawn(move || {
                let run = || dispatcher(&listener, &peers, &state, threads as usize, &log);
                if guard::contain(&log, &name, "the dispatcher thread", run).is_err() {
                    // What the dispatcher does when it stops, so the process can drain.
                    peers.close_all();
                    state.accepting.store(0, Ordering::SeqCst);
                    state.restart("a panic in the dispatcher thread".into(), grace);
                }
            })
            .map_err(cannot_start)?;
    }
    for i in 0..threads {
        let (peers, state, ctx) = (Arc::clone(&peers), Arc::clone(state), Arc::clone(ctx));
        let host = Arc::clone(&host);
        let mut b = std::thread::Builder::new().name(format!("rwsgi-worker-{i}"));
        if let Some(sz) = ctx.spec.stack_size {
            b = b.stack_size(sz as usize);
        }
        b.spawn(move || {
            let what = format!("worker thread {i}");
            if guard::contain(&ctx.log, &ctx.spec.name, &what, || {
                worker(i as usize, &peers, &state, &ctx, &host)
            })
            .is_err()
            {
                state.restart(format!("a panic in {what}"), ctx.spec.graceful_timeout);
            }
        })
        .map_err(cannot_start)?;
    }
    Ok(())
}

/// A connection between an httpd child and this daemon, kept open across requests.
struct Peer {
    conn: Conn,
    /// The handshake has been done on this connection.
    authenticated: bool,
    /// A request already read from it (by an ASGI loop that does not run it).
    pending: Option<Request<Vec<u8>>>,
}

/// The token under which `Peers::wake` is watched (connection tokens start at 1).
const WAKE: u64 = 0;

/// The kept connections of this process while no worker serves them, each registered
/// one-shot with `poll` under its token. Idle workers wait on `poll` together: a connection
/// that becomes readable (a request, or the httpd child closing it) wakes one worker, which
/// takes it out, serves it and puts it back re-armed. No thread sits between the socket and
/// the worker, so a request costs one wake-up in the daemon.
struct Peers {
    poll: sys::OneShotPoll,
    slots: std::sync::Mutex<Slots>,
    /// Readable while `ready` holds connections (watched one-shot under `WAKE`).
    wake: sys::EventFd,
}

struct Slots {
    idle: std::collections::HashMap<u64, Peer>,
    /// Connections given back with a request already read: the next worker takes one.
    ready: std::collections::VecDeque<(u64, Peer)>,
    /// Accepted connections no worker has taken yet (their first request is still waiting).
    fresh: usize,
    next_token: u64,
    /// False once the process stops: connections are closed instead of kept.
    open: bool,
}

impl Peers {
    fn new() -> std::io::Result<Self> {
        let peers = Peers {
            poll: sys::OneShotPoll::new()?,
            slots: std::sync::Mutex::new(Slots {
                idle: std::collections::HashMap::new(),
                ready: std::collections::VecDeque::new(),
                fresh: 0,
                next_token: 1,
                open: true,
            }),
            wake: sys::EventFd::new()?,
        };
        peers.poll.add(peers.wake.fd(), WAKE)?;
        Ok(peers)
    }

    /// Queues a connection with a request already read for the next worker, and wakes one.
    fn push_ready(&self, token: u64, p: Peer) {
        let mut s = self.lock();
        if !s.open {
            return;
        }
        s.ready.push_back((token, p));
        self.wake.notify();
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
        if token == WAKE {
            let next = s.ready.pop_front();
            if s.ready.is_empty() {
                self.wake.clear();
            }
            // Watched again: another queued connection (or a later one) wakes the next worker.
            let _ = self.poll.rearm(self.wake.fd(), WAKE);
            let (token, p) = next?;
            state.active.fetch_add(1, Ordering::SeqCst);
            return Some((token, p));
        }
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

    /// Puts a connection that can carry another request (its handshake done) back, watched
    /// again; closes it when the process is stopping.
    fn give_back(&self, token: u64, mut conn: Conn) {
        conn.trim_idle();
        let mut s = self.lock();
        let fd = conn.fd();
        if !s.open {
            self.poll.remove(fd);
            return;
        }
        s.idle.insert(
            token,
            Peer {
                conn,
                authenticated: true,
                pending: None,
            },
        );
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
        // Read but not run: dropped unanswered, the httpd child sends it elsewhere (it was not
        // `Accepted`).
        for (_, p) in s.ready.drain(..) {
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
                            pending: None,
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

/// What an ASGI event loop holding connections needs from the process (`asgi::Host`): the
/// worker's checks and counts, and the way back to the workers.
struct LoopHost {
    peers: Arc<Peers>,
    state: Arc<State>,
    ctx: Arc<Ctx>,
}

impl crate::asgi::Host for LoopHost {
    fn admit(&self, conn: &mut Conn, req: &Request<Vec<u8>>) -> crate::asgi::Admitted {
        let _ = conn.set_nonblocking(false);
        let admitted = super::serve::admit(conn, req, &self.ctx, &self.state);
        let _ = conn.set_nonblocking(true);
        admitted
    }

    fn started(&self) {
        self.state.asgi_active.fetch_add(1, Ordering::SeqCst);
    }

    fn finished(&self, counts: bool) {
        let state = &self.state;
        if counts {
            // WSGIIgnoreActivity On requests (health checks) do not postpone inactivity-timeout.
            state.last_activity.store(state.now_ms(), Ordering::SeqCst);
        }
        let n = state.served.fetch_add(1, Ordering::SeqCst) + 1;
        state.asgi_active.fetch_sub(1, Ordering::SeqCst);
        let max = self.ctx.spec.maximum_requests;
        if max > 0 && n >= max {
            state.restart(
                format!("maximum-requests ({n}) reached; recycling"),
                self.ctx.spec.graceful_timeout,
            );
        }
    }

    fn release(&self, token: u64, conn: Conn, pending: Option<Request<Vec<u8>>>) {
        match pending {
            Some(req) => self.peers.push_ready(
                token,
                Peer {
                    conn,
                    authenticated: true,
                    pending: Some(req),
                },
            ),
            None => self.peers.give_back(token, conn),
        }
    }

    fn keeps_connections(&self) -> bool {
        !self.state.stopping.load(Ordering::SeqCst)
    }

    fn log(&self) -> LogFn {
        self.ctx.log.clone()
    }

    fn case_sensitive(&self) -> bool {
        self.ctx.global.case_sensitive
    }
}

/// A worker thread (`index`): takes connections with a request waiting and serves one request
/// on each, until the process stops and the dispatcher has stopped accepting.
fn worker(
    index: usize,
    peers: &Arc<Peers>,
    state: &Arc<State>,
    ctx: &Arc<Ctx>,
    host: &Arc<dyn crate::asgi::Host>,
) {
    crate::python::ensure_thread_state();
    state.py_ident[index].store(crate::python::thread_ident(), Ordering::SeqCst);
    super::state::WORKER_INDEX.set(Some(index));
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
        let to_loop = HandOver {
            host: Arc::clone(host),
            token,
        };
        let served = guard::contain(&ctx.log, &ctx.spec.name, "a worker's request", || {
            serve(
                peer.conn,
                peer.authenticated,
                peer.pending,
                ctx,
                state,
                &to_loop,
            )
        });
        state.busy_since[index].store(0, Ordering::SeqCst);
        state.interrupted_at[index].store(0, Ordering::SeqCst);
        let Ok(outcome) = served else {
            // The connection was closed as the panic unwound (the httpd child answers 502 or
            // aborts the response); release the worker's claim and recycle the process.
            forget_request_logs();
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
        if let Some(conn) = outcome.back {
            peers.give_back(token, conn);
        }
        state.active.fetch_sub(1, Ordering::SeqCst);
        if !outcome.ran || outcome.handed_over {
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
