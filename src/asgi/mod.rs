//! ASGI 3 applications, served in daemon processes. A worker thread reads the request as for
//! WSGI, looks at the callable (`loops::kind_of`) and hands an ASGI request to its
//! interpreter's event loop (`loops::submit`), which drives it through its `link::Link` to the
//! httpd child; `scope` is the pure part (the scope from the request core), `server.py` the
//! asyncio side (requests, `receive`/`send`, lifespan). Runs in the daemon process.
#![forbid(unsafe_code)]

pub mod scope;

#[cfg(not(any(test, fuzzing)))]
pub mod link;
#[cfg(not(any(test, fuzzing)))]
pub mod loops;

#[cfg(not(any(test, fuzzing)))]
pub use link::{Admitted, Host, Link};
#[cfg(not(any(test, fuzzing)))]
pub use loops::{Hooks, Kind, going_away, kind_of, stop_all, submit};
