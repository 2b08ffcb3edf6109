//! The WSGI layer: environ pieces, response-head validation, proxy headers (all pure), the
//! Python-facing objects and request driver (`adapter`), each interpreter's request objects
//! (`front`), the one environ builder (`build`) and the log router (`route`). No httpd calls
//! live here: httpd is reached through the `BodySource`/`ResponseSink` traits. Runs in the
//! httpd child (embedded mode) and in daemon processes.
#![forbid(unsafe_code)]

pub mod adapter;
pub mod build;
pub mod environ;
pub mod front;
pub mod headers;
pub mod proxy;
pub mod route;
