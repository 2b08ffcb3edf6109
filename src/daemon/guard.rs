//! Panic containment in a daemon process: the entry of the freshly forked process (a panic
//! there can never unwind into the httpd code that forked it: RW0999, then `_exit`), the
//! guard of every daemon thread and of each request a worker serves (RW0999, then a graceful
//! recycle of the process), and the test-only panic hook that exercises them. Runs in the
//! daemon process.
#![forbid(unsafe_code)]

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::OnceLock;

use super::EXIT_STARTUP_FAILED;
use crate::error::{Code, panic_message};
use crate::sys;
use crate::wsgi::adapter::{Level, LogFn};

/// Runs the body of a freshly forked daemon process. `f` is not meant to return (it ends the
/// process itself); if it panics, the panic is logged and the process `_exit`s without
/// unwinding into the caller, which is httpd's parent code (its hook, its MPM loop, its pool
/// cleanups) that must never run twice.
pub fn forked_entry(log: &LogFn, group: &str, f: impl FnOnce()) -> ! {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(()) => sys::exit_now(0),
        Err(payload) => {
            log(
                Level::Critical,
                &format!(
                    "{}: daemon group '{group}': panic while starting a daemon process: {}; \
                     the process exits",
                    Code::Panic.as_str(),
                    panic_message(payload.as_ref())
                ),
            );
            sys::exit_now(EXIT_STARTUP_FAILED)
        }
    }
}

/// Runs `f` (a daemon thread's body, or one request in a worker); a panic is logged as
/// RW0999 and `Err` returned so the caller releases what it holds and recycles the process.
pub fn contain<T>(log: &LogFn, group: &str, what: &str, f: impl FnOnce() -> T) -> Result<T, ()> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|payload| {
        log(
            Level::Critical,
            &format!(
                "{}: daemon group '{group}': panic in {what}: {}; the process is recycled",
                Code::Panic.as_str(),
                panic_message(payload.as_ref())
            ),
        );
    })
}

/// The test-only panic hook. With `RWSGI_TEST_PANIC=POINT:MARKER` in the daemon's environment
/// (inherited from httpd's), the first process to reach `POINT` creates the file `MARKER` and
/// panics there; every later arrival (any process) finds the file and goes on. So a test gets
/// exactly one panic at a chosen point and can watch the service continue. Points: `start`
/// (the forked process, before it drops privileges), `worker` (a worker, inside a request,
/// after `Accepted`), `dispatcher` and `monitor` (those threads' loops). Unset, it costs one
/// cached comparison.
pub fn test_panic(point: &str) {
    static HOOK: OnceLock<Option<(String, String)>> = OnceLock::new();
    let hook = HOOK.get_or_init(|| {
        let v = std::env::var("RWSGI_TEST_PANIC").ok()?;
        let (p, marker) = v.split_once(':')?;
        Some((p.to_string(), marker.to_string()))
    });
    if let Some((p, marker)) = hook
        && p == point
        && std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(marker)
            .is_ok()
    {
        panic!("test panic at '{point}' (RWSGI_TEST_PANIC)");
    }
}
