//! Running a request's helper scripts in the httpd child, outside the application: the auth
//! phases' scripts (`auth.rs`) and `WSGIDispatchScript` (`dispatch.rs`). One place loads the
//! script in its application group's interpreter, builds its environ (the request's, without
//! a body), calls its functions and logs what goes wrong. Runs in the httpd child.
#![forbid(unsafe_code)]

use std::sync::Arc;

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyString, PyTuple};

use super::settings::RequestSettings;
use crate::config::{DirConfig, GlobalConfig};
use crate::error::Code;
use crate::httpd::base::main_log;
use crate::httpd::request::Request;
use crate::python::{self, interp};
use crate::wsgi::adapter::{Level, LogFn, log_exception};
use crate::wsgi::build;
use crate::wsgi::environ::latin1;

/// Which script runs, and for what.
pub struct Script<'a> {
    /// The directive that names it (`WSGIAuthUserScript`, ...).
    pub directive: &'static str,
    pub path: &'a str,
    /// Its application group, expanded (`""`: `%{GLOBAL}`).
    pub group: String,
}

/// The script loaded for one request: its functions are called with the request's environ.
pub struct Loaded<'py, 'a> {
    py: Python<'py>,
    module: Bound<'py, PyAny>,
    environ: Bound<'py, PyDict>,
    log: &'a LogFn,
    script: &'a Script<'a>,
}

/// What went wrong with a call (already logged).
pub struct Failed;

impl<'py> Loaded<'py, '_> {
    /// Whether the script defines `function`.
    pub fn has(&self, function: &str) -> bool {
        self.module.hasattr(function).unwrap_or(false)
    }

    /// `function(environ, *args)`, the arguments as latin-1 text (any bytes a client sends
    /// become a `str`, never an error). A missing function (`RW0006`) or an exception (its
    /// traceback, `RW0007`) is logged.
    pub fn call(&self, function: &str, args: &[&[u8]]) -> Result<Bound<'py, PyAny>, Failed> {
        let (directive, path) = (self.script.directive, self.script.path);
        let Ok(func) = self.module.getattr(function) else {
            (self.log)(
                Level::Error,
                &format!(
                    "{}: the {directive} '{path}' does not define {function}()",
                    Code::NoCallable.as_str()
                ),
            );
            return Err(Failed);
        };
        let mut all = vec![self.environ.clone().into_any()];
        all.extend(
            args.iter()
                .map(|a| PyString::new(self.py, &latin1(a)).into_any()),
        );
        PyTuple::new(self.py, all)
            .and_then(|t| func.call1(t))
            .map_err(|e| {
                log_exception(
                    self.py,
                    &e,
                    self.log,
                    &format!(
                        "{}: exception occurred in {function}() of {directive} '{path}'",
                        Code::AppException.as_str()
                    ),
                );
                Failed
            })
    }

    /// Logs that `function` answered something it may not (`why` says what, `RW0025`).
    pub fn wrong(&self, function: &str, why: &str) -> Failed {
        (self.log)(
            Level::Error,
            &format!(
                "{}: {function}() of {} '{}' {why}",
                Code::AuthScript.as_str(),
                self.script.directive,
                self.script.path
            ),
        );
        Failed
    }
}

/// A script's answer that must be text: `bytes`, or a `str` of latin-1 characters (as mod_wsgi
/// takes user names, hashes, group names), as bytes; `Ok(None)` when it is neither. `Err` says
/// what is wrong with a `str`.
pub fn latin1_answer(v: &Bound<'_, PyAny>) -> Result<Option<Vec<u8>>, String> {
    if let Ok(b) = v.cast::<PyBytes>() {
        return Ok(Some(b.as_bytes().to_vec()));
    }
    let Ok(s) = v.cast::<PyString>() else {
        return Ok(None);
    };
    s.to_cow()
        .map_err(|e| format!("returned a bad str: {e}"))?
        .chars()
        .map(|c| u8::try_from(u32::from(c)).ok())
        .collect::<Option<Vec<u8>>>()
        .map(Some)
        .ok_or_else(|| "returned a str with characters outside latin-1".to_string())
}

/// The type name of a script's answer, for the line saying it is wrong.
pub fn type_name(v: &Bound<'_, PyAny>) -> String {
    v.get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "?".into())
}

/// Loads `script` in its group's interpreter and hands it to `f` with an environ built from
/// `set` (the request's settings as the script should see them) and the request. `None` when
/// Python does not run in this child or the script cannot be loaded (logged).
#[allow(clippy::too_many_arguments)]
pub fn run<R>(
    req: Request,
    g: &GlobalConfig,
    dcfg: &DirConfig,
    set: &RequestSettings,
    script_name: &[u8],
    path_info: &[u8],
    script: &Script<'_>,
    f: impl FnOnce(&Loaded<'_, '_>) -> Result<R, Failed>,
) -> Option<R> {
    let log: LogFn = Arc::new(move |l, m| req.log(l, m));
    if !python::ready() {
        log(
            Level::Error,
            &format!(
                "{}: {} '{}' cannot run: Python does not run in the httpd children \
                 (WSGIRestrictEmbedded On); this script always runs there, as in mod_wsgi",
                Code::AuthScript.as_str(),
                script.directive,
                script.path
            ),
        );
        return None;
    }
    let request = super::environ::describe(req, set, dcfg, script_name, path_info, 0);
    let which = if g.groups_plan.runs_in_main(None, "", &script.group) {
        interp::Which::Main
    } else {
        interp::Which::Group(&script.group)
    };
    // The script's mtime matters only for reloading (a stat per request otherwise saved).
    let mtime = set
        .script_reloading
        .then(|| crate::sys::mtime_us(script.path))
        .flatten();
    let ran = interp::enter(which, |py, it| {
        let module = python::load_module(
            py,
            it,
            script.path,
            mtime,
            set.script_reloading,
            g.case_sensitive,
            &log,
        )?;
        let (environ, errors) = match build::script_environ(py, &it.kit, &request, &log, main_log())
        {
            Ok(v) => v,
            Err(e) => {
                log_exception(py, &e, &log, "cannot build the environ");
                return None;
            }
        };
        let loaded = Loaded {
            py,
            module,
            environ,
            log: &log,
            script,
        };
        let out = f(&loaded).ok();
        errors.get().end();
        out
    });
    ran.unwrap_or_else(|why| {
        log(Level::Error, &why);
        None
    })
}
