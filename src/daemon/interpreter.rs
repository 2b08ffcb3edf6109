//! Python in a daemon process: the group's Python configuration (the server's, with the
//! group's overrides), the interpreter's start-up, then what every process runs once Python is
//! up (`python::start_process`: the bootstrap, output routed to the request being served,
//! `mod_wsgi.process_group`, `home=` on `sys.path`, the group's `WSGIImportScript`s). Any
//! failure before the scripts is fatal. Runs in the daemon process, before its threads start.
#![forbid(unsafe_code)]

use crate::config::GlobalConfig;
use crate::config::daemon::DaemonSpec;
use crate::error::Code;
use crate::wsgi::adapter::LogFn;

use super::fatal;

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
    // mod_wsgi.server_metrics(): the group's server-metrics=, not WSGIServerMetrics.
    g.server_metrics = spec.server_metrics;
    if let Err(e) = init_python(&g) {
        let fix = match &spec.chroot {
            Some(jail) => format!(
                "The process runs in chroot={jail}: the jail must hold Python {}'s standard \
                 library at the path it has outside (python-home= names it inside the jail)",
                crate::python::BUILD_VERSION
            ),
            None => "Check python-home".to_string(),
        };
        fatal(
            log,
            &format!(
                "{}: daemon group '{name}': cannot initialise Python: {e}. {fix}",
                Code::PythonInit.as_str()
            ),
        );
    }
    let info = crate::python::ProcessInfo {
        threads_per_process: spec.threads as i32,
        maximum_processes: spec.processes as i32,
    };
    if !crate::python::start_process(&g, &info, name, spec.home.as_deref(), log) {
        fatal(
            log,
            &format!(
                "{}: daemon group '{name}': bootstrap failed",
                Code::PythonInit.as_str()
            ),
        );
    }
    g
}
