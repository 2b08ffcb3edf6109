//! mod_rwsgi: an Apache httpd 2.4 module that runs Python WSGI applications (mod_wsgi drop-in).
//! This file declares the crate's layers; the exported `rwsgi_module` lives in `apache::module`.
//! Loaded by the httpd parent (configuration) and run in every httpd child (requests).

pub mod config;
pub mod error;
pub mod protocol;
pub mod wsgi;

#[cfg(not(test))]
pub mod apache;
#[cfg(not(test))]
mod daemon;
#[cfg(not(test))]
mod ffi;
#[cfg(not(test))]
mod python;
#[cfg(not(test))]
mod sys;

/// The version reported as `mod_wsgi.version`-style tuples and in the log.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
