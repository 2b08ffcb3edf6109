//! What runs in an httpd child, as safe Rust over the `httpd` handles: claiming URLs
//! (`translate`), the handler (admission, then embedded or daemon mode), the CGI environ from
//! httpd's request (`environ`), the response and body over httpd's filters (`response`),
//! embedded mode (`embedded`) and the daemon client (`daemon_client`). This file holds what a
//! child sets up once: its MPM facts, Python's bootstrap and the per-thread log routing.
#![forbid(unsafe_code)]

pub mod daemon_client;
pub mod embedded;
pub mod environ;
pub mod handler;
pub mod response;
pub mod translate;

use std::cell::Cell;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

use pyo3::prelude::*;

use crate::config::GlobalConfig;
use crate::error::Code;
use crate::httpd::main_log;
use crate::httpd::request::{Request, mpm_sizes};
use crate::python;
use crate::wsgi::adapter::{self, Level, LogFn};

static MULTITHREAD: AtomicBool = AtomicBool::new(false);
static MULTIPROCESS: AtomicBool = AtomicBool::new(false);
static MAX_THREADS: AtomicI32 = AtomicI32::new(1);
static MAX_DAEMONS: AtomicI32 = AtomicI32::new(1);

/// Records what the MPM says about this child (for `wsgi.multithread`/`multiprocess` and
/// `mod_wsgi.threads_per_process`/`maximum_processes`).
pub(crate) fn init_process_info() {
    let (threads, daemons) = mpm_sizes();
    MAX_THREADS.store(threads, Ordering::Relaxed);
    MAX_DAEMONS.store(daemons, Ordering::Relaxed);
    MULTITHREAD.store(threads > 1, Ordering::Relaxed);
    MULTIPROCESS.store(daemons > 1, Ordering::Relaxed);
}

/// Whether this child's MPM runs several threads, several processes.
fn multithread_multiprocess() -> (bool, bool) {
    (
        MULTITHREAD.load(Ordering::Relaxed),
        MULTIPROCESS.load(Ordering::Relaxed),
    )
}

thread_local! {
    /// The request this thread is running embedded, for `print()`/`sys.stderr`/`logging`.
    static CURRENT: Cell<Option<Request>> = const { Cell::new(None) };
}

/// Makes `req` the calling thread's current request (`None`: no request).
fn set_current(req: Option<Request>) {
    CURRENT.with(|c| c.set(req));
}

/// Log function of the running request's virtual host, else the main server: `print()` and
/// `sys.stderr` as they are, Python `logging` records (`with_id`) with the request id at the
/// start of the line.
fn thread_routed_log(with_id: bool) -> LogFn {
    let server = main_log();
    Arc::new(move |l, msg| match CURRENT.with(Cell::get) {
        None => server(l, msg),
        Some(r) if with_id => r.log_with_id(l, msg),
        Some(r) => r.log(l, msg),
    })
}

/// Sets up Python in a new child: bootstrap objects, then `WSGIImportScript` preloads.
pub(crate) fn bootstrap(g: &GlobalConfig) {
    let info = python::ProcessInfo {
        threads_per_process: MAX_THREADS.load(Ordering::Relaxed),
        maximum_processes: MAX_DAEMONS.load(Ordering::Relaxed),
    };
    let log = main_log();
    python::ensure_thread_state();
    Python::attach(|py| {
        if let Err(e) = python::bootstrap(
            py,
            g,
            &info,
            thread_routed_log(false),
            thread_routed_log(false),
            thread_routed_log(true),
        ) {
            adapter::log_exception(
                py,
                &e,
                &log,
                &format!(
                    "{}: mod_rwsgi could not set up Python",
                    Code::PythonInit.as_str()
                ),
            );
            return;
        }
        // Scripts for a daemon group are preloaded by that group's daemons, not here.
        for imp in g
            .import_scripts
            .iter()
            .filter(|i| i.process_group == "%{GLOBAL}")
        {
            match python::load_script(py, &imp.path, None, true, g.case_sensitive) {
                Ok(_) => log(Level::Info, &format!("imported WSGI script '{}'", imp.path)),
                Err(e) => adapter::log_exception(
                    py,
                    &e,
                    &log,
                    &format!(
                        "{}: failed to import WSGI script '{}' (WSGIImportScript)",
                        Code::ScriptLoad.as_str(),
                        imp.path
                    ),
                ),
            }
        }
    });
}
