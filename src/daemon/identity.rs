//! Whom a group's processes run as: the user, group and supplementary groups a
//! `WSGIDaemonProcess` names (or httpd's `User`/`Group`), resolved for the daemon's privilege
//! drop and for the parent's start-up permission checks, and the drop itself. Runs in the
//! daemon process (and, for `check_identity`, in the httpd parent before the fork).
#![forbid(unsafe_code)]

use crate::config::daemon::{DaemonSpec, GroupSpec, UserSpec};
use crate::error::Code;
use crate::sys;
use crate::wsgi::adapter::LogFn;

use super::fatal;

fn resolve_user(u: &UserSpec) -> std::io::Result<sys::User> {
    match u {
        UserSpec::Name(n) => sys::user_by_name(n),
        UserSpec::Id(id) => sys::user_by_id(*id),
    }
}

fn resolve_group(g: &GroupSpec) -> std::io::Result<u32> {
    match g {
        GroupSpec::Name(n) => sys::group_by_name(n),
        GroupSpec::Id(id) => Ok(*id),
    }
}

/// Whom a group's processes run as: the user, the primary group, and the supplementary groups
/// (`None`: `initgroups()` for the user). Used by the daemon itself and by the parent's
/// start-up checks.
fn identity(
    spec: &DaemonSpec,
    httpd_uid: u32,
    httpd_gid: u32,
) -> Result<(sys::User, u32, Option<Vec<u32>>), String> {
    let name = &spec.name;
    let user = match &spec.user {
        Some(u) => resolve_user(u),
        None => sys::user_by_id(httpd_uid),
    }
    .map_err(|e| format!("daemon group '{name}': user: {e}"))?;
    let gid = match &spec.group {
        Some(g) => resolve_group(g),
        None if spec.user.is_some() => Ok(user.gid),
        None => Ok(httpd_gid),
    }
    .map_err(|e| format!("daemon group '{name}': group: {e}"))?;
    let supplementary = if spec.supplementary_groups.is_empty() {
        None
    } else {
        let mut v = vec![gid];
        for g in &spec.supplementary_groups {
            v.push(
                resolve_group(g)
                    .map_err(|e| format!("daemon group '{name}': supplementary group: {e}"))?,
            );
        }
        Some(v)
    };
    Ok((user, gid, supplementary))
}

/// The identity a group's processes will have, for permission checks. A server not started
/// as root cannot switch users: its daemons keep the parent's identity.
pub fn check_identity(
    spec: &DaemonSpec,
    httpd_uid: u32,
    httpd_gid: u32,
) -> Result<crate::diag::Identity, String> {
    if sys::euid() != 0 {
        return Ok(sys::current_identity());
    }
    let (user, gid, supplementary) = identity(spec, httpd_uid, httpd_gid)?;
    let groups = supplementary.unwrap_or_else(|| sys::groups_of(&user.name, gid));
    Ok(crate::diag::Identity {
        name: user.name,
        uid: user.uid,
        gid,
        groups,
    })
}

/// Takes on the group's identity: a process started as root drops root for good (any failure
/// ends the process, as does an identity that is root itself). Returns the process's home
/// directory: `home=`, else the user's home (root) or `/` (a server not started as root).
pub(super) fn assume(spec: &DaemonSpec, httpd_uid: u32, httpd_gid: u32, log: &LogFn) -> String {
    let name = &spec.name;
    if sys::euid() == 0 {
        let (user, gid, supplementary) = identity(spec, httpd_uid, httpd_gid)
            .unwrap_or_else(|e| fatal(log, &format!("{}: {e}", Code::DaemonStart.as_str())));
        if user.uid == 0 {
            fatal(
                log,
                &format!(
                    "{}: daemon group '{name}' would run as root; refusing",
                    Code::DaemonStart.as_str()
                ),
            );
        }
        // chroot=: every name is resolved (and the group list read) before the jail hides
        // /etc; the privileges are dropped inside it.
        let supplementary = match (&spec.chroot, supplementary) {
            (Some(_), None) => Some(sys::groups_of(&user.name, gid)),
            (_, s) => s,
        };
        if let Some(dir) = &spec.chroot
            && let Err(e) = sys::chroot(dir)
        {
            fatal(
                log,
                &format!(
                    "{}: daemon group '{name}': chroot={dir}: {e}; the application is not \
                     started",
                    Code::DaemonStart.as_str()
                ),
            );
        }
        if let Err(e) = sys::drop_privileges(user.uid, gid, supplementary.as_deref(), &user.name) {
            fatal(
                log,
                &format!(
                    "{}: daemon group '{name}': cannot switch to user '{}' (uid {}) group {gid}: {e}; \
                     the application is not started",
                    Code::DaemonStart.as_str(),
                    user.name,
                    user.uid
                ),
            );
        }
        spec.home.clone().unwrap_or(user.home)
    } else if let Some(dir) = &spec.chroot {
        fatal(
            log,
            &format!(
                "{}: daemon group '{name}': chroot={dir} needs httpd to be started as root",
                Code::DaemonStart.as_str()
            ),
        )
    } else {
        spec.home.clone().unwrap_or_else(|| "/".into())
    }
}
