//! The WSGI layer: environ pieces, response-head validation, proxy headers (all pure) and the
//! Python-facing objects and request driver (`adapter`). No httpd calls live here: httpd is
//! reached through the `BodySource`/`ResponseSink` traits. Runs in the httpd child.
#![forbid(unsafe_code)]

pub mod adapter;
pub mod build;
pub mod environ;
pub mod front;
pub mod headers;
pub mod proxy;
pub mod route;
