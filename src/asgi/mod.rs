//! ASGI 3 applications, served in daemon processes and (embedded) in httpd children. A worker
//! thread reads the request as for WSGI, looks at the callable (`call::kind_of`) and hands an
//! ASGI request to its interpreter's event loop (`loops::hand_over`), which keeps the
//! connection and drives it through its `link::Link` to the httpd child's worker thread (in a
//! daemon, the connection from the child; embedded, a socket pair: `child::asgi`); `scope` is
//! the pure part (the scope from the request core), `server.py` the asyncio side (HTTP and
//! WebSocket cycles, `receive`/`send`, lifespan). Runs in daemon processes and httpd children.
#![forbid(unsafe_code)]

pub mod scope;

#[cfg(not(any(test, fuzzing)))]
pub mod call;
#[cfg(not(any(test, fuzzing)))]
pub mod link;
#[cfg(not(any(test, fuzzing)))]
pub mod loops;

#[cfg(not(any(test, fuzzing)))]
pub use call::{Kind, kind_of, refusal};
#[cfg(not(any(test, fuzzing)))]
pub use link::{Admitted, Host, Link};
#[cfg(not(any(test, fuzzing)))]
pub use loops::{Hooks, OnFailure, going_away, hand_over, stop_all, submit};
