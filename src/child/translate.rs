//! `translate_name`: claims the URLs under a `WSGIScriptAlias` (prefix or regex), pointing
//! the request at the script with the `wsgi-script` handler and passing the alias's options
//! on as request notes (and which alias it was, for the one-group rule). Runs in the httpd
//! child.
#![forbid(unsafe_code)]

use std::ffi::CStr;

use crate::config::AliasPattern;
use crate::httpd::request::Request;
use crate::wsgi::environ;

/// The handler name this module serves.
pub const HANDLER: &CStr = c"wsgi-script";

/// The note that says a `WSGIScriptAlias` claimed the request (no ExecCGI needed).
pub const ALIASED_NOTE: &CStr = c"alias-forced-type";

/// The note naming the alias that claimed the request (its id, in decimal).
pub const ALIAS_ID_NOTE: &CStr = c"mod_rwsgi.alias_id";

/// The note carrying the alias's `application-interface=`.
pub const INTERFACE_NOTE: &CStr = c"mod_rwsgi.interface";

/// Claims the request if a `WSGIScriptAlias` of its virtual host matches; true if claimed.
pub fn translate(req: Request) -> bool {
    let (Some(state), Some(uri)) = (req.server_state(), req.uri()) else {
        return false;
    };
    if state.cfg.aliases.is_empty() || (!uri.is_empty() && uri[0] != b'/') {
        return false;
    }
    for alias in &state.cfg.aliases {
        let filename: Vec<u8> = match (&alias.pattern, alias.regex_slot) {
            (AliasPattern::Prefix(loc), _) => {
                let l = environ::alias_matches(uri, loc.as_bytes());
                if l == 0 {
                    continue;
                }
                let rest = if loc == "/" { uri } else { &uri[l..] };
                [alias.target.as_bytes(), rest].concat()
            }
            (AliasPattern::Regex(_), Some(re)) => {
                let Some((target, end)) = req.alias_regex(re, &alias.target) else {
                    continue;
                };
                // What the regex matched is SCRIPT_NAME; the rest of the URL follows the
                // target so httpd's directory walk turns it into PATH_INFO (as mod_wsgi).
                let end = end.min(uri.len());
                let rest = if &uri[..end] == b"/" {
                    uri
                } else {
                    &uri[end..]
                };
                [target, rest].concat()
            }
            _ => continue,
        };
        req.claim(&filename, HANDLER);
        req.set_note(ALIASED_NOTE, HANDLER.to_bytes());
        req.set_note(ALIAS_ID_NOTE, alias.id.to_string().as_bytes());
        let o = &alias.options;
        for (key, val) in [
            (c"mod_wsgi.process_group", &o.process_group),
            (c"mod_wsgi.application_group", &o.application_group),
            (c"mod_wsgi.callable_object", &o.callable_object),
        ] {
            if let Some(v) = val {
                req.set_note(key, v.as_bytes());
            }
        }
        if let Some(i) = o.interface {
            req.set_note(INTERFACE_NOTE, i.as_str().as_bytes());
        }
        if let Some(p) = o.pass_authorization {
            req.set_note(c"mod_wsgi.pass_authorization", if p { b"1" } else { b"0" });
        }
        return true;
    }
    false
}
