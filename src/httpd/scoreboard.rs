//! A snapshot of httpd's scoreboard (the shared memory every httpd process and the daemons
//! forked from the parent see), for `mod_wsgi.server_metrics()` under `WSGIServerMetrics On`
//! or `server-metrics=On`. Read in an httpd child or a daemon process.

use std::ffi::c_char;

use super::ffi::*;

/// One worker slot (a thread of an httpd child).
#[derive(Debug, Clone, PartialEq)]
pub struct Worker {
    pub thread_num: i32,
    pub generation: i32,
    /// mod_status's letter: `_` waiting, `R` reading, `W` writing, `K` keep-alive, ...
    pub status: char,
    pub access_count: u64,
    pub bytes_served: u64,
    /// Seconds since the epoch.
    pub start_time: f64,
    pub stop_time: f64,
    pub last_used: f64,
    pub client: String,
    pub request: String,
    pub vhost: String,
}

/// One httpd child process slot.
#[derive(Debug, Clone, PartialEq)]
pub struct Process {
    pub process_num: i32,
    pub pid: i32,
    pub generation: i32,
    pub quiescing: bool,
    pub workers: Vec<Worker>,
}

/// The whole scoreboard.
#[derive(Debug, Clone, PartialEq)]
pub struct Scoreboard {
    pub server_limit: i32,
    pub thread_limit: i32,
    pub running_generation: i32,
    /// Seconds since the epoch.
    pub restart_time: f64,
    pub current_time: f64,
    /// Whole seconds since the last restart.
    pub running_time: i64,
    pub processes: Vec<Process>,
}

/// mod_status's letters by `SERVER_*` status (scoreboard.h).
pub fn status_letter(status: u8) -> char {
    const LETTERS: [char; 11] = ['.', 'S', '_', 'R', 'W', 'K', 'L', 'D', 'C', 'G', 'I'];
    LETTERS.get(usize::from(status)).copied().unwrap_or('?')
}

fn secs(t: apr_time_t) -> f64 {
    t as f64 / 1_000_000.0
}

/// Text of a fixed-size C char array in the scoreboard (latin-1, up to its NUL).
fn text(field: &[c_char]) -> String {
    field
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| char::from(c as u8))
        .collect()
}

/// The scoreboard slot of the process `pid` (an httpd child finding its own), if it has one.
pub fn slot_of(pid: i32) -> Option<usize> {
    // SAFETY: ap_exists_scoreboard_image reads a process global.
    if unsafe { ap_exists_scoreboard_image() } == 0 {
        return None;
    }
    // SAFETY: the scoreboard exists; its global record lives for the server's life.
    let g = unsafe { ap_get_scoreboard_global().as_ref() }?;
    (0..g.server_limit.max(0)).find_map(|i| {
        // SAFETY: `i` is below server_limit, so the record exists; its pid is a plain value.
        let p = unsafe { ap_get_scoreboard_process(i).as_ref() }?;
        (p.pid == pid).then_some(i as usize)
    })
}

/// The scoreboard as it is now, or `None` when this process has none.
pub fn snapshot() -> Option<Scoreboard> {
    // SAFETY: ap_exists_scoreboard_image reads a process global.
    if unsafe { ap_exists_scoreboard_image() } == 0 {
        return None;
    }
    // SAFETY: the scoreboard exists: its global record lives in shared memory for the
    // server's life; fields are plain values other processes update (torn reads only make a
    // snapshot slightly stale, as in mod_status).
    let g = unsafe { ap_get_scoreboard_global().as_ref() }?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    let mut processes = Vec::new();
    for i in 0..g.server_limit.max(0) {
        // SAFETY: `i` is below server_limit, so the record exists.
        let Some(p) = (unsafe { ap_get_scoreboard_process(i).as_ref() }) else {
            continue;
        };
        let mut workers = Vec::new();
        for j in 0..g.thread_limit.max(0) {
            // SAFETY: both indexes are within the scoreboard's limits.
            let Some(w) = (unsafe { ap_get_scoreboard_worker_from_indexes(i, j).as_ref() }) else {
                continue;
            };
            workers.push(Worker {
                thread_num: w.thread_num,
                generation: w.generation,
                status: status_letter(w.status),
                access_count: w.access_count,
                bytes_served: u64::try_from(w.bytes_served).unwrap_or(0),
                start_time: secs(w.start_time),
                stop_time: secs(w.stop_time),
                last_used: secs(w.last_used),
                client: text(&w.client),
                request: text(&w.request),
                vhost: text(&w.vhost),
            });
        }
        processes.push(Process {
            process_num: i,
            pid: p.pid,
            generation: p.generation,
            quiescing: p.quiescing != 0,
            workers,
        });
    }
    Some(Scoreboard {
        server_limit: g.server_limit,
        thread_limit: g.thread_limit,
        running_generation: g.running_generation,
        restart_time: secs(g.restart_time),
        current_time: now,
        running_time: (now - secs(g.restart_time)) as i64,
        processes,
    })
}
