//! The per-thread log route: which request's error log a thread's Python output goes to
//! (`print()`, `sys.stdout`/`sys.stderr`, `logging` records with the request id first). The
//! runner of each request sets the route while the application runs; without one, lines go to
//! the process's fallback log. One router for both modes: the httpd child (embedded) and the
//! daemon processes.
#![forbid(unsafe_code)]

use std::cell::RefCell;
use std::sync::Arc;

use super::adapter::LogFn;

/// Where the running request's lines go: as they are, and with the request id first.
pub struct Route {
    pub plain: LogFn,
    pub with_id: LogFn,
}

thread_local! {
    static CURRENT: RefCell<Option<Route>> = const { RefCell::new(None) };
}

/// Sets (or, with `None`, clears) the calling thread's route.
pub fn set(route: Option<Route>) {
    CURRENT.with(|c| *c.borrow_mut() = route);
}

/// A log function that follows the calling thread's route (`with_id`: the one that starts
/// lines with the request id), else writes to `fallback`.
pub fn routed(fallback: LogFn, with_id: bool) -> LogFn {
    Arc::new(move |l, m| {
        let current = CURRENT.with(|c| {
            c.borrow()
                .as_ref()
                .map(|r| Arc::clone(if with_id { &r.with_id } else { &r.plain }))
        });
        match current {
            Some(f) => f(l, m),
            None => fallback(l, m),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wsgi::adapter::Level;
    use std::sync::Mutex;

    fn sink(tag: &'static str, out: &Arc<Mutex<Vec<String>>>) -> LogFn {
        let out = Arc::clone(out);
        Arc::new(move |_, m| out.lock().unwrap().push(format!("{tag}:{m}")))
    }

    #[test]
    fn lines_follow_the_threads_route() {
        let out = Arc::new(Mutex::new(Vec::new()));
        let plain = routed(sink("fallback", &out), false);
        let with_id = routed(sink("fallback", &out), true);
        plain(Level::Info, "a");
        set(Some(Route {
            plain: sink("req", &out),
            with_id: sink("req-id", &out),
        }));
        plain(Level::Info, "b");
        with_id(Level::Info, "c");
        // Another thread has no route.
        let p = Arc::clone(&plain);
        std::thread::spawn(move || p(Level::Info, "d"))
            .join()
            .unwrap();
        set(None);
        with_id(Level::Info, "e");
        assert_eq!(
            *out.lock().unwrap(),
            [
                "fallback:a",
                "req:b",
                "req-id:c",
                "fallback:d",
                "fallback:e"
            ]
        );
    }
}
