//! What runs in an httpd child, as safe Rust over the `httpd` handles: claiming URLs
//! (`translate`), the handler (admission, then embedded or daemon mode) and the settings it
//! works out (`settings`), the CGI environ from
//! httpd's request (`environ`), the response and body over httpd's filters (`response`),
//! embedded mode (`embedded`, and `asgi`: its ASGI requests on the child's event loop), the
//! daemon client (`daemon_client`), the response from a daemon or the loop (`relay`) and the
//! WebSocket tunnel (`websocket`). This file holds what a child sets up once: its MPM facts
//! and Python's start.
#![forbid(unsafe_code)]

pub mod asgi;
pub mod auth;
pub mod daemon_client;
pub mod dispatch;
pub mod embedded;
pub mod environ;
pub mod handler;
pub mod hook_script;
pub mod observe;
pub mod relay;
pub mod response;
pub mod settings;
pub mod translate;
pub mod websocket;

use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

use crate::config::GlobalConfig;
use crate::httpd::base::main_log;
use crate::httpd::request::mpm_sizes;
use crate::python;

static MULTITHREAD: AtomicBool = AtomicBool::new(false);
static MULTIPROCESS: AtomicBool = AtomicBool::new(false);
static MAX_THREADS: AtomicI32 = AtomicI32::new(1);
static MAX_DAEMONS: AtomicI32 = AtomicI32::new(1);

/// Records what the MPM says about this child (for `wsgi.multithread`/`multiprocess` and
/// `mod_wsgi.threads_per_process`/`maximum_processes`).
pub(crate) fn init_process_info() {
    crate::board::pin();
    let (threads, daemons) = mpm_sizes();
    MAX_THREADS.store(threads, Ordering::Relaxed);
    MAX_DAEMONS.store(daemons, Ordering::Relaxed);
    MULTITHREAD.store(threads > 1, Ordering::Relaxed);
    MULTIPROCESS.store(daemons > 1, Ordering::Relaxed);
}

/// The MPM's MaxRequestWorkers in processes (prefork: how many children may serve at once).
pub(crate) fn max_processes() -> usize {
    MAX_DAEMONS.load(Ordering::Relaxed).max(1) as usize
}

/// The worker threads of this child (1 on prefork).
pub(crate) fn threads_per_child() -> usize {
    MAX_THREADS.load(Ordering::Relaxed).max(1) as usize
}

/// Whether this child's MPM runs several threads, several processes.
fn multithread_multiprocess() -> (bool, bool) {
    (
        MULTITHREAD.load(Ordering::Relaxed),
        MULTIPROCESS.load(Ordering::Relaxed),
    )
}

/// Sets up Python in a new child: bootstrap objects, then the `WSGIImportScript`s of the
/// main interpreter (a daemon group's are preloaded by that group's daemons).
pub(crate) fn bootstrap(g: &GlobalConfig) {
    let info = python::ProcessInfo {
        threads_per_process: MAX_THREADS.load(Ordering::Relaxed),
        maximum_processes: MAX_DAEMONS.load(Ordering::Relaxed),
    };
    python::start_process(g, &info, "%{GLOBAL}", None, &main_log());
}
