//! Start-up diagnostics that need neither Python nor httpd: whether a `WSGIPythonHome` /
//! `python-home=` is a prefix or virtual environment of the Python X.Y the module was built
//! for, and whether a user can reach and read a path (judged from every component's mode,
//! owner and group against the user's groups). Pure file-system inspection: run in the httpd
//! parent at configuration time, in an httpd child or daemon to explain a script it could
//! not open, and in rwsgi-express (which compiles this file in) to refuse paths up front.
#![forbid(unsafe_code)]

use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::error::{Code, Error};

/// The `X.Y` of a version string such as `3.11.2` or `3.12.1.final.0`.
fn major_minor(v: &str) -> Option<String> {
    let mut it = v.trim().split('.');
    let (a, b) = (it.next()?, it.next()?);
    if a.is_empty() || b.is_empty() || !a.chars().chain(b.chars()).all(|c| c.is_ascii_digit()) {
        return None;
    }
    Some(format!("{a}.{b}"))
}

/// `key = value` pairs of a `pyvenv.cfg` (keys lower-cased).
fn parse_pyvenv(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect()
}

/// The standard library directory of Python `ver` under `prefix`, if it has `encodings/`
/// (the package Python imports first; without it start-up stops with "No module named
/// 'encodings'").
fn stdlib_of(prefix: &Path, ver: &str) -> Option<PathBuf> {
    ["lib", "lib64"]
        .iter()
        .map(|l| prefix.join(l).join(format!("python{ver}")))
        .find(|d| d.join("encodings").is_dir())
}

/// The `X.Y` of every `lib/pythonX.Y/` (or `lib64/`) directory under `prefix`, sorted; with
/// `stdlib_only`, only those holding a standard library (`encodings/`).
fn python_dirs(prefix: &Path, stdlib_only: bool) -> Vec<String> {
    let mut out = Vec::new();
    for l in ["lib", "lib64"] {
        let Ok(rd) = std::fs::read_dir(prefix.join(l)) else {
            continue;
        };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(v) = name.strip_prefix("python").and_then(major_minor)
                && (!stdlib_only || e.path().join("encodings").is_dir())
                && !out.contains(&v)
            {
                out.push(v);
            }
        }
    }
    out.sort();
    out
}

fn mismatch(what: &str, home: &str, found: &str, how: &str, build: &str, exe: &str) -> Error {
    Error::new(
        Code::PythonHomeVersion,
        format!(
            "{what} '{home}' is for Python {found} ({how}), but mod_rwsgi was built for Python \
             {build} ({exe}): point it at a Python {build} installation or a virtual environment \
             made with `python{build} -m venv`, or rebuild mod_rwsgi with \
             PYO3_PYTHON=/path/to/python{found}"
        ),
    )
}

/// Checks a `WSGIPythonHome` / `python-home=` value without starting Python. `what` names the
/// directive (e.g. `WSGIPythonHome`), `build`/`exe` the Python the module was built for.
pub fn python_home_problem(what: &str, home: &str, build: &str, exe: &str) -> Option<Error> {
    let h = Path::new(home);
    let invalid = |msg: String| Some(Error::new(Code::PythonHomeInvalid, msg));
    match std::fs::metadata(h) {
        Err(e) => {
            return invalid(format!(
                "{what} '{home}' cannot be used ({e}): set it to a virtual environment's \
                 directory or to the sys.prefix of a Python {build} installation"
            ));
        }
        Ok(m) if !m.is_dir() => {
            return invalid(format!(
                "{what} '{home}' is not a directory: set it to a virtual environment's \
                 directory or to the sys.prefix of a Python {build} installation"
            ));
        }
        Ok(_) => {}
    }
    let cfg = h.join("pyvenv.cfg");
    if cfg.is_file() {
        let text = match std::fs::read_to_string(&cfg) {
            Ok(t) => t,
            Err(e) => {
                return invalid(format!(
                    "{what} '{home}': cannot read {}: {e}",
                    cfg.display()
                ));
            }
        };
        let kv = parse_pyvenv(&text);
        let get = |k: &str| kv.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str());
        let declared = get("version")
            .or_else(|| get("version_info"))
            .and_then(|v| major_minor(v).map(|mm| (mm, v.to_string())));
        if let Some((mm, full)) = &declared {
            if mm != build {
                return Some(mismatch(
                    what,
                    home,
                    mm,
                    &format!("its pyvenv.cfg says version = {full}"),
                    build,
                    exe,
                ));
            }
        } else {
            let vs = python_dirs(h, false);
            if !vs.is_empty() && !vs.iter().any(|v| v == build) {
                return Some(mismatch(
                    what,
                    home,
                    &vs[0],
                    &format!("it has lib/python{}/", vs[0]),
                    build,
                    exe,
                ));
            }
        }
        // The base installation is not checked: Python falls back to its compiled-in prefix
        // (the build's), so even a venv whose `home =` moved starts.
        return None;
    }
    if stdlib_of(h, build).is_some() {
        return None;
    }
    let others = python_dirs(h, true);
    if let Some(v) = others.first() {
        return Some(mismatch(
            what,
            home,
            v,
            &format!("it has lib/python{v}/encodings"),
            build,
            exe,
        ));
    }
    invalid(format!(
        "{what} '{home}' is not a Python installation prefix or virtual environment: it has \
         neither pyvenv.cfg nor lib/python{build}/encodings (Python would stop with \"No module \
         named 'encodings'\"). Set it to a virtual environment's directory or to the sys.prefix \
         of a Python {build} installation (python{build} -c 'import sys; print(sys.prefix)')"
    ))
}

/// How to fix an `access_problem`, for the log line.
pub const ACCESS_FIX: &str = "Fix: give that user access (chmod o+x on each directory above, \
    o+r on the file; or a group it belongs to), or run the application as a user that has it \
    (WSGIDaemonProcess user=)";

/// How to fix a directory the httpd child user cannot search (it must, in every mode).
pub const REACH_FIX: &str = "Fix: chmod o+x on that directory (or give it to a group of that \
    user and chmod g+x), or move the application to a directory it can search";

/// A user as the kernel sees it for permission checks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups (may include `gid`).
    pub groups: Vec<u32>,
}

impl Identity {
    fn allowed(&self, m: &Metadata, bits: u32) -> bool {
        if self.uid == 0 {
            // root reads and searches anything; executing a file needs some x bit.
            return bits & 1 == 0 || m.is_dir() || m.mode() & 0o111 != 0;
        }
        let shift = if m.uid() == self.uid {
            6
        } else if m.gid() == self.gid || self.groups.contains(&m.gid()) {
            3
        } else {
            0
        };
        (m.mode() >> shift) & bits == bits
    }

    /// `www-data (uid 33)`.
    pub fn describe(&self) -> String {
        format!("{} (uid {})", self.name, self.uid)
    }
}

/// What a user must be able to do with a path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need {
    /// Reach it: search every directory above it (what `stat()` needs).
    Reach,
    /// Reach a directory and search it (what opening a name inside it needs).
    Search,
    /// Reach it and read it (a file), or list and search it (a directory).
    Read,
}

fn describe_meta(p: &Path, m: &Metadata) -> String {
    format!(
        "'{}' (mode {:04o}, owner {}:{})",
        p.display(),
        m.mode() & 0o7777,
        m.uid(),
        m.gid()
    )
}

/// Why `who` cannot reach or read `path` (the first component that stops it, top down), or
/// `Ok` if nothing does. A missing path is an error too.
pub fn access_problem(path: &Path, who: &Identity, need: Need) -> Result<(), String> {
    let real = std::fs::canonicalize(path).map_err(|e| format!("'{}': {e}", path.display()))?;
    let mut dirs: Vec<&Path> = real.ancestors().skip(1).collect();
    dirs.reverse();
    for d in dirs {
        let m = std::fs::metadata(d).map_err(|e| format!("'{}': {e}", d.display()))?;
        if !who.allowed(&m, 0o1) {
            return Err(format!(
                "the directory {} cannot be searched by {}",
                describe_meta(d, &m),
                who.describe()
            ));
        }
    }
    if need == Need::Reach {
        return Ok(());
    }
    let m = std::fs::metadata(&real).map_err(|e| format!("'{}': {e}", real.display()))?;
    let (bits, what) = match (need, m.is_dir()) {
        (Need::Search, _) => (0o1, "searched"),
        (_, true) => (0o5, "listed and searched"),
        (_, false) => (0o4, "read"),
    };
    if !who.allowed(&m, bits) {
        return Err(format!(
            "{} cannot be {what} by {}",
            describe_meta(&real, &m),
            who.describe()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("rwsgi-diag-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn mkdirs(p: &Path) {
        std::fs::create_dir_all(p).unwrap();
    }

    #[test]
    fn versions() {
        assert_eq!(major_minor("3.11.2").as_deref(), Some("3.11"));
        assert_eq!(major_minor("3.12.1.final.0").as_deref(), Some("3.12"));
        assert_eq!(major_minor("x"), None);
        assert_eq!(major_minor("3"), None);
    }

    #[test]
    fn prefix_of_build_version_is_fine() {
        let d = tmp("prefix-ok");
        mkdirs(&d.join("lib/python3.11/encodings"));
        assert_eq!(
            python_home_problem("WSGIPythonHome", d.to_str().unwrap(), "3.11", "/x"),
            None
        );
    }

    #[test]
    fn prefix_of_other_version_names_both() {
        let d = tmp("prefix-39");
        mkdirs(&d.join("lib/python3.9/encodings"));
        let e = python_home_problem(
            "WSGIPythonHome",
            d.to_str().unwrap(),
            "3.11",
            "/usr/bin/python3",
        )
        .unwrap();
        assert_eq!(e.code, Code::PythonHomeVersion);
        assert!(
            e.msg.contains("Python 3.9") && e.msg.contains("Python 3.11"),
            "{}",
            e.msg
        );
    }

    #[test]
    fn not_a_prefix() {
        let d = tmp("empty");
        let e = python_home_problem("WSGIPythonHome", d.to_str().unwrap(), "3.11", "/x").unwrap();
        assert_eq!(e.code, Code::PythonHomeInvalid);
        assert!(e.msg.contains("encodings"), "{}", e.msg);
        let e = python_home_problem("WSGIPythonHome", "/nonexistent/xyz", "3.11", "/x").unwrap();
        assert_eq!(e.code, Code::PythonHomeInvalid);
    }

    #[test]
    fn venvs() {
        let base = tmp("venv-base");
        mkdirs(&base.join("lib/python3.11/encodings"));
        mkdirs(&base.join("bin"));
        let v = tmp("venv");
        let cfg = |body: String| std::fs::write(v.join("pyvenv.cfg"), body).unwrap();
        cfg(format!("home = {}/bin\nversion = 3.11.2\n", base.display()));
        assert_eq!(
            python_home_problem("python-home=", v.to_str().unwrap(), "3.11", "/x"),
            None
        );
        cfg(format!(
            "home = {}/bin\nversion_info = 3.9.2.final.0\n",
            base.display()
        ));
        let e = python_home_problem("python-home=", v.to_str().unwrap(), "3.11", "/x").unwrap();
        assert_eq!(e.code, Code::PythonHomeVersion);
        assert!(e.msg.contains("3.9.2"), "{}", e.msg);
        // No version line: the lib/pythonX.Y directory decides.
        cfg(format!("home = {}/bin\n", base.display()));
        mkdirs(&v.join("lib/python3.9/site-packages"));
        let e = python_home_problem("python-home=", v.to_str().unwrap(), "3.11", "/x").unwrap();
        assert_eq!(e.code, Code::PythonHomeVersion);
    }

    #[test]
    fn access_from_mode_bits() {
        let d = tmp("access");
        let private = d.join("private");
        mkdirs(&private);
        let f = private.join("app.wsgi");
        std::fs::write(&f, "x").unwrap();
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        let me = std::fs::metadata(&private).unwrap();
        let stranger = Identity {
            name: "nobody".into(),
            uid: 4_000_000,
            gid: 4_000_000,
            groups: vec![],
        };
        let member = Identity {
            groups: vec![me.gid()],
            ..stranger.clone()
        };
        std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o750)).unwrap();
        let e = access_problem(&f, &stranger, Need::Read).unwrap_err();
        assert!(
            e.contains("private") && e.contains("0750") && e.contains("nobody"),
            "{e}"
        );
        assert_eq!(access_problem(&f, &member, Need::Read), Ok(()));
        std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(access_problem(&f, &stranger, Need::Reach), Ok(()));
        let e = access_problem(&f, &stranger, Need::Read).unwrap_err();
        assert!(
            e.contains("app.wsgi") && e.contains("cannot be read"),
            "{e}"
        );
        assert!(access_problem(&d.join("missing"), &stranger, Need::Reach).is_err());
        let _ = std::fs::remove_dir_all(&d);
    }
}
