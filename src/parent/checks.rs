//! Start-up diagnostics of the configuration, run in the httpd parent without starting Python:
//! `check_config` (run by `apachectl -t` and by every start and restart) refuses a
//! `WSGIPythonHome`/`python-home=` that cannot work and a daemon socket directory the child user
//! cannot reach; `test_config` (`-t`) and the real `post_config` pass report WSGI scripts,
//! `WSGIImportScript`s, python-path entries and python homes that the user who will use them
//! (httpd's `User`, or a daemon group's `user=`) cannot reach or read.
#![forbid(unsafe_code)]

use std::collections::HashSet;
use std::ffi::c_int;
use std::path::Path;

use crate::config::{AliasPattern, GlobalConfig};
use crate::diag::{self, Identity, Need};
use crate::error::Code;
use crate::httpd::ffi::{APLOG_ERR, APLOG_WARNING};
use crate::httpd::pool::Pool;
use crate::httpd::server::Server;
use crate::python;
use crate::sys;

/// Whom httpd's children run as (`User`/`Group`, or this process if not started as root).
fn child_identity() -> Identity {
    if sys::euid() != 0 {
        return sys::current_identity();
    }
    let (uid, gid) = super::supervisor::httpd_identity();
    sys::user_identity(sys::user_name(uid), uid, gid)
}

/// The configuration problems that make start-up certainly fail: the first one, as the line
/// to log. Run by `check_config`.
pub(crate) fn fatal(pconf: Pool, g: &GlobalConfig) -> Option<String> {
    let home_problem = |what: &str, home: &str| {
        diag::python_home_problem(what, home, python::BUILD_VERSION, python::BUILD_EXECUTABLE)
    };
    if let Some(h) = &g.python_home
        && let Some(e) = home_problem("WSGIPythonHome", h)
    {
        return Some(e.to_string());
    }
    for d in &g.daemons {
        if let Some(h) = &d.python_home
            && let Some(e) = home_problem(&format!("WSGIDaemonProcess {} python-home=", d.name), h)
        {
            return Some(e.to_string());
        }
    }
    if !g.daemons.is_empty()
        && let Err(msg) = super::supervisor::socket_plan(pconf, g)
    {
        return Some(msg);
    }
    None
}

/// Who must be able to read a path.
enum Readers<'a> {
    One(&'a Identity),
    /// At least one of them (the process group is chosen elsewhere, e.g. `WSGIProcessGroup`).
    AnyOf(Vec<&'a Identity>),
}

/// Every path the configuration will use, checked for the user who will use it. Returns
/// (level, line) pairs, once each.
pub(crate) fn access_report(g: &GlobalConfig) -> Vec<(c_int, String)> {
    let child = child_identity();
    let (uid, gid) = super::supervisor::httpd_identity();
    let daemons: Vec<(String, Option<Identity>)> = g
        .daemons
        .iter()
        .map(|d| {
            (
                d.name.clone(),
                crate::daemon::check_identity(d, uid, gid).ok(),
            )
        })
        .collect();
    let daemon_id = |name: &str| -> Option<&Identity> {
        daemons
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, i)| i.as_ref())
    };
    let embedded = !g.restrict_embedded;
    let mut out: Vec<(c_int, String)> = Vec::new();
    let mut seen = HashSet::new();
    let mut report = |level: c_int, line: String| {
        if seen.insert(line.clone()) {
            out.push((level, line));
        }
    };
    // `what` names the use; a missing path is a warning, an unreadable one an error.
    let mut check = |what: &str, path: &str, reach: Option<&Identity>, readers: Readers<'_>| {
        let p = Path::new(path);
        if !p.exists() {
            report(
                APLOG_WARNING,
                format!(
                    "{}: {what} '{path}' does not exist (yet); what needs it fails until it \
                     does",
                    Code::PathAccess.as_str()
                ),
            );
            return;
        }
        // A directory of scripts must be searchable itself too (each script is looked up in it).
        let reach_need = if p.is_dir() {
            Need::Search
        } else {
            Need::Reach
        };
        if let Some(who) = reach
            && let Err(why) = diag::access_problem(p, who, reach_need)
        {
            report(
                APLOG_ERR,
                format!(
                    "{}: {what} '{path}' cannot be reached by the httpd child user: {why}; \
                     requests for it will fail (403). {}",
                    Code::PathAccess.as_str(),
                    diag::REACH_FIX
                ),
            );
            return;
        }
        let problems: Vec<String> = match &readers {
            Readers::One(who) => diag::access_problem(p, who, Need::Read)
                .err()
                .into_iter()
                .collect(),
            Readers::AnyOf(list) => {
                let errs: Vec<String> = list
                    .iter()
                    .filter_map(|w| diag::access_problem(p, w, Need::Read).err())
                    .collect();
                if errs.len() == list.len() {
                    errs
                } else {
                    Vec::new()
                }
            }
        };
        if !problems.is_empty() {
            report(
                APLOG_ERR,
                format!(
                    "{}: {what} '{path}' cannot be read by the user that runs it: {}; loading \
                     it will fail. {}",
                    Code::PathAccess.as_str(),
                    problems.join("; "),
                    diag::ACCESS_FIX
                ),
            );
        }
    };

    // WSGIScriptAlias targets of every virtual host (merged vhosts repeat the main server's).
    let mut aliases = Vec::new();
    for s in Server::all() {
        if let Some(cfg) = s.config() {
            for a in &cfg.aliases {
                if !aliases.contains(a) {
                    aliases.push(a.clone());
                }
            }
        }
    }
    for a in &aliases {
        let (directive, url) = match &a.pattern {
            AliasPattern::Prefix(u) => ("WSGIScriptAlias", u.as_str()),
            AliasPattern::Regex(r) => ("WSGIScriptAliasMatch", r.as_str()),
        };
        if a.target.contains('$') {
            continue; // depends on the request
        }
        let what = format!("{directive} {url}: the WSGI script");
        let pg = a.options.process_group.as_deref();
        match pg {
            Some("%{GLOBAL}") => check(&what, &a.target, Some(&child), Readers::One(&child)),
            // A configured group's own user reads the script. A group whose user cannot be
            // resolved never runs it (it fails with RW0013): only the reach is checked, not
            // other groups' users.
            Some(name) if daemons.iter().any(|(n, _)| n == name) => {
                let readers = daemon_id(name).map_or(Readers::AnyOf(Vec::new()), Readers::One);
                check(&what, &a.target, Some(&child), readers)
            }
            None if g.daemons.is_empty() => {
                check(&what, &a.target, Some(&child), Readers::One(&child))
            }
            _ => {
                // Each user once (a group often runs as httpd's own user).
                let mut any: Vec<&Identity> = Vec::new();
                let candidates = daemons.iter().filter_map(|(_, i)| i.as_ref());
                for who in candidates.chain(embedded.then_some(&child)) {
                    if !any.contains(&who) {
                        any.push(who);
                    }
                }
                check(&what, &a.target, Some(&child), Readers::AnyOf(any))
            }
        }
    }
    for i in &g.import_scripts {
        let what = format!("WSGIImportScript process-group={}", i.process_group);
        if i.process_group == "%{GLOBAL}" {
            check(&what, &i.path, None, Readers::One(&child));
        } else if let Some(d) = daemon_id(&i.process_group) {
            check(&what, &i.path, None, Readers::One(d));
        }
    }
    if embedded {
        for p in &g.python_path {
            check("WSGIPythonPath entry", p, None, Readers::One(&child));
        }
        if let Some(h) = &g.python_home {
            check("WSGIPythonHome", h, None, Readers::One(&child));
        }
    }
    // <WSGIInterpreterOptions> python paths, by the processes their section selects.
    for b in &g.interp_options {
        let what = "<WSGIInterpreterOptions> WSGIPythonPath entry";
        for p in &b.python_path {
            if embedded && b.process_group.as_deref().is_none_or(str::is_empty) {
                check(what, p, None, Readers::One(&child));
            }
            for d in &g.daemons {
                if b.process_group.as_deref().is_none_or(|pg| pg == d.name)
                    && let Some(who) = daemon_id(&d.name)
                {
                    check(what, p, None, Readers::One(who));
                }
            }
        }
    }
    for d in &g.daemons {
        let Some(who) = daemon_id(&d.name) else {
            continue;
        };
        let what = format!("WSGIDaemonProcess {} python-path entry", d.name);
        for p in g.python_path.iter().chain(&d.python_path) {
            check(&what, p, None, Readers::One(who));
        }
        if let Some(h) = d.python_home.as_ref().or(g.python_home.as_ref()) {
            check(
                &format!("WSGIDaemonProcess {} python-home", d.name),
                h,
                None,
                Readers::One(who),
            );
        }
    }
    out
}

/// Logs `access_report` (to the error log at start, to the console under `apachectl -t`).
pub(crate) fn log_access_report(s: Server, g: &GlobalConfig) {
    for (level, line) in access_report(g) {
        s.log(level, &line);
    }
}
