//! `WSGIDispatchScript`: before a request is routed, the script's `process_group(environ)`,
//! `application_group(environ)` and `callable_object(environ)` (each optional; `None` keeps
//! the configured value) choose where and what runs, as in mod_wsgi. Runs in the httpd child.
#![forbid(unsafe_code)]

use std::ffi::c_int;

use pyo3::prelude::*;

use super::hook_script::{self, Script, latin1_answer, type_name};
use super::settings::{RequestSettings, with_facts};
use crate::config::{DirConfig, GlobalConfig, HookScript};
use crate::httpd::ffi::HTTP_INTERNAL_SERVER_ERROR;
use crate::httpd::request::Request;
use crate::wsgi::environ::{expand_callable, expand_group};

const FUNCTIONS: [&str; 3] = ["process_group", "application_group", "callable_object"];

/// A function's answer as text: `str` (latin-1) or `bytes`, as mod_wsgi takes them.
fn text(v: &Bound<'_, PyAny>) -> Result<String, String> {
    match latin1_answer(v)? {
        Some(b) => Ok(b.iter().map(|&c| char::from(c)).collect()),
        None => Err(format!("must return None or a str, not {}", type_name(v))),
    }
}

/// Runs the dispatch script and applies its answers to `set` (expanded as the directives'
/// values are: `%{GLOBAL}`, `%{ENV:var}`, ...). `Err` is the status to answer (500, logged).
pub fn apply(
    req: Request,
    g: &GlobalConfig,
    dcfg: &DirConfig,
    set: &mut RequestSettings,
    script: &HookScript,
) -> Result<(), c_int> {
    with_facts(req, g, |facts, script_name, path_info| {
        let s = Script {
            directive: "WSGIDispatchScript",
            path: &script.path,
            group: expand_group(&script.application_group, facts),
        };
        // The script sees the request as configured, without its credentials.
        let mut view = set.clone();
        view.pass_authorization = false;
        let answers = hook_script::run(req, g, dcfg, &view, &script_name, &path_info, &s, |l| {
            let mut out: [Option<String>; 3] = [None, None, None];
            for (slot, function) in out.iter_mut().zip(FUNCTIONS) {
                if !l.has(function) {
                    continue;
                }
                let v = l.call(function, &[])?;
                if !v.is_none() {
                    *slot = Some(text(&v).map_err(|why| l.wrong(function, &why))?);
                }
            }
            Ok(out)
        })
        .ok_or(HTTP_INTERNAL_SERVER_ERROR)?;
        let [pg, ag, co] = answers;
        if let Some(pg) = pg {
            set.process_group = expand_group(&pg, facts);
        }
        if let Some(ag) = ag {
            set.application_group = expand_group(&ag, facts);
        }
        if let Some(co) = co {
            let v = expand_callable(&co, facts.env);
            set.callable_object = if v.is_empty() {
                "application".into()
            } else {
                v
            };
        }
        // With a dispatch script the one-group rule is off: only %{GLOBAL} is the main one.
        set.main_interpreter =
            g.groups_plan
                .runs_in_main(None, &set.process_group, &set.application_group);
        Ok(())
    })
}
