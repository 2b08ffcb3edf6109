//! Embedded mode: one request run by the application in this httpd child's interpreter,
//! through `wsgi::adapter` with httpd's body and output filters, or, for an ASGI application,
//! handed to the child's event loop (`asgi`). Runs in the httpd child.
#![forbid(unsafe_code)]

use std::ffi::c_int;
use std::sync::Arc;

use pyo3::prelude::*;

use super::environ::recycle_environ;
use super::multithread_multiprocess;
use super::response::{ApacheBody, ApacheResponse};
use super::settings::RequestSettings;
use crate::config::GlobalConfig;
use crate::error::Code;
use crate::httpd::base::main_log;
use crate::httpd::ffi::{HTTP_GATEWAY_TIME_OUT, HTTP_INTERNAL_SERVER_ERROR, OK};
use crate::httpd::request::Request;
use crate::python::{self, Interp, interp};
use crate::request as core;
use crate::wsgi::adapter::{self, Level, LogFn, Outcome, RequestIo};
use crate::wsgi::build::{self, ProcessFacts};
use crate::wsgi::route::{self, Route};

/// Runs the request in this child's interpreter.
pub fn serve(
    req: Request,
    g: &GlobalConfig,
    set: &RequestSettings,
    script: &str,
    request: core::Request<String>,
) -> c_int {
    let log: LogFn = Arc::new(move |l, msg| req.log(l, msg));
    route::set(Some(Route {
        plain: Arc::clone(&log),
        with_id: Arc::new(move |l, msg| req.log_with_id(l, msg)),
    }));
    let which = interp::Which::for_request(set.main_interpreter, &set.application_group);
    // A mount known to be ASGI (in the main interpreter) goes to the child's event loop
    // without the GIL; if the loop does not take it, it is served as any other below.
    let mut request = request;
    if matches!(which, interp::Which::Main)
        && super::asgi::known(script, &set.callable_object, set.interface)
    {
        match super::asgi::serve_known(req, request, set) {
            super::asgi::Known::Served(status) => {
                route::set(None);
                return status;
            }
            super::asgi::Known::Back {
                request: r,
                refused,
            } => {
                if refused {
                    super::asgi::forget(script, &set.callable_object, set.interface);
                }
                request = r;
            }
        }
    }
    let ran = interp::enter(which, |py, it| {
        run(py, it, req, g, set, script, request, Arc::clone(&log))
    });
    let ran = ran.unwrap_or_else(|why| {
        log(Level::Error, &why);
        Ran::Wsgi(Outcome::ServerError, None)
    });
    // The end of the response (WSGI), or all of it (ASGI), goes through the output filters
    // without the GIL.
    let status = match ran {
        Ran::Wsgi(outcome, finish) => {
            if let Some(f) = finish {
                f.run();
            }
            match outcome {
                Outcome::ServerError => HTTP_INTERNAL_SERVER_ERROR,
                Outcome::TimedOut => HTTP_GATEWAY_TIME_OUT,
                Outcome::Done | Outcome::Aborted => OK,
            }
        }
        Ran::Asgi(handed) => super::asgi::serve(req, handed, set),
        Ran::Answered(status) => status,
    };
    route::set(None);
    status
}

/// What the interpreter part of a request did.
enum Ran {
    /// A WSGI application ran (the end of its response still to pass the filters).
    Wsgi(Outcome, Option<adapter::Finish>),
    /// An ASGI request went to the child's event loop: its response is still to serve.
    Asgi(super::asgi::Handed),
    /// Answered with this status without the application.
    Answered(c_int),
}

#[allow(clippy::too_many_arguments)]
fn run(
    py: Python<'_>,
    it: &Interp,
    req: Request,
    g: &GlobalConfig,
    set: &RequestSettings,
    script: &str,
    request: core::Request<String>,
    log: LogFn,
) -> Ran {
    let Some(app) = python::load_app(
        py,
        it,
        script,
        request.script_mtime(),
        set.script_reloading,
        g.case_sensitive,
        &set.callable_object,
        &log,
    ) else {
        return Ran::Answered(HTTP_INTERNAL_SERVER_ERROR);
    };
    let kind = crate::asgi::kind_of(py, it, &app, set.interface, &log);
    if let Some(why) = crate::asgi::refusal(kind, &it.name, &set.callable_object, script) {
        log(Level::Error, &why);
        return Ran::Answered(HTTP_INTERNAL_SERVER_ERROR);
    }
    if kind == crate::asgi::Kind::Asgi {
        let mount = (script, set.callable_object.as_str(), set.interface);
        let handed = super::asgi::hand_over(py, req, g, &app, &request, mount, &log);
        recycle_environ(request.env);
        return match handed {
            Ok(h) => Ran::Asgi(h),
            Err(status) => Ran::Answered(status),
        };
    }
    let (multithread, multiprocess) = multithread_multiprocess();
    let process = ProcessFacts {
        multithread,
        multiprocess,
        run_once: false,
        daemon: false,
    };
    let body = Box::new(ApacheBody(req));
    let built =
        build::environ(py, &it.kit, &request, &process, body, &log, main_log()).and_then(|b| {
            if set.pass_apache_request {
                let capsule = python::pointer_capsule(py, req.address())?;
                b.environ.set_item("apache.request_rec", capsule)?;
            }
            Ok(b)
        });
    let head_request = request.meta.head_request;
    // WSGISlowRequests: what the watcher says of this request if it runs too long.
    let slow = g
        .slow_requests
        .map(|_| (request.status_text(), request.meta.request_start));
    recycle_environ(request.env);
    let built = match built {
        Ok(v) => v,
        Err(e) => {
            adapter::log_exception(
                py,
                &e,
                &log,
                &format!("{}: cannot build the environ", Code::AppException.as_str()),
            );
            return Ran::Wsgi(Outcome::ServerError, None);
        }
    };
    let io = RequestIo {
        sink: Box::new(ApacheResponse::new(req, set.enable_sendfile)),
        input: built.input,
        errors: built.errors,
        log,
        script: script.to_string(),
        stream_flush: true,
        head_request,
        stamps: built.stamps,
        events: it.events(py),
    };
    let _slow = slow.and_then(|(text, since)| python::slow::watch(|| text, since, &it.name));
    let (outcome, finish) = adapter::run(py, &it.kit, &app, built.environ, io);
    Ran::Wsgi(outcome, finish)
}
