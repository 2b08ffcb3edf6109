//! What the board (the shared-memory counters behind server-status, the metrics page and the
//! health check) costs per request, measured directly: the writes an httpd child makes for
//! each request, and those a daemon worker makes, on a real shared mapping
//! (`sys::SharedWords`), by one thread and by two at once (two children or workers hitting
//! the same words, as under load). The words live in ordinary memory here (the server's are an
//! anonymous shared mapping: the same cache behaviour within a process). A tool run by hand,
//! not by the tests: `cargo run --release --example board_cost`. Runs in its own process only.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Instant;

use mod_rwsgi::board::{Board, GroupShape, Layout, Served};

const ROUNDS: u32 = 2_000_000;

fn board() -> Arc<Board> {
    let layout = Layout::with_children(
        16,
        vec![GroupShape {
            name: "site".into(),
            processes: 2,
            threads: 15,
        }],
    );
    let mem: Vec<AtomicU64> = (0..layout.words).map(|_| AtomicU64::new(0)).collect();
    Arc::new(Board::new(layout, Box::new(mem)).expect("sized"))
}

/// What an httpd child writes per request (either mode): in flight up, then the outcome; for
/// an embedded-mode request also its own slot (both threads share one: threads of one child).
fn child_request(b: &Board, group: Option<usize>, i: u32) {
    b.request_started(group);
    if group.is_none() {
        b.child_request(3, true);
    }
    b.request_ended(
        group,
        Served {
            status: 200,
            bytes_in: 0,
            bytes_out: 12,
            micros: 900 + u64::from(i % 7),
        },
    );
    if group.is_none() {
        b.child_request(3, false);
        b.child_figures(3, None, [u64::from(i), 0, 0], 5);
    }
}

/// What a daemon worker writes per request: the queue wait, its thread slot busy (with the
/// request line server-status shows) and idle again.
fn daemon_request(b: &Board, thread: usize, i: u32) {
    b.queue_waited(0, 40 + u64::from(i % 5));
    b.thread_busy(
        0,
        0,
        thread,
        1_780_000_000_000 + u64::from(i),
        b"GET /hello?x=1\t127.0.0.1:51234\tZx1Ab2Cd3Ef4Gh5",
    );
    b.thread_idle(0, 0, thread);
}

/// Nanoseconds per call of `f` over `ROUNDS`, run by `threads` threads at once (the mean of
/// their figures).
fn ns_per_call(threads: usize, f: impl Fn(usize, u32) + Send + Sync + 'static) -> f64 {
    let f = Arc::new(f);
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let f = Arc::clone(&f);
            std::thread::spawn(move || {
                let start = Instant::now();
                for i in 0..ROUNDS {
                    f(t, i);
                }
                start.elapsed().as_nanos() as f64 / f64::from(ROUNDS)
            })
        })
        .collect();
    let per: Vec<f64> = handles
        .into_iter()
        .map(|h| h.join().expect("a measuring thread"))
        .collect();
    per.iter().sum::<f64>() / per.len() as f64
}

fn main() {
    let b = board();
    println!("board cost per request ({ROUNDS} rounds per thread; ns per request)");
    for threads in [1, 2] {
        let (b1, b2, b3) = (Arc::clone(&b), Arc::clone(&b), Arc::clone(&b));
        let embedded = ns_per_call(threads, move |_, i| child_request(&b1, None, i));
        let child_daemon = ns_per_call(threads, move |_, i| child_request(&b2, Some(0), i));
        // Each worker has its own thread slot (one writer per slot).
        let worker = ns_per_call(threads, move |t, i| daemon_request(&b3, t, i));
        println!(
            "{threads} thread(s): httpd child, embedded {embedded:.1}; httpd child, daemon \
             request {child_daemon:.1}; daemon worker {worker:.1}"
        );
    }
}
