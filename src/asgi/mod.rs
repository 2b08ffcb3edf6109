//! ASGI 3 applications, served in daemon processes. A worker thread reads the request as for
//! WSGI, looks at the callable (`call::kind_of`) and hands an ASGI request to its
//! interpreter's event loop (`loops::submit`), which keeps the connection and drives it
//! through its `link::Link` to the httpd child; `scope` is the pure part (the scope from the
//! request core), `server.py` the asyncio side (HTTP and WebSocket cycles, `receive`/`send`,
//! lifespan). Runs in the daemon process.
#![forbid(unsafe_code)]

pub mod scope;

#[cfg(not(any(test, fuzzing)))]
pub mod call;
#[cfg(not(any(test, fuzzing)))]
pub mod link;
#[cfg(not(any(test, fuzzing)))]
pub mod loops;

#[cfg(not(any(test, fuzzing)))]
pub use call::{Kind, kind_of};
#[cfg(not(any(test, fuzzing)))]
pub use link::{Admitted, Host, Link};
#[cfg(not(any(test, fuzzing)))]
pub use loops::{Hooks, going_away, stop_all, submit};
