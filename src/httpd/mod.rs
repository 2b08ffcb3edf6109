//! The httpd side, the only place (with `sys.rs` and the Python FFI) where `unsafe` lives:
//! `module` (the exported `rwsgi_module`, directives and hook entries, which hand over to
//! `parent/` and `child/`), `base` (module slots, panic guard, logging, the global
//! configuration) and the safe handles the rest of the crate uses: `request` (request_rec,
//! tables, output), `server` (server_rec), `pool` (pools, kept listeners), `process` (fork,
//! other-child registration) and `scoreboard` (a snapshot for `mod_wsgi.server_metrics()`).
//! Runs in the httpd parent and children (and, forked, the daemons).

pub(crate) mod base;
pub mod ffi;
pub mod module;
pub(crate) mod pool;
pub(crate) mod process;
pub(crate) mod request;
pub(crate) mod scoreboard;
pub(crate) mod server;
