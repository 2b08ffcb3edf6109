//! The settings that apply to one request (the alias options over the directory's, `%{...}`
//! expanded, and whether its application group runs in the main interpreter), the facts those
//! expansions read (`with_facts`, shared with the auth and dispatch scripts) and the refusal
//! helper the request path shares. Runs in the httpd child.
#![forbid(unsafe_code)]

use std::ffi::{CStr, c_int};

use super::translate::{ALIAS_ID_NOTE, INTERFACE_NOTE};
use crate::config::{DirConfig, GlobalConfig, HeadMode, Interface};
use crate::httpd::request::Request;
use crate::wsgi::adapter::Level;
use crate::wsgi::environ::{self, GroupFacts};

/// Settings that apply to this request after the alias options override the directory's.
#[derive(Clone)]
pub struct RequestSettings {
    pub process_group: String,
    pub application_group: String,
    /// Run the application group in the main interpreter (see `RequestMeta`).
    pub main_interpreter: bool,
    pub callable_object: String,
    /// The application interface forced by the alias or the directory (`Auto`: detected).
    pub interface: Interface,
    pub pass_authorization: bool,
    pub script_reloading: bool,
    pub chunked_request: bool,
    pub map_head_to_get: HeadMode,
    pub enable_sendfile: bool,
    pub ignore_activity: bool,
    /// `WSGIWebSocketMaxMessage` (default: `websocket::MAX_MESSAGE`).
    pub websocket_max_message: usize,
    /// The `WSGIHandlerScript` serving the request (`mod_wsgi.handler_script`), if any.
    pub handler_script: Option<String>,
    /// `WSGIPassApacheRequest` (embedded mode only, as mod_wsgi).
    pub pass_apache_request: bool,
}

pub fn settings(
    req: Request,
    g: &GlobalConfig,
    d: &DirConfig,
    facts: &GroupFacts<'_>,
) -> RequestSettings {
    let notes = req.notes();
    let note = |k: &CStr| {
        notes
            .get(k)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    };
    let pg = note(c"mod_wsgi.process_group").or_else(|| d.process_group.clone());
    let ag = note(c"mod_wsgi.application_group").or_else(|| d.application_group.clone());
    let co = note(c"mod_wsgi.callable_object").or_else(|| d.callable_object.clone());
    let pa = note(c"mod_wsgi.pass_authorization")
        .map(|v| v == "1")
        .or(d.pass_authorization);
    // mod_wsgi's default: one application group per script mount.
    let application_group = environ::expand_group(ag.as_deref().unwrap_or("%{RESOURCE}"), facts);
    let process_group = environ::expand_group(pg.as_deref().unwrap_or("%{GLOBAL}"), facts);
    // The one-group rule (config::groups): %{GLOBAL}, a sole alias, or its process's group.
    let alias = note(ALIAS_ID_NOTE).and_then(|id| id.parse::<usize>().ok());
    let main_interpreter = g.groups_plan.runs_in_main(
        alias.map(|id| (id, facts.script_name)),
        &process_group,
        &application_group,
    );
    RequestSettings {
        main_interpreter,
        application_group,
        process_group,
        callable_object: match co.as_deref() {
            Some(c) => {
                let v = environ::expand_callable(c, facts.env);
                if v.is_empty() {
                    "application".into()
                } else {
                    v
                }
            }
            None => "application".into(),
        },
        interface: note(INTERFACE_NOTE)
            .and_then(|v| Interface::parse(&v))
            .or(d.interface)
            .unwrap_or_default(),
        pass_authorization: pa.unwrap_or(false),
        script_reloading: d.script_reloading.unwrap_or(true),
        chunked_request: d.chunked_request.unwrap_or(false),
        map_head_to_get: d.map_head_to_get.unwrap_or(HeadMode::Auto),
        enable_sendfile: d.enable_sendfile.unwrap_or(false),
        ignore_activity: d.ignore_activity.unwrap_or(false),
        websocket_max_message: d
            .websocket_max_message
            .map_or(super::websocket::MAX_MESSAGE, |n| n as usize),
        handler_script: None,
        pass_apache_request: d.pass_apache_request.unwrap_or(false),
    }
}

/// Calls `f` with what `%{...}` expansions need to know about the request, and its
/// SCRIPT_NAME and PATH_INFO as mod_wsgi splits them.
pub fn with_facts<R>(
    req: Request,
    g: &GlobalConfig,
    f: impl FnOnce(&GroupFacts<'_>, Vec<u8>, Vec<u8>) -> R,
) -> R {
    let uri = req.uri().unwrap_or(b"");
    let (script_name, path_info) = environ::script_name_and_path_info(uri, req.path_info());
    let server_hostname = String::from_utf8_lossy(req.server_hostname().unwrap_or(b""));
    let hostname = req.hostname().map(String::from_utf8_lossy);
    // mod_wsgi names %{RESOURCE} groups by the lower-cased SCRIPT_NAME when case-insensitive.
    let group_script_name = if g.case_sensitive {
        script_name.clone()
    } else {
        script_name.to_ascii_lowercase()
    };
    let (notes, subprocess_env) = (req.notes(), req.subprocess_env());
    let env_lookup = |k: &str| -> Option<String> {
        notes
            .get_str(k)
            .or_else(|| subprocess_env.get_str(k))
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .or_else(|| std::env::var(k).ok())
    };
    let facts = GroupFacts {
        server_hostname: &server_hostname,
        server_port: req.server_port(),
        hostname: hostname.as_deref(),
        script_name: &group_script_name,
        env: &env_lookup,
    };
    f(&facts, script_name, path_info)
}

/// Logs why a request is refused and returns the status to answer.
pub fn refuse(req: Request, status: u16, code: crate::error::Code, msg: &str) -> c_int {
    req.log(Level::Error, &format!("{}: {msg}", code.as_str()));
    c_int::from(status)
}
