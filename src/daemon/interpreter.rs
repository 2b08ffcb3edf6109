//! Python in a daemon process: the group's Python configuration (the server's, with the
//! group's overrides), the interpreter's start-up and mod_rwsgi's bootstrap (output and logging
//! routed to the request being served), then `mod_wsgi.process_group`, `home=` on `sys.path`
//! and the group's `WSGIImportScript`s. Any failure before the scripts is fatal. Runs in the
//! daemon process, before its threads start.
#![forbid(unsafe_code)]

use pyo3::prelude::*;

use crate::config::GlobalConfig;
use crate::config::daemon::DaemonSpec;
use crate::error::Code;
use crate::wsgi::adapter::{self, LogFn};

use super::fatal;
use super::serve::routed_log;

/// Starts Python for group `spec` with `init_python` and loads what the group imports at
/// start-up. Returns the Python configuration in force, which requests are served with.
pub(super) fn start(
    global: &GlobalConfig,
    spec: &DaemonSpec,
    init_python: fn(&GlobalConfig) -> Result<(), String>,
    log: &LogFn,
) -> GlobalConfig {
    let name = &spec.name;
    // The Python configuration of this group: the server's, with the group's own overrides.
    let mut g = global.clone();
    if spec.python_home.is_some() {
        g.python_home = spec.python_home.clone();
    }
    g.python_path.extend(spec.python_path.iter().cloned());
    if spec.python_eggs.is_some() {
        g.python_eggs = spec.python_eggs.clone();
    }
    if spec.switch_interval.is_some() {
        g.switch_interval = spec.switch_interval;
    }
    g.restrict_embedded = false;
    if let Err(e) = init_python(&g) {
        fatal(
            log,
            &format!(
                "{}: daemon group '{name}': cannot initialise Python: {e}. Check python-home",
                Code::PythonInit.as_str()
            ),
        );
    }
    crate::python::ensure_thread_state();
    let info = crate::python::ProcessInfo {
        threads_per_process: spec.threads as i32,
        maximum_processes: spec.processes as i32,
    };
    let boot_ok = Python::attach(|py| {
        crate::python::bootstrap(
            py,
            &g,
            &info,
            routed_log(log.clone(), false),
            routed_log(log.clone(), false),
            routed_log(log.clone(), true),
        )
        .map_err(|e| adapter::log_exception(py, &e, log, "mod_rwsgi could not set up Python"))
        .is_ok()
    });
    if !boot_ok {
        fatal(
            log,
            &format!(
                "{}: daemon group '{name}': bootstrap failed",
                Code::PythonInit.as_str()
            ),
        );
    }
    Python::attach(|py| {
        let m = py.import("mod_wsgi");
        if let Ok(m) = m {
            let _ = m.setattr("process_group", name.as_str());
        }
        // As mod_wsgi: an explicit home= goes first on sys.path, like a script's directory
        // under the command-line interpreter.
        if let Some(home) = &spec.home
            && let Err(e) = py
                .import("sys")
                .and_then(|sys| sys.getattr("path"))
                .and_then(|path| path.call_method1("insert", (0, home.as_str())))
        {
            adapter::log_exception(py, &e, log, "mod_rwsgi could not put home= on sys.path");
        }
        for imp in g.import_scripts.iter().filter(|i| &i.process_group == name) {
            if let Err(e) = crate::python::load_script(py, &imp.path, None, true, g.case_sensitive)
            {
                adapter::log_exception(
                    py,
                    &e,
                    log,
                    &format!(
                        "{}: failed to import WSGI script '{}'",
                        Code::ScriptLoad.as_str(),
                        imp.path
                    ),
                );
            }
        }
    });
    g
}
