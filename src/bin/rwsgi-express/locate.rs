//! Finds what rwsgi-express runs: the Apache binary, Apache's module directory and
//! mod_rwsgi.so, from the options, `$APXS` (`apxs -q`), and the usual Debian/Red Hat places.
//! Runs in the rwsgi-express tool.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::options::Options;

/// `apxs -q VAR`, when an apxs can be run; `None` otherwise. The apxs is the one the module
/// is built with by default (build.rs, Makefile): `$APXS`, else `apxs` on PATH, else
/// /usr/bin/apxs.
fn apxs(var: &str) -> Option<String> {
    let on_path = || {
        std::env::split_paths(&std::env::var_os("PATH")?)
            .map(|dir| dir.join("apxs"))
            .find(|candidate| candidate.is_file())
    };
    let apxs = std::env::var_os("APXS")
        .map(PathBuf::from)
        .or_else(on_path)
        .or_else(|| Some(PathBuf::from("/usr/bin/apxs")).filter(|p| p.exists()))?;
    let out = Command::new(apxs).args(["-q", var]).output().ok()?;
    let v = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (out.status.success() && !v.is_empty()).then_some(v)
}

/// The path given with `option` if `ok` accepts it (else an error saying it is not `kind`);
/// without one, the first of `candidates` that `ok` accepts, or `not_found(places looked at)`.
fn find(
    given: Option<&str>,
    option: &str,
    kind: &str,
    ok: impl Fn(&Path) -> bool,
    candidates: impl FnOnce() -> Vec<PathBuf>,
    not_found: impl FnOnce(String) -> String,
) -> Result<PathBuf, String> {
    if let Some(g) = given {
        let p = PathBuf::from(g);
        return if ok(&p) {
            Ok(p)
        } else {
            Err(format!("{option}: '{g}' is not {kind}"))
        };
    }
    let c = candidates();
    c.iter().find(|p| ok(p)).cloned().ok_or_else(|| {
        not_found(
            c.iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
        )
    })
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The Apache binary: `--httpd`, else `$APXS`'s SBINDIR/TARGET, else the usual places.
pub fn httpd(o: &Options) -> Result<PathBuf, String> {
    let candidates = || {
        let mut v = Vec::new();
        if let (Some(dir), Some(target)) = (apxs("SBINDIR"), apxs("TARGET")) {
            v.push(Path::new(&dir).join(target));
        }
        for p in [
            "/usr/sbin/apache2",
            "/usr/sbin/httpd",
            "/usr/local/apache2/bin/httpd",
        ] {
            v.push(PathBuf::from(p));
        }
        v
    };
    find(
        o.httpd.as_deref(),
        "--httpd",
        "an executable file",
        is_executable,
        candidates,
        |looked| {
            format!(
                "Apache httpd not found (looked at {looked}): install apache2, or give --httpd \
                 PATH"
            )
        },
    )
}

/// Apache's module directory: `--modules-directory`, else `apxs -q LIBEXECDIR`, else the first
/// usual directory holding mod_authz_core.so.
pub fn modules_dir(o: &Options) -> Result<PathBuf, String> {
    let candidates = || {
        let mut v: Vec<PathBuf> = apxs("LIBEXECDIR").map(PathBuf::from).into_iter().collect();
        for d in [
            "/usr/lib/apache2/modules",
            "/usr/lib64/httpd/modules",
            "/usr/lib/httpd/modules",
            "/usr/local/apache2/modules",
        ] {
            v.push(PathBuf::from(d));
        }
        v
    };
    let given = o.modules_directory.as_deref();
    find(
        given,
        "--modules-directory",
        "a directory",
        |p| p.is_dir() && (given.is_some() || p.join("mod_authz_core.so").is_file()),
        candidates,
        |looked| {
            format!(
                "Apache's module directory not found (looked for mod_authz_core.so in \
                 {looked}): give --modules-directory DIR"
            )
        },
    )
}

/// Where mod_rwsgi.so is looked for when `--module` is not given, in order: next to this
/// program (cargo puts libmod_rwsgi.so there), then Apache's module directory.
pub fn module_candidates(exe_dir: Option<&Path>, modules_dir: Option<&Path>) -> Vec<PathBuf> {
    let mut v = Vec::new();
    if let Some(d) = exe_dir {
        v.push(d.join("libmod_rwsgi.so"));
        v.push(d.join("mod_rwsgi.so"));
    }
    if let Some(d) = modules_dir {
        v.push(d.join("mod_rwsgi.so"));
    }
    v
}

/// mod_rwsgi.so: `--module`, else the first of `module_candidates`.
pub fn module(o: &Options, modules_dir: Option<&Path>) -> Result<PathBuf, String> {
    let candidates = || {
        let exe = std::env::current_exe()
            .ok()
            .and_then(|e| std::fs::canonicalize(e).ok());
        module_candidates(exe.as_deref().and_then(Path::parent), modules_dir)
    };
    find(
        o.module.as_deref(),
        "--module",
        "a file",
        Path::is_file,
        candidates,
        |looked| {
            format!(
                "mod_rwsgi.so not found (looked at {looked}): build it (cargo build --release) \
                 or give --module PATH"
            )
        },
    )
}

/// The MIME types file: the system's, else a small one written into the server root.
pub fn mime_types() -> Option<PathBuf> {
    [
        "/etc/mime.types",
        "/etc/apache2/mime.types",
        "/etc/httpd/conf/mime.types",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.is_file())
}

/// Written when the system has no mime.types (mod_mime refuses to start without one).
pub const FALLBACK_MIME_TYPES: &str = "text/html html htm\ntext/plain txt\ntext/css css\n\
    application/javascript js\napplication/json json\nimage/png png\nimage/jpeg jpg jpeg\n\
    image/gif gif\nimage/svg+xml svg\nimage/x-icon ico\napplication/pdf pdf\n";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_search_order() {
        let v = module_candidates(
            Some(Path::new("/repo/target/release")),
            Some(Path::new("/usr/lib/apache2/modules")),
        );
        assert_eq!(
            v,
            [
                PathBuf::from("/repo/target/release/libmod_rwsgi.so"),
                PathBuf::from("/repo/target/release/mod_rwsgi.so"),
                PathBuf::from("/usr/lib/apache2/modules/mod_rwsgi.so"),
            ]
        );
    }
}
