//! mod_rwsgi: an Apache httpd 2.4 module that runs Python WSGI and ASGI applications (mod_wsgi
//! drop-in).
//! This file declares the crate's layers; the exported `rwsgi_module` lives in `apache`.
//! Loaded by the httpd parent (configuration) and run in every httpd child (requests).

pub mod asgi;
pub mod board;
pub mod config;
pub mod diag;
pub mod error;
pub mod protocol;
mod pybytes;
pub mod request;
pub mod websocket;
pub mod wsgi;

/// Properties checked by the fuzz targets (fuzz/) and the corpus replay test; not in the module.
#[cfg(any(test, fuzzing))]
pub mod fuzzcheck;

#[cfg(not(any(test, fuzzing)))]
mod child;
#[cfg(not(any(test, fuzzing)))]
mod daemon;
#[cfg(not(any(test, fuzzing)))]
pub mod httpd;
#[cfg(not(any(test, fuzzing)))]
mod parent;
#[cfg(not(any(test, fuzzing)))]
mod python;
// `sys` (and the connection type built on it) also build in unit tests, which pass real
// descriptors over real socket pairs; most of `sys` is unused there.
#[cfg(test)]
#[allow(dead_code)]
#[path = "daemon/conn.rs"]
mod daemon_conn;
#[cfg(not(fuzzing))]
#[cfg_attr(test, allow(dead_code))]
mod sys;

/// The version reported as `mod_wsgi.version`-style tuples and in the log.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
