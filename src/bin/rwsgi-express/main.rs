//! rwsgi-express: `rwsgi-express start-server app.wsgi` writes a complete Apache configuration
//! for one WSGI application into a server root and runs Apache with mod_rwsgi in the
//! foreground (the counterpart of mod_wsgi-express). A command-line tool: it never loads
//! mod_rwsgi or links httpd/Python symbols; Apache does that in its own processes.

mod config;
mod locate;
mod options;
mod run;
// The module's own thin POSIX wrappers (libc only), compiled into the tool as well: the tool's
// only unsafe code, including the calls it alone uses to supervise Apache; not every one of
// them is used here.
#[allow(dead_code)]
#[path = "../../sys.rs"]
mod sys;
// The module's start-up diagnostics (pure file-system checks: who can reach and read a path)
// and the error type they report with, shared so the tool judges paths as the module does.
#[allow(dead_code)]
#[path = "../../diag.rs"]
mod diag;
#[allow(dead_code)]
#[path = "../../error.rs"]
mod error;

use std::fs;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::Path;

use config::Plan;
use options::{Command, Options};

fn main() {
    let mut args = Vec::new();
    for a in std::env::args_os().skip(1) {
        match a.into_string() {
            Ok(s) => args.push(s),
            Err(a) => {
                eprintln!("rwsgi-express: argument {a:?} is not valid UTF-8");
                std::process::exit(2);
            }
        }
    }
    let code = match options::parse(&args) {
        Ok(Command::Help) => {
            print!("{}", options::help());
            0
        }
        Ok(Command::Version) => {
            println!("rwsgi-express {}", env!("CARGO_PKG_VERSION"));
            0
        }
        Ok(Command::Start(o)) => match start(&o, &args) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("rwsgi-express: {e}");
                1
            }
        },
        Err(e) => {
            eprintln!("rwsgi-express: {e}");
            2
        }
    };
    std::process::exit(code);
}

/// Who Apache's children and the daemon processes run as.
struct Identity {
    /// `User`/`Group` arguments (a name, or `#id`).
    user: String,
    group: String,
    /// Whose permissions the paths are checked against.
    who: diag::Identity,
}

fn identity(o: &Options) -> Result<Identity, String> {
    let euid = sys::euid();
    if euid == 0 {
        let name = match &o.user {
            Some(u) => u.clone(),
            None if sys::user_by_name("www-data").is_ok() => "www-data".into(),
            None => "nobody".into(),
        };
        let u = sys::user_by_name(&name).map_err(|e| format!("--user: {e}"))?;
        if u.uid == 0 {
            return Err(format!(
                "--user {name}: the application must not run as root; name an unprivileged \
                 user (default www-data)"
            ));
        }
        let (group, gid) = match &o.group {
            Some(g) => (
                g.clone(),
                sys::group_by_name(g).map_err(|e| format!("--group: {e}"))?,
            ),
            None => (format!("#{}", u.gid), u.gid),
        };
        Ok(Identity {
            user: u.name.clone(),
            group,
            who: sys::user_identity(u.name, u.uid, gid),
        })
    } else {
        // Not root: Apache and the application run as this process, as it is now.
        let who = sys::current_identity();
        if let Some(u) = &o.user
            && *u != who.name
        {
            return Err(format!(
                "--user {u}: only root can run the server as another user (this is {})",
                who.name
            ));
        }
        if let Some(g) = &o.group
            && sys::group_by_name(g).ok() != Some(who.gid)
        {
            return Err(format!(
                "--group {g}: only root can run the server under another group"
            ));
        }
        Ok(Identity {
            user: format!("#{}", who.uid),
            group: format!("#{}", who.gid),
            who,
        })
    }
}

/// Refuses a directory the application's user cannot enter (`what` says which one and why
/// it matters).
fn check_enterable(dir: &str, who: &Identity, what: &str) -> Result<(), String> {
    diag::access_problem(Path::new(dir), &who.who, diag::Need::Search)
        .map_err(|why| format!("{what} '{dir}' cannot be entered by the application's user: {why}"))
}

/// An absolute path that can go into httpd.conf and the shell script as it is.
fn absolute(what: &str, p: &str) -> Result<String, String> {
    if p.contains(['"', '\\', '\n', '\r']) || p.contains("${") {
        return Err(format!(
            "{what} '{}': paths with quotes, backslashes, newlines or ${{ are not supported",
            p.escape_default()
        ));
    }
    let abs = std::path::absolute(p).map_err(|e| format!("{what} '{p}': {e}"))?;
    abs.into_os_string()
        .into_string()
        .map_err(|_| format!("{what} '{p}': not valid UTF-8"))
}

fn existing_dir(what: &str, p: &str) -> Result<String, String> {
    let abs = absolute(what, p)?;
    if !Path::new(&abs).is_dir() {
        return Err(format!("{what} '{p}' is not a directory"));
    }
    Ok(abs)
}

fn check_script(script: &str, given: &str, who: &Identity) -> Result<(), String> {
    let meta = fs::metadata(script).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => format!("script '{given}' does not exist"),
        _ => format!("script '{given}': {e}"),
    })?;
    if !meta.is_file() {
        return Err(format!("script '{given}' is not a file"));
    }
    fs::File::open(script).map_err(|e| format!("cannot read script '{given}': {e}"))?;
    diag::access_problem(Path::new(script), &who.who, diag::Need::Read).map_err(|why| {
        format!(
            "script '{given}' cannot be used by the application's user: {why} (chmod o+rx \
             the directories and o+r the file, or choose --user)"
        )
    })
}

/// The server root, created (0755) if missing. The default one lives in a shared temporary
/// directory, so an existing one must be a real directory of ours that only we can write.
fn server_root(o: &Options) -> Result<String, String> {
    let (path, default) = match &o.server_root {
        Some(r) => (absolute("--server-root", r)?, false),
        None => {
            let tmp = std::env::var("TMPDIR")
                .ok()
                .filter(|t| t.starts_with('/'))
                .unwrap_or_else(|| "/tmp".into());
            let p = format!(
                "{}/rwsgi-express-{}:{}:{}",
                tmp.trim_end_matches('/'),
                config::host_name(o),
                o.port,
                sys::euid()
            );
            (absolute("server root", &p)?, true)
        }
    };
    // The daemon sockets are <root>/rwsgi.<pid>.<n>.sock; a UNIX socket path has 107 bytes.
    if !o.embedded && path.len() + "/rwsgi.4194304.99.sock".len() > 107 {
        return Err(format!(
            "server root '{path}' is too long for the daemon sockets inside it (at most 85 \
             characters): give a shorter --server-root"
        ));
    }
    match fs::symlink_metadata(&path) {
        Ok(m) => {
            let mine = m.uid() == sys::euid() && m.mode() & 0o022 == 0;
            if !m.is_dir() || (default && !mine) {
                return Err(format!(
                    "server root '{path}' exists but is not a directory owned by this user and \
                     writable only by it: remove it, or give --server-root"
                ));
            }
        }
        Err(_) => {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(&path)
                .map_err(|e| format!("cannot create server root '{path}': {e}"))?;
            // The umask may have narrowed it; the daemon sockets' user must get in.
            fs::set_permissions(&path, fs::Permissions::from_mode(0o755))
                .map_err(|e| format!("server root '{path}': {e}"))?;
        }
    }
    Ok(path)
}

/// Fails with one line when the port is taken (or not ours to take).
fn check_port(o: &Options) -> Result<(), String> {
    let host = o.host.as_deref().unwrap_or("0.0.0.0");
    let shown = config::host_name(o);
    match std::net::TcpListener::bind((host, o.port)) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => Err(format!(
            "port {} on {shown} is already in use: stop what listens there, or give --port",
            o.port
        )),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => Err(format!(
            "port {} needs root (ports below 1024 are privileged): give --port 8000 or run as \
             root",
            o.port
        )),
        Err(e) => Err(format!("cannot listen on {shown} port {}: {e}", o.port)),
    }
}

fn write(path: &str, text: &str, mode: u32) -> Result<(), String> {
    fs::write(path, text)
        .and_then(|()| fs::set_permissions(path, fs::Permissions::from_mode(mode)))
        .map_err(|e| format!("cannot write {path}: {e}"))
}

fn shell_words(args: &[String]) -> String {
    let mut s = String::from("rwsgi-express");
    for a in args {
        s.push(' ');
        if !a.is_empty()
            && a.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./:=%@+,".contains(c))
        {
            s.push_str(a);
        } else {
            s.push_str(&config::sh(a));
        }
    }
    s
}

fn start(o: &Options, args: &[String]) -> Result<i32, String> {
    let who = identity(o)?;
    let script = absolute("script", &o.script)?;
    check_script(&script, &o.script, &who)?;
    let script_dir = Path::new(&script)
        .parent()
        .map_or("/".to_string(), |d| d.display().to_string());
    let working_directory = match &o.working_directory {
        Some(w) => existing_dir("--working-directory", w)?,
        None => script_dir,
    };
    check_enterable(&working_directory, &who, "working directory")?;
    let python_paths = o
        .python_paths
        .iter()
        .map(|p| existing_dir("--python-path", p))
        .collect::<Result<Vec<_>, _>>()?;
    let python_home = o
        .python_home
        .as_deref()
        .map(|p| existing_dir("--python-home", p))
        .transpose()?;
    let mut url_aliases = Vec::new();
    for (url, target) in &o.url_aliases {
        let abs = absolute("--url-alias", target)?;
        let meta = fs::metadata(&abs).map_err(|e| format!("--url-alias {url}: '{target}': {e}"))?;
        url_aliases.push((url.trim_end_matches('/').to_string(), abs, meta.is_dir()));
    }
    let modules_dir = locate::modules_dir(o);
    let module = locate::module(o, modules_dir.as_deref().ok())?;
    let modules_dir = modules_dir?;
    let httpd = locate::httpd(o)?;
    let text = |p: &Path, what: &str| absolute(what, &p.display().to_string());
    if !o.setup_only {
        check_port(o)?;
    }
    let root = server_root(o)?;
    if !o.embedded {
        check_enterable(&root, &who, "server root (where the daemon sockets live)")?;
    }
    let mime_types = match locate::mime_types() {
        Some(p) => text(&p, "mime types")?,
        None => {
            let p = format!("{root}/mime.types");
            write(&p, locate::FALLBACK_MIME_TYPES, 0o644)?;
            p
        }
    };
    let plan = Plan {
        o,
        script: script.clone(),
        working_directory,
        python_paths,
        python_home,
        url_aliases,
        server_root: root.clone(),
        module: text(&module, "--module")?,
        modules_dir: text(&modules_dir, "--modules-directory")?,
        httpd: text(&httpd, "--httpd")?,
        user: who.user.clone(),
        group: who.group.clone(),
        mime_types,
        command_line: shell_words(args),
    };
    let docroot = format!("{root}/{}", config::DOCROOT);
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(&docroot)
        .map_err(|e| format!("cannot create {docroot}: {e}"))?;
    let conf = format!("{root}/{}", config::CONF);
    write(&conf, &config::httpd_conf(&plan), 0o644)?;
    let ctl = format!("{root}/{}", config::APACHECTL);
    write(&ctl, &config::apachectl(&plan), 0o755)?;
    if o.reload_on_changes {
        write(
            &format!("{root}/{}", config::MONITOR),
            &config::monitor(),
            0o644,
        )?;
    }
    let mode = if o.embedded {
        format!(
            "embedded ({} process(es) x {} threads, MPM {})",
            o.processes.unwrap_or(1),
            o.threads,
            o.mpm.name()
        )
    } else {
        format!(
            "daemon ({} process(es) x {} threads, group '{}', MPM {})",
            o.processes.unwrap_or(1),
            o.threads,
            plan.group_name(),
            o.mpm.name()
        )
    };
    println!("rwsgi-express {}", env!("CARGO_PKG_VERSION"));
    println!("  Script       : {script}");
    println!(
        "  Server URL   : http://{}:{}{}",
        plan.host_name(),
        o.port,
        o.mount_point
    );
    println!("  Mode         : {mode}");
    println!("  Runs as      : user {} ({})", who.who.name, who.user);
    println!("  Server root  : {root}");
    println!("  Config       : {conf}");
    println!("  Control      : {ctl}");
    println!("  Apache       : {}", plan.httpd);
    println!("  Module       : {}", plan.module);
    if o.setup_only {
        println!(
            "Set up only. Start it with `{ctl} start` (or `start -DFOREGROUND`), stop it with `{ctl} stop`."
        );
        return Ok(0);
    }
    Ok(run::foreground(&httpd, Path::new(&conf), Path::new(&root)))
}
