//! The `wsgi-script` handler: works out the settings that apply to the request (alias options
//! over the directory's), asks the admission rules (`request::admission`) what to do, and
//! runs the request embedded or sends it to its daemon group (counting it on the board); the
//! operators' handlers (`rwsgi-metrics`, `rwsgi-health`) are `observe.rs`'s. Runs in the httpd
//! child.
#![forbid(unsafe_code)]

use std::ffi::c_int;
use std::time::Duration;

use super::observe;
use super::settings::{refuse, settings, with_facts};
use super::translate::{ALIASED_NOTE, HANDLER};
use crate::config::{DirConfig, HandlerScript};
use crate::error::Code;
use crate::httpd::base::global;
use crate::httpd::ffi::{DECLINED, OK};
use crate::httpd::request::{FileType, Request};
use crate::python;
use crate::request::admission::{self, Admission, Facts, Target};
use crate::wsgi::adapter::Level;
use crate::wsgi::environ;

/// The handler hook: `wsgi-script`, or a `WSGIHandlerScript`'s name; DECLINED for any other.
pub fn handler(req: Request) -> c_int {
    match req.handler() {
        Some(h) if h == HANDLER.to_bytes() || h == b"application/x-httpd-wsgi" => handle(req, None),
        Some(h) if h == observe::METRICS_HANDLER => observe::metrics(req),
        Some(h) if h == observe::HEALTH_HANDLER => observe::health(req),
        Some(h) => match req
            .dir_config()
            .and_then(|d| d.handler_scripts.iter().find(|s| s.name.as_bytes() == h))
        {
            Some(script) => handle(req, Some(script)),
            None => DECLINED,
        },
        None => DECLINED,
    }
}

/// Serves a `wsgi-script` request, or (`handler_script`) a `WSGIHandlerScript`'s: its
/// `handle_request` serves the requested file, which must exist but needs no `ExecCGI`.
fn handle(req: Request, handler_script: Option<&HandlerScript>) -> c_int {
    let path_info = req.path_info();
    let filename = String::from_utf8_lossy(req.filename().unwrap_or(b"")).into_owned();
    let no_dir_config = DirConfig::default();
    let dcfg: &DirConfig = req.dir_config().unwrap_or(&no_dir_config);
    let g = global();
    let (mut set, script_name, path_info_v) =
        with_facts(req, &g, |facts, script_name, path_info| {
            let mut set = settings(req, &g, dcfg, facts);
            if let Some(h) = handler_script {
                if let Some(pg) = &h.process_group {
                    set.process_group = environ::expand_group(pg, facts);
                }
                if let Some(ag) = &h.application_group {
                    set.application_group = environ::expand_group(ag, facts);
                }
                if let Some(pa) = h.pass_authorization {
                    set.pass_authorization = pa;
                }
                set.callable_object = "handle_request".into();
                set.handler_script = Some(h.path.clone());
                set.main_interpreter =
                    g.groups_plan
                        .runs_in_main(None, &set.process_group, &set.application_group);
            }
            (set, script_name, path_info)
        });
    // The script that runs: the handler script, else the requested file.
    let script = handler_script.map_or(filename.as_str(), |h| h.path.as_str());
    if let Some(script) = &dcfg.dispatch_script
        && let Err(rc) = super::dispatch::apply(req, &g, dcfg, &mut set, script)
    {
        return rc;
    }
    let (notes, headers_in) = (req.notes(), req.headers_in());

    let admission = admission::admit(&Facts {
        aliased: notes.get(ALIASED_NOTE) == Some(HANDLER.to_bytes()),
        exec_cgi: req.exec_cgi_allowed() || handler_script.is_some(),
        target: match req.file_type() {
            FileType::Missing => Target::Missing,
            FileType::Directory => Target::Directory,
            FileType::Other => Target::File,
        },
        filename: &filename,
        rejected_path_info: req.rejects_path_info() && path_info.is_some_and(|p| !p.is_empty()),
        transfer_encoding: headers_in.get(c"Transfer-Encoding"),
        // ASGI servers de-chunk request bodies: an alias or directory that says ASGI accepts
        // chunked bodies without WSGIChunkedRequest.
        chunked_allowed: set.chunked_request || set.interface == crate::config::Interface::Asgi,
        content_length: headers_in.get(c"Content-Length"),
        body_limit: req.body_limit(),
        process_group: &set.process_group,
        restrict_process: dcfg.restrict_process.as_deref(),
        restrict_embedded: g.restrict_embedded,
        python_ready: python::ready(),
    });
    let mtime = match handler_script {
        None => req.file_mtime(),
        // Only reloading reads it: no stat per request without it.
        Some(h) if set.script_reloading => crate::sys::mtime_us(&h.path).unwrap_or(0),
        Some(_) => 0,
    };
    let prepare = || super::environ::prepare(req, &set, dcfg, &script_name, &path_info_v, mtime);
    let record = match admission {
        Admission::Daemon => observe::record_of(&set.process_group),
        _ => None,
    };
    observe::started(record);
    let to_daemon = matches!(admission, Admission::Daemon);
    let rc = match admission {
        Admission::Refuse {
            status,
            code,
            message,
        } => refuse(req, status, code, &message),
        Admission::TooLarge => {
            // Let httpd's own input filter produce the 413.
            req.discard_body();
            OK
        }
        Admission::Daemon => super::daemon_client::serve(req, &set, dcfg, prepare),
        Admission::Embedded => match prepare() {
            Ok(request) => super::embedded::serve(req, &g, &set, script, request),
            Err(rc) => rc,
        },
    };
    observe::ended(req, record, rc);
    if let Some(limit) = g.slow_requests {
        let group = to_daemon.then_some(set.process_group.as_str());
        log_if_slow(req, limit, rc, group);
    }
    rc
}

/// `WSGISlowRequests`: one warning for a request that took longer than `limit`, from the
/// moment httpd read its request line to the end of its response (WebSocket sessions aside).
fn log_if_slow(req: Request, limit: Duration, rc: c_int, daemon_group: Option<&str>) {
    if req.status() == 101 {
        return;
    }
    let took = observe::since_request_line(req);
    if took <= limit {
        return;
    }
    let c = req.cgi();
    let status = if rc == OK { req.status() } else { rc };
    let place = match daemon_group {
        Some(g) => format!("daemon group '{g}'"),
        None => "embedded mode".to_string(),
    };
    req.log_with_id(
        Level::Warning,
        &format!(
            "{}: slow request: {} {} took {:.3} s (WSGISlowRequests {} s), status {status}, \
             {place}",
            Code::SlowRequest.as_str(),
            String::from_utf8_lossy(c.method.unwrap_or(b"")),
            String::from_utf8_lossy(c.request_uri.unwrap_or(b"")),
            took.as_secs_f64(),
            limit.as_secs_f64()
        ),
    );
}
