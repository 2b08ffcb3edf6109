//! rwsgi-express's command line: the option table (which `--help` is generated from), the
//! parser, and every check that needs no file system. Pure; runs in the rwsgi-express tool.

use std::net::IpAddr;

/// One command-line option.
pub struct Spec {
    pub name: &'static str,
    /// Names of its values; empty for a flag.
    pub values: &'static [&'static str],
    pub repeatable: bool,
    pub section: &'static str,
    pub help: &'static str,
}

const fn opt(
    section: &'static str,
    name: &'static str,
    values: &'static [&'static str],
    help: &'static str,
) -> Spec {
    Spec {
        name,
        values,
        repeatable: false,
        section,
        help,
    }
}

const fn many(
    section: &'static str,
    name: &'static str,
    values: &'static [&'static str],
    help: &'static str,
) -> Spec {
    let mut s = opt(section, name, values, help);
    s.repeatable = true;
    s
}

const N: &[&str] = &["NUMBER"];
const S: &[&str] = &["SECONDS"];
const FLAG: &[&str] = &[];

/// Every option start-server accepts, in `--help` order.
pub const SPECS: &[Spec] = &[
    opt(
        "Network",
        "--host",
        &["IP-ADDRESS"],
        "Interface to listen on. Default: all interfaces.",
    ),
    opt("Network", "--port", N, "Port to listen on. Default: 8000."),
    opt(
        "Application",
        "--mount-point",
        &["URL-PATH"],
        "URL path the application is mounted at. Default: /.",
    ),
    opt(
        "Application",
        "--callable-object",
        &["NAME"],
        "Name of the WSGI callable in the script. Default: application.",
    ),
    opt(
        "Application",
        "--application-interface",
        &["auto|wsgi|asgi"],
        "The interface the callable speaks (rwsgi-express only): auto detects ASGI 3 (async) \
         and otherwise serves WSGI. asgi also sizes Apache for many simultaneous connections \
         (open WebSockets, long polls): see --max-clients. Default: auto.",
    ),
    many(
        "Application",
        "--url-alias",
        &["URL-PATH", "FILE-OR-DIRECTORY"],
        "Serve a static file or directory at URL-PATH (repeatable).",
    ),
    many(
        "Application",
        "--python-path",
        &["DIRECTORY"],
        "Add a directory to the Python module search path (repeatable).",
    ),
    opt(
        "Application",
        "--python-home",
        &["DIRECTORY"],
        "Python installation or virtual environment to run the application with (same Python \
         X.Y as mod_rwsgi was built for). Default: the build's Python.",
    ),
    opt(
        "Application",
        "--working-directory",
        &["DIRECTORY"],
        "Current directory of the daemon processes, also put on the module search path. \
         Default: the script's directory.",
    ),
    opt(
        "Application",
        "--reload-on-changes",
        FLAG,
        "Restart the daemon processes when any Python file the application loaded changes \
         (daemon mode). A changed script restarts them even without this flag.",
    ),
    opt(
        "Processes",
        "--processes",
        N,
        "Number of daemon processes (embedded mode: httpd child processes). Default: 1.",
    ),
    opt(
        "Processes",
        "--threads",
        N,
        "Threads per process. Default: 5.",
    ),
    opt(
        "Processes",
        "--embedded-mode",
        FLAG,
        "Run the application inside the httpd children instead of daemon processes.",
    ),
    opt(
        "Processes",
        "--server-mpm",
        &["event|worker|prefork"],
        "Apache MPM to load. Default: worker (event closes kept-alive connections whenever \
         all of a child's threads are busy; worker never does).",
    ),
    opt(
        "Processes",
        "--max-clients",
        N,
        "Most simultaneous client connections. Default: 10 + max(10, 1.5 x processes x \
         threads) in daemon mode (with --application-interface asgi: at least 100 x \
         processes), processes x threads in embedded mode.",
    ),
    opt(
        "Timeouts",
        "--request-timeout",
        S,
        "A request running longer restarts its daemon process. Default: 60.",
    ),
    opt(
        "Timeouts",
        "--queue-timeout",
        S,
        "A request waiting longer for a daemon thread gets a 504. Default: 45.",
    ),
    opt(
        "Timeouts",
        "--socket-timeout",
        S,
        "Apache's Timeout, and the wait for a daemon's answer. Default: 60.",
    ),
    opt(
        "Timeouts",
        "--connect-timeout",
        S,
        "Time allowed to reach a daemon process (503 after). Default: 15.",
    ),
    opt(
        "Timeouts",
        "--startup-timeout",
        S,
        "A daemon process whose script does not load within this restarts. Default: 15.",
    ),
    opt(
        "Timeouts",
        "--deadlock-timeout",
        S,
        "A daemon process whose Python GIL is held this long restarts. Default: 60.",
    ),
    opt(
        "Timeouts",
        "--graceful-timeout",
        S,
        "Time a recycled daemon process has to finish its requests. Default: 15.",
    ),
    opt(
        "Timeouts",
        "--shutdown-timeout",
        S,
        "Time a stopping daemon process has to finish its requests. Default: 5.",
    ),
    opt(
        "Timeouts",
        "--inactivity-timeout",
        S,
        "Restart an idle daemon process after this long (0: never). Default: 0.",
    ),
    opt(
        "Timeouts",
        "--restart-interval",
        S,
        "Restart each daemon process this often (0: never). Default: 0.",
    ),
    opt(
        "Timeouts",
        "--maximum-requests",
        N,
        "Restart a daemon process after this many requests (0: never). Default: 0.",
    ),
    opt(
        "Timeouts",
        "--keep-alive-timeout",
        S,
        "HTTP keep-alive timeout (0 turns keep-alive off). Default: 2.",
    ),
    opt(
        "Timeouts",
        "--limit-request-body",
        &["BYTES"],
        "Largest request body accepted (0: no limit). Default: 10485760.",
    ),
    opt(
        "Logging",
        "--log-level",
        &["LEVEL"],
        "Apache LogLevel (emerg ... debug, trace1-8; module:level words allowed). Default: warn.",
    ),
    opt(
        "Logging",
        "--access-log",
        FLAG,
        "Write an access log (to stdout when running in the foreground).",
    ),
    opt(
        "Logging",
        "--server-status",
        FLAG,
        "Serve Apache's server-status page, with mod_rwsgi's section, at /server-status \
         (local clients only).",
    ),
    opt(
        "Logging",
        "--metrics",
        FLAG,
        "Serve Prometheus metrics at /rwsgi-metrics (local clients only) and the health \
         check at /rwsgi-health (anyone).",
    ),
    opt(
        "Server",
        "--server-root",
        &["DIRECTORY"],
        "Where the configuration, pid file and sockets go. Default: \
         $TMPDIR/rwsgi-express-HOST:PORT:UID ($TMPDIR defaults to /tmp).",
    ),
    opt(
        "Server",
        "--setup-only",
        FLAG,
        "Write the configuration and an apachectl script into the server root, and exit.",
    ),
    opt(
        "Server",
        "--user",
        &["NAME"],
        "User that serves requests and runs the application, when started as root. \
         Default: www-data as root, otherwise the current user (the only one allowed).",
    ),
    opt(
        "Server",
        "--group",
        &["NAME"],
        "Group for --user. Default: the user's primary group.",
    ),
    opt(
        "Server",
        "--module",
        &["PATH"],
        "mod_rwsgi.so to load. Default: next to this program (libmod_rwsgi.so or \
         mod_rwsgi.so), then Apache's module directory.",
    ),
    opt(
        "Server",
        "--httpd",
        &["PATH"],
        "Apache binary. Default: from $APXS or the apxs on PATH (apxs -q SBINDIR/TARGET), \
         else /usr/sbin/apache2 or /usr/sbin/httpd.",
    ),
    opt(
        "Server",
        "--modules-directory",
        &["DIRECTORY"],
        "Apache's module directory. Default: apxs -q LIBEXECDIR, else /usr/lib/apache2/modules \
         and the other usual places.",
    ),
];

/// Apache's MPMs that rwsgi-express can load.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mpm {
    Event,
    Worker,
    Prefork,
}

impl Mpm {
    pub fn name(self) -> &'static str {
        match self {
            Mpm::Event => "event",
            Mpm::Worker => "worker",
            Mpm::Prefork => "prefork",
        }
    }
}

/// The daemon-process timeouts and limits (seconds, or a count for `maximum_requests`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Timeouts {
    pub request: u32,
    pub queue: u32,
    pub socket: u32,
    pub connect: u32,
    pub startup: u32,
    pub deadlock: u32,
    pub graceful: u32,
    pub shutdown: u32,
    pub inactivity: u32,
    pub restart_interval: u32,
    pub maximum_requests: u32,
    pub keep_alive: u32,
}

/// What the command line asked for. Paths are as given (not yet made absolute or checked).
#[derive(Clone, Debug)]
pub struct Options {
    pub script: String,
    pub host: Option<String>,
    pub port: u16,
    pub mount_point: String,
    pub callable_object: String,
    /// `auto`, `wsgi` or `asgi` (the `application-interface=` of the mount).
    pub interface: String,
    pub url_aliases: Vec<(String, String)>,
    pub python_paths: Vec<String>,
    pub python_home: Option<String>,
    pub working_directory: Option<String>,
    pub reload_on_changes: bool,
    pub processes: Option<u32>,
    pub threads: u32,
    pub embedded: bool,
    pub mpm: Mpm,
    pub max_clients: Option<u32>,
    pub timeouts: Timeouts,
    pub limit_request_body: u64,
    pub log_level: String,
    pub access_log: bool,
    pub server_status: bool,
    pub metrics: bool,
    pub server_root: Option<String>,
    pub setup_only: bool,
    pub user: Option<String>,
    pub group: Option<String>,
    pub module: Option<String>,
    pub httpd: Option<String>,
    pub modules_directory: Option<String>,
}

/// What to do.
#[derive(Debug)]
pub enum Command {
    Help,
    Version,
    Start(Box<Options>),
}

/// A command-line error: one line for the user.
pub type Error = String;

/// Parses the arguments after the program name.
pub fn parse(args: &[String]) -> Result<Command, Error> {
    let Some(first) = args.first() else {
        return Err(
            "no command given: use `rwsgi-express start-server SCRIPT [options]` \
                    (see rwsgi-express --help)"
                .into(),
        );
    };
    match first.as_str() {
        "-h" | "--help" | "help" => return Ok(Command::Help),
        "-V" | "--version" => return Ok(Command::Version),
        "start-server" | "setup-server" => {}
        other => {
            return Err(format!(
                "unknown command '{other}': use start-server or setup-server \
                 (see rwsgi-express --help)"
            ));
        }
    }
    let mut seen: Vec<(&'static Spec, Vec<String>)> = Vec::new();
    let mut positional: Vec<String> = Vec::new();
    let mut i = 1;
    while i < args.len() {
        let arg = &args[i];
        i += 1;
        if arg == "-h" || arg == "--help" {
            return Ok(Command::Help);
        }
        if arg == "-V" || arg == "--version" {
            return Ok(Command::Version);
        }
        if arg == "--" {
            positional.extend(args[i..].iter().cloned());
            break;
        }
        if !arg.starts_with("--") || arg.len() == 2 {
            positional.push(arg.clone());
            continue;
        }
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (arg.as_str(), None),
        };
        let Some(spec) = SPECS.iter().find(|s| s.name == name) else {
            return Err(format!(
                "unknown option '{name}' (see rwsgi-express --help)"
            ));
        };
        let mut values = Vec::new();
        if spec.values.is_empty() {
            if inline.is_some() {
                return Err(format!("{name} takes no value"));
            }
        } else {
            if let Some(v) = inline {
                values.push(v);
            }
            while values.len() < spec.values.len() {
                match args.get(i) {
                    Some(v) if !v.starts_with("--") => {
                        values.push(v.clone());
                        i += 1;
                    }
                    _ => {
                        return Err(format!("{name} needs {}", spec.values.join(" ")));
                    }
                }
            }
        }
        if !spec.repeatable && seen.iter().any(|(s, _)| s.name == spec.name) {
            return Err(format!("{name} given twice"));
        }
        seen.push((spec, values));
    }
    let setup_server = first == "setup-server";
    let script = match positional.as_slice() {
        [one] => one.clone(),
        [] => {
            return Err(format!(
                "{first} needs the WSGI script: rwsgi-express {first} app.wsgi [options]"
            ));
        }
        [_, extra, ..] => {
            return Err(format!(
                "unexpected argument '{extra}': give one WSGI script (see rwsgi-express --help)"
            ));
        }
    };
    let mut o = build(script, &seen)?;
    o.setup_only |= setup_server;
    check(&o)?;
    Ok(Command::Start(Box::new(o)))
}

fn one<'a>(seen: &'a [(&'static Spec, Vec<String>)], name: &str) -> Option<&'a str> {
    seen.iter()
        .find(|(s, _)| s.name == name)
        .map(|(_, v)| v.first().map(String::as_str).unwrap_or(""))
}

fn all<'a>(seen: &'a [(&'static Spec, Vec<String>)], name: &str) -> Vec<&'a [String]> {
    seen.iter()
        .filter(|(s, _)| s.name == name)
        .map(|(_, v)| v.as_slice())
        .collect()
}

fn flag(seen: &[(&'static Spec, Vec<String>)], name: &str) -> bool {
    seen.iter().any(|(s, _)| s.name == name)
}

fn number<T: std::str::FromStr + PartialOrd + std::fmt::Display + Copy>(
    seen: &[(&'static Spec, Vec<String>)],
    name: &str,
    default: T,
    min: T,
    max: T,
) -> Result<T, Error> {
    let Some(v) = one(seen, name) else {
        return Ok(default);
    };
    match v.parse::<T>() {
        Ok(n) if n >= min && n <= max => Ok(n),
        _ => Err(format!(
            "{name}: '{v}' is not a whole number from {min} to {max}"
        )),
    }
}

fn build(script: String, seen: &[(&'static Spec, Vec<String>)]) -> Result<Options, Error> {
    const DAY: u32 = 86_400;
    let secs = |name: &str, default: u32| number(seen, name, default, 0, DAY);
    let port = match one(seen, "--port") {
        None => 8000,
        Some(v) => match v.parse::<u16>() {
            Ok(p) if p > 0 => p,
            _ => {
                return Err(format!("--port: '{v}' is not a port number (1 to 65535)"));
            }
        },
    };
    let mpm = match one(seen, "--server-mpm") {
        Some("event") => Mpm::Event,
        None | Some("worker") => Mpm::Worker,
        Some("prefork") => Mpm::Prefork,
        Some(v) => {
            return Err(format!(
                "--server-mpm: '{v}' is not one of event, worker, prefork"
            ));
        }
    };
    let processes = match one(seen, "--processes") {
        None => None,
        Some(_) => Some(number(seen, "--processes", 1, 1, 1000)?),
    };
    let max_clients = match one(seen, "--max-clients") {
        None => None,
        Some(_) => Some(number(seen, "--max-clients", 1, 1, 100_000)?),
    };
    Ok(Options {
        script,
        host: one(seen, "--host").map(str::to_string),
        port,
        // "/app/" mounts at "/app" (requests for "/app" itself reach the application too).
        mount_point: match one(seen, "--mount-point")
            .unwrap_or("/")
            .trim_end_matches('/')
        {
            "" => "/".to_string(),
            m => m.to_string(),
        },
        callable_object: one(seen, "--callable-object")
            .unwrap_or("application")
            .to_string(),
        interface: match one(seen, "--application-interface").unwrap_or("auto") {
            v @ ("auto" | "wsgi" | "asgi") => v.to_string(),
            v => {
                return Err(format!(
                    "--application-interface: '{v}' is not one of auto, wsgi, asgi"
                ));
            }
        },
        url_aliases: all(seen, "--url-alias")
            .into_iter()
            .map(|v| (v[0].clone(), v[1].clone()))
            .collect(),
        python_paths: all(seen, "--python-path")
            .into_iter()
            .map(|v| v[0].clone())
            .collect(),
        python_home: one(seen, "--python-home").map(str::to_string),
        working_directory: one(seen, "--working-directory").map(str::to_string),
        reload_on_changes: flag(seen, "--reload-on-changes"),
        processes,
        threads: number(seen, "--threads", 5, 1, 10_000)?,
        embedded: flag(seen, "--embedded-mode"),
        mpm,
        max_clients,
        timeouts: Timeouts {
            request: secs("--request-timeout", 60)?,
            queue: secs("--queue-timeout", 45)?,
            socket: number(seen, "--socket-timeout", 60, 1, DAY)?,
            connect: number(seen, "--connect-timeout", 15, 1, DAY)?,
            startup: secs("--startup-timeout", 15)?,
            deadlock: secs("--deadlock-timeout", 60)?,
            graceful: secs("--graceful-timeout", 15)?,
            shutdown: secs("--shutdown-timeout", 5)?,
            inactivity: secs("--inactivity-timeout", 0)?,
            restart_interval: secs("--restart-interval", 0)?,
            maximum_requests: number(seen, "--maximum-requests", 0, 0, u32::MAX)?,
            keep_alive: secs("--keep-alive-timeout", 2)?,
        },
        limit_request_body: number(seen, "--limit-request-body", 10_485_760, 0, 2_147_483_647)?,
        log_level: one(seen, "--log-level").unwrap_or("warn").to_string(),
        access_log: flag(seen, "--access-log"),
        server_status: flag(seen, "--server-status"),
        metrics: flag(seen, "--metrics"),
        server_root: one(seen, "--server-root").map(str::to_string),
        setup_only: flag(seen, "--setup-only"),
        user: one(seen, "--user").map(str::to_string),
        group: one(seen, "--group").map(str::to_string),
        module: one(seen, "--module").map(str::to_string),
        httpd: one(seen, "--httpd").map(str::to_string),
        modules_directory: one(seen, "--modules-directory").map(str::to_string),
    })
}

const LEVELS: &[&str] = &[
    "emerg", "alert", "crit", "error", "warn", "notice", "info", "debug", "trace1", "trace2",
    "trace3", "trace4", "trace5", "trace6", "trace7", "trace8",
];

/// A word the generated configuration can carry without quoting problems.
fn plain(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c))
}

/// Checks that need no file system.
fn check(o: &Options) -> Result<(), Error> {
    if let Some(h) = &o.host
        && h.parse::<IpAddr>().is_err()
        && !plain(h)
    {
        return Err(format!("--host: '{h}' is not an IP address or host name"));
    }
    let mp = &o.mount_point;
    if !mp.starts_with('/') || mp.contains("//") || !url_path_ok(mp) {
        return Err(format!(
            "--mount-point: '{mp}' must be a URL path starting with / (letters, digits and \
             -._~/ only)"
        ));
    }
    for (url, _) in &o.url_aliases {
        if !url.starts_with('/') || !url_path_ok(url) || url == "/" {
            return Err(format!(
                "--url-alias: '{url}' must be a URL path below / (letters, digits and -._~/ \
                 only)"
            ));
        }
    }
    let c = &o.callable_object;
    if c.is_empty()
        || c.starts_with(|ch: char| ch.is_ascii_digit())
        || !c.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '_')
    {
        return Err(format!(
            "--callable-object: '{c}' is not a Python identifier"
        ));
    }
    for word in o.log_level.split_whitespace() {
        let level = word
            .rsplit_once(':')
            .map_or(word, |(m, l)| if plain(m) { l } else { "" });
        if !LEVELS.contains(&level) {
            return Err(format!(
                "--log-level: '{word}' is not an Apache log level ({})",
                LEVELS.join(", ")
            ));
        }
    }
    if o.log_level.trim().is_empty() {
        return Err("--log-level needs a level".into());
    }
    for p in &o.python_paths {
        if p.contains(':') {
            return Err(format!(
                "--python-path: '{p}' contains ':', which separates directories; give each \
                 directory with its own --python-path"
            ));
        }
    }
    for (what, v) in [("--user", &o.user), ("--group", &o.group)] {
        if let Some(v) = v
            && !plain(v)
        {
            return Err(format!("{what}: '{v}' is not a user or group name"));
        }
    }
    if o.reload_on_changes && o.embedded {
        return Err(
            "--reload-on-changes needs daemon mode: drop --embedded-mode (in embedded mode a \
             changed script is still reloaded)"
                .into(),
        );
    }
    Ok(())
}

fn url_path_ok(p: &str) -> bool {
    p.chars()
        .all(|c| c.is_ascii_alphanumeric() || "-._~/".contains(c))
}

/// The `--help` text.
pub fn help() -> String {
    let mut out = String::from(
        "rwsgi-express: run a WSGI application under Apache httpd with mod_rwsgi, configured \
         for you.\n\n\
         Usage:\n  rwsgi-express start-server SCRIPT [options]   configure and run Apache \
         in the foreground\n  rwsgi-express setup-server SCRIPT [options]   the same as \
         start-server --setup-only\n  rwsgi-express --help | --version\n\n\
         start-server writes httpd.conf and an apachectl script into the server root, then runs\n\
         Apache in the foreground with its error log on stderr. Ctrl-C (SIGINT) or SIGTERM stops\n\
         it and everything it started; SIGHUP and SIGUSR1 are passed on (restart, graceful).\n\
         The application runs in daemon mode (WSGIDaemonProcess) with WSGIApplicationGroup\n\
         %{GLOBAL}, WSGIPassAuthorization On and WSGIRestrictEmbedded On, unless --embedded-mode.\n",
    );
    let mut section = "";
    for s in SPECS {
        if s.section != section {
            section = s.section;
            out.push_str(&format!("\n{section}:\n"));
        }
        let mut head = format!("  {}", s.name);
        for v in s.values {
            head.push(' ');
            head.push_str(v);
        }
        out.push_str(&head);
        out.push('\n');
        out.push_str(&wrap(s.help, 8, 92));
    }
    out.push_str(
        "\n  -h, --help\n        Show this help.\n  -V, --version\n        Show the version.\n",
    );
    out
}

fn wrap(text: &str, indent: usize, width: usize) -> String {
    let mut out = String::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && indent + line.len() + 1 + word.len() > width {
            out.push_str(&" ".repeat(indent));
            out.push_str(&line);
            out.push('\n');
            line.clear();
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        out.push_str(&" ".repeat(indent));
        out.push_str(&line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    fn start(s: &str) -> Options {
        match parse(&args(s)) {
            Ok(Command::Start(o)) => *o,
            other => panic!("{s}: {other:?}"),
        }
    }

    fn err(s: &str) -> String {
        match parse(&args(s)) {
            Err(e) => e,
            other => panic!("{s}: expected an error, got {other:?}"),
        }
    }

    #[test]
    fn defaults_are_mod_wsgi_express_ones() {
        let o = start("start-server app.wsgi");
        assert_eq!(o.script, "app.wsgi");
        assert_eq!(o.port, 8000);
        assert_eq!(o.host, None);
        assert_eq!(o.threads, 5);
        assert_eq!(o.processes, None);
        assert_eq!(o.mount_point, "/");
        assert_eq!(o.callable_object, "application");
        assert_eq!(o.log_level, "warn");
        assert_eq!(o.mpm, Mpm::Worker);
        let t = &o.timeouts;
        assert_eq!(
            (
                t.request, t.queue, t.socket, t.connect, t.startup, t.deadlock
            ),
            (60, 45, 60, 15, 15, 60)
        );
        assert_eq!((t.graceful, t.shutdown, t.keep_alive), (15, 5, 2));
        assert_eq!(o.limit_request_body, 10_485_760);
        assert!(!o.embedded && !o.setup_only && !o.reload_on_changes && !o.access_log);
    }

    #[test]
    fn values_flags_repeats_and_equals() {
        let o = start(
            "start-server --port=9001 app.wsgi --host 127.0.0.1 --url-alias /s /d \
             --url-alias /f /x.txt --python-path /a --python-path=/b --embedded-mode \
             --processes 3 --threads 2 --server-mpm prefork --log-level info --access-log",
        );
        assert_eq!(o.port, 9001);
        assert_eq!(o.host.as_deref(), Some("127.0.0.1"));
        assert_eq!(
            o.url_aliases,
            [("/s".into(), "/d".into()), ("/f".into(), "/x.txt".into())]
        );
        assert_eq!(o.python_paths, ["/a", "/b"]);
        assert!(o.embedded && o.access_log);
        assert_eq!((o.processes, o.threads, o.mpm), (Some(3), 2, Mpm::Prefork));
        assert!(start("setup-server app.wsgi").setup_only);
        assert_eq!(
            start("start-server a --mount-point /app/").mount_point,
            "/app"
        );
        assert_eq!(start("start-server a --mount-point /").mount_point, "/");
    }

    #[test]
    fn help_and_version_anywhere() {
        assert!(matches!(parse(&args("--help")), Ok(Command::Help)));
        assert!(matches!(
            parse(&args("start-server --help")),
            Ok(Command::Help)
        ));
        assert!(matches!(parse(&args("--version")), Ok(Command::Version)));
    }

    #[test]
    fn every_error_is_one_line_naming_the_option() {
        for (cmd, needle) in [
            ("", "no command"),
            ("serve app.wsgi", "unknown command"),
            ("start-server", "needs the WSGI script"),
            ("start-server a.wsgi b.wsgi", "unexpected argument 'b.wsgi'"),
            ("start-server a.wsgi --bogus", "unknown option '--bogus'"),
            ("start-server a.wsgi --port", "--port needs NUMBER"),
            ("start-server a.wsgi --port abc", "--port: 'abc'"),
            ("start-server a.wsgi --port 0", "--port: '0'"),
            ("start-server a.wsgi --port 70000", "--port: '70000'"),
            ("start-server a.wsgi --threads 0", "--threads: '0'"),
            ("start-server a.wsgi --processes x", "--processes: 'x'"),
            ("start-server a.wsgi --url-alias /x", "--url-alias needs"),
            ("start-server a.wsgi --url-alias x /d", "--url-alias: 'x'"),
            (
                "start-server a.wsgi --mount-point app",
                "--mount-point: 'app'",
            ),
            (
                "start-server a.wsgi --callable-object 1x",
                "--callable-object",
            ),
            (
                "start-server a.wsgi --log-level loud",
                "--log-level: 'loud'",
            ),
            ("start-server a.wsgi --server-mpm winnt", "--server-mpm"),
            ("start-server a.wsgi --python-path /a:/b", "--python-path"),
            (
                "start-server a.wsgi --port 1 --port 2",
                "--port given twice",
            ),
            ("start-server a.wsgi --setup-only=1", "takes no value"),
            ("start-server a.wsgi --host a;b", "--host"),
            (
                "start-server a.wsgi --embedded-mode --reload-on-changes",
                "needs daemon mode",
            ),
        ] {
            let e = err(cmd);
            assert!(e.contains(needle), "{cmd}: {e}");
            assert!(!e.contains('\n'), "{cmd}: {e}");
        }
    }

    #[test]
    fn help_lists_every_option() {
        let h = help();
        for s in SPECS {
            assert!(h.contains(s.name), "{}", s.name);
        }
        assert!(h.lines().all(|l| l.len() <= 100), "{h}");
    }

    #[test]
    fn log_level_accepts_module_levels() {
        assert_eq!(start("start-server a --log-level=info").log_level, "info");
        let o = parse(&[
            "start-server".to_string(),
            "a".to_string(),
            "--log-level".to_string(),
            "warn rwsgi:debug".to_string(),
        ]);
        assert!(matches!(o, Ok(Command::Start(_))), "{o:?}");
    }
}
