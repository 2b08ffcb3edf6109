//! The process settings a `WSGIDaemonProcess` asks for beyond its identity: resource limits
//! (memory, virtual memory, CPU time), CPU priority, and the locale environment (`lang=`,
//! `locale=`). Failures are warnings, not fatal. Runs in the daemon process, before it starts
//! any thread.
#![forbid(unsafe_code)]

use crate::config::daemon::DaemonSpec;
use crate::sys;
use crate::wsgi::adapter::{Level, LogFn};

/// Applies the group's limits, priority and locale to this process.
pub(super) fn apply(spec: &DaemonSpec, log: &LogFn) {
    let warn = |what: &str, e: std::io::Error| {
        log(
            Level::Warning,
            &format!("daemon group '{}': cannot set {what}: {e}", spec.name),
        )
    };
    if let Some(m) = spec.memory_limit
        && let Err(e) = sys::set_limit(sys::Limit::Data, m, m)
    {
        warn("memory-limit", e);
    }
    if let Some(m) = spec.virtual_memory_limit
        && let Err(e) = sys::set_limit(sys::Limit::AddressSpace, m, m)
    {
        warn("virtual-memory-limit", e);
    }
    if let Some(c) = spec.cpu_time_limit {
        let hard = c + 1 + spec.shutdown_timeout.as_secs();
        if let Err(e) = sys::set_limit(sys::Limit::Cpu, c, hard) {
            warn("cpu-time-limit", e);
        }
    }
    if spec.cpu_priority != 0
        && let Err(e) = sys::set_priority(spec.cpu_priority)
    {
        warn("cpu-priority", e);
    }
    // Called before the daemon starts any thread.
    if let Some(lang) = &spec.lang {
        sys::set_env_single_threaded("LANG", lang);
    }
    if let Some(locale) = &spec.locale {
        sys::set_env_single_threaded("LC_ALL", locale);
    }
}
