//! The auth phases' Python scripts, run in the httpd child as mod_wsgi runs them (always
//! embedded, whatever process group serves the request): `WSGIAccessScript`'s `allow_access`
//! in the access phase, `WSGIAuthUserScript`'s `check_password` / `get_realm_hash` behind the
//! `wsgi` authn provider, `WSGIAuthGroupScript`'s `groups_for_user` behind the `wsgi-group`
//! authz provider. An error never lets a request through: it is a 500 and a log line (the
//! traceback for an exception). Runs in the httpd child.
#![forbid(unsafe_code)]

use std::ffi::c_int;

use pyo3::prelude::*;
use pyo3::types::{PyBool, PyString};

use super::hook_script::{self, Script, latin1_answer, type_name};
use super::settings::{settings, with_facts};
use crate::config::{DirConfig, HookScript};
use crate::error::Code;
use crate::httpd::base::global;
use crate::httpd::ffi::{DECLINED, HTTP_FORBIDDEN, HTTP_INTERNAL_SERVER_ERROR, OK};
use crate::httpd::request::Request;
use crate::wsgi::adapter::Level;
use crate::wsgi::environ::expand_group;

/// An authn provider's answer.
#[derive(Debug, PartialEq, Eq)]
pub enum Authn {
    Granted,
    Denied,
    /// The user's realm hash (`md5("user:realm:password")` in hex), for Digest.
    Found(Vec<u8>),
    NotFound,
    Error,
}

/// An authz provider's answer.
#[derive(Debug, PartialEq, Eq)]
pub enum Authz {
    Granted,
    Denied,
    /// No authenticated user yet: httpd authenticates first.
    NoUser,
    Error,
}

/// Which of the three scripts.
#[derive(Clone, Copy)]
enum Kind {
    Access,
    User,
    Group,
}

impl Kind {
    fn directive(self) -> &'static str {
        match self {
            Kind::Access => "WSGIAccessScript",
            Kind::User => "WSGIAuthUserScript",
            Kind::Group => "WSGIAuthGroupScript",
        }
    }

    fn script(self, d: &DirConfig) -> Option<&HookScript> {
        match self {
            Kind::Access => d.access_script.as_ref(),
            Kind::User => d.auth_user_script.as_ref(),
            Kind::Group => d.auth_group_script.as_ref(),
        }
    }

    /// What uses the script, for the line saying none is configured.
    fn user_of(self) -> &'static str {
        match self {
            Kind::Access => "the access check",
            Kind::User => "AuthBasicProvider/AuthDigestProvider wsgi",
            Kind::Group => "Require wsgi-group",
        }
    }
}

/// Calls `function(environ, *args)` of the script `kind` configures where the request is,
/// and reads its result with `answer` (an `Err` says what was wrong with it). `None` on any
/// failure, which has been logged.
fn call<R>(
    req: Request,
    kind: Kind,
    function: &str,
    args: &[&[u8]],
    answer: impl FnOnce(&Bound<'_, PyAny>) -> Result<R, String>,
) -> Option<R> {
    let no_dir_config = DirConfig::default();
    let dcfg = req.dir_config().unwrap_or(&no_dir_config);
    let directive = kind.directive();
    let Some(script) = kind.script(dcfg) else {
        req.log(
            Level::Error,
            &format!(
                "{}: {} is used here but no {directive} applies to this location; add one \
                 (or use another provider)",
                Code::AuthScript.as_str(),
                kind.user_of()
            ),
        );
        return None;
    };
    let g = global();
    let (mut set, script_name, path_info, group) = with_facts(req, &g, |facts, sn, pi| {
        let group = expand_group(&script.application_group, facts);
        (settings(req, &g, dcfg, facts), sn, pi, group)
    });
    // The environ describes the auth phase, not the application: no credentials, mod_wsgi's
    // embedded process group, the script's own application group.
    set.pass_authorization = false;
    set.process_group = String::new();
    set.application_group = group.clone();
    set.callable_object = function.to_string();
    let script = Script {
        directive,
        path: &script.path,
        group,
    };
    hook_script::run(
        req,
        &g,
        dcfg,
        &set,
        &script_name,
        &path_info,
        &script,
        |s| {
            let v = s.call(function, args)?;
            answer(&v).map_err(|why| s.wrong(function, &why))
        },
    )
}

/// `check_password(environ, user, password)`: True, False, None (no such user) or the user
/// name to use (a `str`, which becomes `REMOTE_USER`).
pub fn check_password(req: Request, user: &[u8], password: &[u8]) -> Authn {
    let answer = call(req, Kind::User, "check_password", &[user, password], |v| {
        if let Ok(b) = v.cast::<PyBool>() {
            return Ok(Some(b.is_true()));
        }
        if v.is_none() {
            return Ok(None);
        }
        if let Ok(s) = v.cast::<PyString>() {
            let name = s.to_cow().map_err(|e| format!("returned a bad str: {e}"))?;
            req.set_user(name.as_bytes());
            return Ok(Some(true));
        }
        Err(format!(
            "must return True, False, None or the user name as a str, not {}",
            type_name(v)
        ))
    });
    match answer {
        Some(Some(true)) => Authn::Granted,
        Some(Some(false)) => Authn::Denied,
        Some(None) => Authn::NotFound,
        None => Authn::Error,
    }
}

/// `get_realm_hash(environ, user, realm)`: None (no such user) or the hex MD5 of
/// `user:realm:password`, as `bytes` or a latin-1 `str`.
pub fn get_realm_hash(req: Request, user: &[u8], realm: &[u8]) -> Authn {
    let answer = call(req, Kind::User, "get_realm_hash", &[user, realm], |v| {
        if v.is_none() {
            return Ok(None);
        }
        if let Some(hash) = latin1_answer(v)? {
            return Ok(Some(hash));
        }
        Err(format!(
            "must return None or the hash as bytes or str, not {}",
            type_name(v)
        ))
    });
    match answer {
        Some(Some(hash)) => Authn::Found(hash),
        Some(None) => Authn::NotFound,
        None => Authn::Error,
    }
}

/// `Require wsgi-group NAME...`: granted when `groups_for_user(environ, user)` names one of
/// the groups (compared without regard to case, as httpd's tables compare them), else denied.
/// `WSGIGroupAuthoritative` changes nothing, as in mod_wsgi under httpd 2.4, where
/// `<RequireAll>`/`<RequireAny>` combine the providers' answers.
pub fn check_groups(req: Request, require_line: &[u8]) -> Authz {
    let Some(user) = req.user().map(<[u8]>::to_vec) else {
        return Authz::NoUser;
    };
    let groups = call(req, Kind::Group, "groups_for_user", &[&user], |v| {
        let mut out = Vec::new();
        let iter = v.try_iter().map_err(|_| {
            format!(
                "must return an iterable of group names, not {}",
                type_name(v)
            )
        })?;
        for item in iter {
            let item = item.map_err(|e| format!("raised while iterated: {e}"))?;
            match latin1_answer(&item)? {
                Some(name) => out.push(name),
                None => {
                    return Err(format!(
                        "must return group names as str or bytes, not {}",
                        type_name(&item)
                    ));
                }
            }
        }
        Ok(out)
    });
    let Some(groups) = groups else {
        return Authz::Error;
    };
    let wanted = crate::config::tokenize::words(&String::from_utf8_lossy(require_line));
    if wanted
        .iter()
        .any(|w| groups.iter().any(|g| g.eq_ignore_ascii_case(w.as_bytes())))
    {
        return Authz::Granted;
    }
    req.log(
        Level::Info,
        &format!(
            "user '{}' is not a member of any group in 'Require wsgi-group {}'",
            String::from_utf8_lossy(&user),
            String::from_utf8_lossy(require_line)
        ),
    );
    Authz::Denied
}

/// The access phase: `allow_access(environ, host)` is True (allowed), False (403) or None
/// (no verdict); `DECLINED` where no `WSGIAccessScript` applies.
pub fn check_access(req: Request) -> c_int {
    if req.dir_config().is_none_or(|d| d.access_script.is_none()) {
        return DECLINED;
    }
    let host = req.remote_host();
    let verdict = call(req, Kind::Access, "allow_access", &[&host], |v| {
        if let Ok(b) = v.cast::<PyBool>() {
            return Ok(Some(b.is_true()));
        }
        if v.is_none() {
            return Ok(None);
        }
        Err(format!(
            "must return True, False or None, not {}",
            type_name(v)
        ))
    });
    match verdict {
        Some(Some(true)) => OK,
        Some(None) => DECLINED,
        Some(Some(false)) => {
            req.log(
                Level::Info,
                &format!(
                    "client {} denied by WSGIAccessScript",
                    String::from_utf8_lossy(&host)
                ),
            );
            HTTP_FORBIDDEN
        }
        None => HTTP_INTERNAL_SERVER_ERROR,
    }
}
