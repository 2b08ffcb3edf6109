//! The files rwsgi-express writes into the server root: a self-contained httpd.conf, the
//! apachectl control script, and the Python change monitor of `--reload-on-changes`. Pure
//! text generation from resolved settings; runs in the rwsgi-express tool.

use crate::options::{Mpm, Options};

/// Everything the files are generated from, with paths resolved and checked.
pub struct Plan<'a> {
    pub o: &'a Options,
    pub script: String,
    pub working_directory: String,
    pub python_paths: Vec<String>,
    pub python_home: Option<String>,
    /// (URL path, absolute target, whether the target is a directory)
    pub url_aliases: Vec<(String, String, bool)>,
    pub server_root: String,
    pub module: String,
    pub modules_dir: String,
    pub httpd: String,
    /// As Apache's `User`/`Group` take them: a name or `#id`.
    pub user: String,
    pub group: String,
    pub mime_types: String,
    pub command_line: String,
}

pub const CONF: &str = "httpd.conf";
pub const APACHECTL: &str = "apachectl";
pub const MONITOR: &str = "reload-monitor.py";
pub const PID_FILE: &str = "httpd.pid";
pub const DOCROOT: &str = "htdocs";

impl Plan<'_> {
    /// The host name used in URLs, the daemon group's name and the default server root.
    pub fn host_name(&self) -> String {
        host_name(self.o)
    }

    /// The daemon group, named as mod_wsgi-express names it: `HOST:PORT`.
    pub fn group_name(&self) -> String {
        format!("{}:{}", self.host_name(), self.o.port)
    }

    fn root(&self, name: &str) -> String {
        format!("{}/{name}", self.server_root)
    }

    fn module(&self, file: &str) -> String {
        format!("{}/{file}", self.modules_dir)
    }
}

/// `--host` as URLs and `ServerName` write it (an IPv6 address in brackets), or `localhost`.
pub fn host_name(o: &Options) -> String {
    match o.host.as_deref() {
        None => "localhost".into(),
        Some(h) if h.contains(':') => format!("[{h}]"),
        Some(h) => h.into(),
    }
}

/// A configuration argument in double quotes (paths were checked to hold no `"`, `\` or
/// newline).
fn q(s: &str) -> String {
    format!("\"{s}\"")
}

/// `Listen` argument: all interfaces, or one address (IPv6 in brackets).
fn listen(o: &Options) -> String {
    match &o.host {
        None => o.port.to_string(),
        Some(_) => format!("{}:{}", host_name(o), o.port),
    }
}

/// A module loaded unless it is compiled into httpd (or already loaded).
fn load(plan: &Plan, name: &str, file: &str) -> String {
    format!(
        "<IfModule !{name}>\n    LoadModule {name} {}\n</IfModule>\n",
        q(&plan.module(file))
    )
}

/// Apache process/thread sizing: capacity as mod_wsgi-express computes it, all of it started
/// up front and never retired for being idle.
pub struct Sizing {
    pub server_limit: u32,
    pub threads_per_child: u32,
    pub start_servers: u32,
    pub min_spare_threads: u32,
    pub max_spare_threads: u32,
    pub max_request_workers: u32,
    pub prefork_max: u32,
    pub prefork_start: u32,
    pub prefork_min_spare: u32,
    pub prefork_max_spare: u32,
}

pub fn sizing(o: &Options) -> Sizing {
    let processes = o.processes.unwrap_or(1);
    let capacity = processes.saturating_mul(o.threads);
    if o.embedded {
        // The httpd children are the application's processes and threads.
        let total = o.max_clients.unwrap_or(capacity).max(1);
        return Sizing {
            server_limit: processes,
            threads_per_child: o.threads,
            start_servers: processes,
            min_spare_threads: total,
            max_spare_threads: total,
            max_request_workers: processes * o.threads,
            prefork_max: total,
            prefork_start: total,
            prefork_min_spare: total,
            prefork_max_spare: total,
        };
    }
    // Daemon mode: the children only relay, so allow more connections than threads. An ASGI
    // application's requests are tasks, not threads: each one in flight (an open WebSocket,
    // a long poll) still holds an httpd thread, so allow many per process.
    let clients = match o.max_clients {
        Some(m) => m.max(capacity),
        None if o.interface == "asgi" => {
            (10 + 10u32.max(capacity.saturating_mul(3) / 2)).max(processes.saturating_mul(100))
        }
        None => 10 + 10u32.max(capacity.saturating_mul(3) / 2),
    };
    let tpc = if clients > 20 {
        clients / (clients / 20 + 1)
    } else {
        10
    };
    let server_limit = clients.div_ceil(tpc);
    // Every child is started up front and none is ever retired for being idle: a child the
    // parent retires closes its kept-alive connections, and a request the client was sending
    // on one of them fails (mod_wsgi-express starts one child and retires above 60 %, which
    // under steady load starts and retires children all the time).
    Sizing {
        server_limit,
        threads_per_child: tpc,
        start_servers: server_limit,
        min_spare_threads: tpc,
        max_spare_threads: server_limit * tpc,
        max_request_workers: server_limit * tpc,
        prefork_max: clients,
        prefork_start: clients,
        prefork_min_spare: 1,
        prefork_max_spare: clients,
    }
}

fn mpm_config(plan: &Plan) -> String {
    let o = plan.o;
    let (name, file) = match o.mpm {
        Mpm::Event => ("mpm_event_module", "mod_mpm_event.so"),
        Mpm::Worker => ("mpm_worker_module", "mod_mpm_worker.so"),
        Mpm::Prefork => ("mpm_prefork_module", "mod_mpm_prefork.so"),
    };
    let z = sizing(o);
    let threaded = format!(
        "    ServerLimit {sl}\n    ThreadLimit {tpc}\n    StartServers {ss}\n    \
         ThreadsPerChild {tpc}\n    MaxRequestWorkers {mrw}\n    MinSpareThreads {mins}\n    \
         MaxSpareThreads {maxs}\n    MaxConnectionsPerChild 0\n",
        sl = z.server_limit,
        tpc = z.threads_per_child,
        ss = z.start_servers,
        mrw = z.max_request_workers,
        mins = z.min_spare_threads,
        maxs = z.max_spare_threads,
    );
    // Idle keep-alive connections cost the event MPM no thread; elsewhere they pin one, and
    // MaxKeepAliveRequests is what frees a busy connection's thread for the connections
    // waiting in the listen backlog (an orderly `Connection: close`, which every client
    // handles): 100 keeps a waiting client's turn within about a second at full load.
    let keepalive_requests = |mpm: Mpm| match mpm {
        Mpm::Event => 0,
        Mpm::Worker | Mpm::Prefork => 100,
    };
    format!(
        "# The MPM ({mpm}), unless one is compiled into httpd.\n\
         <IfModule !mpm_event_module>\n<IfModule !mpm_worker_module>\n\
         <IfModule !mpm_prefork_module>\n    LoadModule {name} {path}\n</IfModule>\n\
         </IfModule>\n</IfModule>\n\
         <IfModule mpm_event_module>\n{threaded}    MaxKeepAliveRequests {ke}\n    \
         # httpd's default, written down: a child accepts connections up to ThreadsPerChild\n    \
         # plus 2 per idle thread. Whatever the factor, when all of a child's threads are busy\n    \
         # the event MPM closes its idle kept-alive connections and drops a request that\n    \
         # arrives on one. Headroom (--max-clients well above the peak number of clients)\n    \
         # makes that rare, not impossible; the worker MPM never does it.\n    \
         AsyncRequestWorkerFactor 2\n</IfModule>\n\
         <IfModule mpm_worker_module>\n{threaded}    MaxKeepAliveRequests {kw}\n</IfModule>\n\
         <IfModule mpm_prefork_module>\n    ServerLimit {pm}\n    StartServers {ps}\n    \
         MaxRequestWorkers {pm}\n    MinSpareServers {pmin}\n    MaxSpareServers {pmax}\n    \
         MaxConnectionsPerChild 0\n    MaxKeepAliveRequests {kp}\n</IfModule>\n",
        mpm = o.mpm.name(),
        path = q(&plan.module(file)),
        ke = keepalive_requests(Mpm::Event),
        kw = keepalive_requests(Mpm::Worker),
        kp = keepalive_requests(Mpm::Prefork),
        pm = z.prefork_max,
        ps = z.prefork_start,
        pmin = z.prefork_min_spare,
        pmax = z.prefork_max_spare,
    )
}

/// Foreground runs (`-DFOREGROUND`: start-server, `apachectl start -DFOREGROUND`) log to the
/// terminal; a server started in the background by apachectl logs into the server root.
fn logs(plan: &Plan) -> String {
    let o = plan.o;
    let mut s = format!(
        "<IfDefine FOREGROUND>\n    ErrorLog \"/dev/stderr\"\n</IfDefine>\n\
         <IfDefine !FOREGROUND>\n    ErrorLog {}\n</IfDefine>\nLogLevel {}\n",
        q(&plan.root("error_log")),
        o.log_level
    );
    if o.access_log {
        s.push_str(&load(plan, "log_config_module", "mod_log_config.so"));
        s.push_str(&format!(
            "LogFormat \"%h %l %u %t \\\"%r\\\" %>s %b\" common\n\
             <IfDefine FOREGROUND>\n    CustomLog \"/dev/stdout\" common\n</IfDefine>\n\
             <IfDefine !FOREGROUND>\n    CustomLog {} common\n</IfDefine>\n",
            q(&plan.root("access_log"))
        ));
    }
    s
}

fn daemon_process(plan: &Plan) -> String {
    let o = plan.o;
    let t = &o.timeouts;
    // home= also puts the working directory first on sys.path (as mod_wsgi does).
    let mut s = format!(
        "WSGIRestrictEmbedded On\nWSGIDaemonProcess {group} \\\n    display-name='(wsgi:{port})' \\\n    \
         home={home} \\\n",
        group = plan.group_name(),
        port = o.port,
        home = q(&plan.working_directory),
    );
    // processes= only when asked for: it is what makes wsgi.multiprocess true.
    if let Some(p) = o.processes {
        s.push_str(&format!("    processes={p} \\\n"));
    }
    s.push_str(&format!("    threads={} \\\n", o.threads));
    if !plan.python_paths.is_empty() {
        s.push_str(&format!(
            "    python-path={} \\\n",
            q(&plan.python_paths.join(":"))
        ));
    }
    if let Some(h) = &plan.python_home {
        s.push_str(&format!("    python-home={} \\\n", q(h)));
    }
    s.push_str(&format!(
        "    listen-backlog=100 \\\n    maximum-requests={} \\\n    queue-timeout={} \\\n    \
         socket-timeout={} \\\n    connect-timeout={} \\\n    request-timeout={} \\\n    \
         inactivity-timeout={} \\\n    startup-timeout={} \\\n    deadlock-timeout={} \\\n    \
         graceful-timeout={} \\\n    eviction-timeout=0 \\\n    restart-interval={} \\\n    \
         shutdown-timeout={}\n",
        t.maximum_requests,
        t.queue,
        t.socket,
        t.connect,
        t.request,
        t.inactivity,
        t.startup,
        t.deadlock,
        t.graceful,
        t.restart_interval,
        t.shutdown
    ));
    s
}

fn embedded_python(plan: &Plan) -> String {
    let mut s = String::new();
    if let Some(h) = &plan.python_home {
        s.push_str(&format!("WSGIPythonHome {}\n", q(h)));
    }
    let mut path = vec![plan.working_directory.clone()];
    path.extend(plan.python_paths.iter().cloned());
    s.push_str(&format!("WSGIPythonPath {}\n", q(&path.join(":"))));
    s
}

fn aliases(plan: &Plan) -> String {
    // Longer URL paths first, so /static/img is not swallowed by /static.
    let mut list: Vec<&(String, String, bool)> = plan.url_aliases.iter().collect();
    list.sort_by(|a, b| b.0.cmp(&a.0));
    let mut s = String::new();
    for (url, target, is_dir) in list {
        s.push_str(&format!("Alias {} {}\n", q(url), q(target)));
        if *is_dir {
            s.push_str(&format!(
                "<Directory {}>\n    Require all granted\n</Directory>\n",
                q(target)
            ));
        } else {
            let (dir, file) = split(target);
            s.push_str(&format!(
                "<Directory {}>\n    <Files {}>\n        Require all granted\n    </Files>\n\
                 </Directory>\n",
                q(dir),
                q(file)
            ));
        }
    }
    s
}

/// Splits an absolute file path into its directory and file name.
fn split(path: &str) -> (&str, &str) {
    match path.rsplit_once('/') {
        Some(("", f)) => ("/", f),
        Some((d, f)) => (d, f),
        None => (".", path),
    }
}

/// `--server-status` and `--metrics`: the operators' pages, local clients only (the health
/// check answers anyone: a load balancer asks from elsewhere, and it tells only readiness).
fn observability(plan: &Plan) -> String {
    let o = plan.o;
    let mut s = String::new();
    if o.server_status || o.metrics {
        s.push_str(&load(plan, "authz_host_module", "mod_authz_host.so"));
    }
    if o.server_status {
        s.push_str(&load(plan, "status_module", "mod_status.so"));
        s.push_str(
            "ExtendedStatus On\n<Location /server-status>\n    SetHandler server-status\n    \
             Require local\n</Location>\n",
        );
    }
    if o.metrics {
        s.push_str(
            "<Location /rwsgi-metrics>\n    SetHandler rwsgi-metrics\n    Require local\n\
             </Location>\n<Location /rwsgi-health>\n    SetHandler rwsgi-health\n    \
             Require all granted\n</Location>\n",
        );
    }
    s
}

/// The whole httpd.conf.
pub fn httpd_conf(plan: &Plan) -> String {
    let o = plan.o;
    let t = &o.timeouts;
    let mut s = format!(
        "# Generated by rwsgi-express {version}; regenerated on every start.\n# {cmd}\n\
         ServerRoot {root}\nServerName {host}\nListen {listen}\nPidFile {pid}\n\
         DefaultRuntimeDir {root}\nMutex \"file:{root_raw}\" default\nUser {user}\nGroup {group}\n\
         ServerTokens ProductOnly\nServerSignature Off\nHostnameLookups Off\n\n",
        version = env!("CARGO_PKG_VERSION"),
        cmd = plan.command_line.replace('\n', " "),
        root = q(&plan.server_root),
        root_raw = plan.server_root,
        // ServerName takes no brackets (they read as a wildcard pattern).
        host = o
            .host
            .as_deref()
            .filter(|h| !h.contains(':'))
            .unwrap_or("localhost"),
        listen = listen(o),
        pid = q(&plan.root(PID_FILE)),
        user = plan.user,
        group = plan.group,
    );
    s.push_str(&mpm_config(plan));
    s.push('\n');
    for (name, file) in [
        ("unixd_module", "mod_unixd.so"),
        ("authn_core_module", "mod_authn_core.so"),
        ("authz_core_module", "mod_authz_core.so"),
        ("mime_module", "mod_mime.so"),
        ("alias_module", "mod_alias.so"),
        ("dir_module", "mod_dir.so"),
        ("reqtimeout_module", "mod_reqtimeout.so"),
    ] {
        s.push_str(&load(plan, name, file));
    }
    s.push_str(&format!(
        "LoadModule rwsgi_module {}\n\nTypesConfig {}\nTimeout {}\nListenBacklog 500\n",
        q(&plan.module),
        q(&plan.mime_types),
        t.socket
    ));
    if t.keep_alive > 0 {
        s.push_str(&format!(
            "KeepAlive On\nKeepAliveTimeout {}\n",
            t.keep_alive
        ));
    } else {
        s.push_str("KeepAlive Off\n");
    }
    s.push_str(&format!(
        "RequestReadTimeout header=15-30,MinRate=500 body=15,MinRate=500\n\
         LimitRequestBody {}\n\n",
        o.limit_request_body
    ));
    s.push_str(&logs(plan));
    s.push_str(&format!(
        "\n<Directory />\n    AllowOverride None\n    Require all denied\n</Directory>\n\
         DocumentRoot {docroot}\n<Directory {docroot}>\n    Require all granted\n</Directory>\n\
         DirectoryIndex index.html\n\n",
        docroot = q(&plan.root(DOCROOT))
    ));
    s.push_str(&aliases(plan));
    s.push_str(&observability(plan));
    s.push('\n');
    if o.embedded {
        s.push_str(&embedded_python(plan));
    } else {
        s.push_str(&daemon_process(plan));
    }
    let process_group = if o.embedded {
        "%{GLOBAL}".to_string()
    } else {
        plan.group_name()
    };
    let (dir, file) = split(&plan.script);
    s.push_str(&format!(
        "WSGIApplicationGroup %{{GLOBAL}}\nWSGIPassAuthorization On\n\
         WSGIScriptAlias {mount} {script} process-group={pg} application-group=%{{GLOBAL}} \
         callable-object={callable}{interface}\n<Directory {dir}>\n    <Files {file}>\n        \
         Require all granted\n    </Files>\n</Directory>\n",
        mount = q(&o.mount_point),
        script = q(&plan.script),
        pg = process_group,
        callable = o.callable_object,
        interface = match o.interface.as_str() {
            "auto" => String::new(),
            i => format!(" application-interface={i}"),
        },
        dir = q(dir),
        file = q(file),
    ));
    if o.reload_on_changes {
        s.push_str(&format!(
            "WSGIImportScript {} process-group={} application-group=%{{GLOBAL}}\n",
            q(&plan.root(MONITOR)),
            process_group
        ));
    }
    s
}

/// Single-quotes a word for sh.
pub fn sh(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The control script of `--setup-only`.
pub fn apachectl(plan: &Plan) -> String {
    format!(
        "#!/bin/sh\n\
         # Generated by rwsgi-express {version}: controls the Apache server configured in\n\
         # {conf}.\n\
         #   apachectl start                 start it in the background (logs: error_log here)\n\
         #   apachectl start -DFOREGROUND    run it in the foreground, logging to the terminal\n\
         #   apachectl stop | restart | graceful | graceful-stop | configtest\n\
         HTTPD={httpd}\n\
         CONF={conf_q}\n\
         cd {root} || exit 1\n\
         case \"$1\" in\n\
         start|stop|restart|graceful|graceful-stop)\n    \
             cmd=$1\n    shift\n    exec \"$HTTPD\" -f \"$CONF\" -k \"$cmd\" \"$@\"\n    ;;\n\
         configtest)\n    exec \"$HTTPD\" -f \"$CONF\" -t\n    ;;\n\
         *)\n    echo \"usage: $0 start|stop|restart|graceful|graceful-stop|configtest\" >&2\n    \
             exit 2\n    ;;\n\
         esac\n",
        version = env!("CARGO_PKG_VERSION"),
        conf = plan.root(CONF),
        conf_q = sh(&plan.root(CONF)),
        httpd = sh(&plan.httpd),
        root = sh(&plan.server_root),
    )
}

/// The change monitor `--reload-on-changes` imports into each daemon process (the same
/// approach as mod_wsgi-express's reloader, written here).
pub fn monitor() -> String {
    r#"# Generated by rwsgi-express --reload-on-changes. Imported into each daemon process by
# WSGIImportScript: a thread looks at the files of every loaded module once a second and
# stops this process (SIGINT) when one changed; mod_rwsgi starts a fresh process, which
# imports the new code.
import os
import signal
import sys
import threading
import time

_INTERVAL = 1.0
_STARTED = time.time()
_seen = {}


def _changed(path):
    try:
        mtime = os.stat(path).st_mtime
    except OSError:
        return path in _seen  # it existed when first looked at: removed since
    if path not in _seen:
        _seen[path] = mtime
        # Seen for the first time, after its import: a file modified since this process
        # started may have changed after it was imported.
        return _STARTED < mtime <= time.time()
    return mtime != _seen[path]


def _files():
    for module in list(sys.modules.values()):
        try:
            path = getattr(module, "__file__", None)
        except Exception:
            continue
        if isinstance(path, str) and path:
            if path.endswith((".pyc", ".pyo")):
                path = path[:-1]
            yield path


def _watch():
    while True:
        for path in _files():
            if _changed(path):
                print("rwsgi-express: %s changed; restarting daemon process %d"
                      % (path, os.getpid()), file=sys.stderr, flush=True)
                os.kill(os.getpid(), signal.SIGINT)
                return
        time.sleep(_INTERVAL)


# The daemon takes its stop signals with sigwait(): this thread must not receive them.
_signals = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2}
_old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, _signals)
try:
    threading.Thread(target=_watch, name="rwsgi-express-monitor", daemon=True).start()
finally:
    signal.pthread_sigmask(signal.SIG_SETMASK, _old_mask)
"#
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::options::{Command, parse};

    fn options(args: &str) -> Options {
        let v: Vec<String> = args.split_whitespace().map(String::from).collect();
        match parse(&v) {
            Ok(Command::Start(o)) => *o,
            other => panic!("{other:?}"),
        }
    }

    fn plan(o: &Options) -> Plan<'_> {
        Plan {
            o,
            script: "/srv/app/app.wsgi".into(),
            working_directory: "/srv/app".into(),
            python_paths: vec!["/srv/lib".into()],
            python_home: None,
            url_aliases: vec![
                ("/static".into(), "/srv/static".into(), true),
                ("/static/x".into(), "/srv/x".into(), true),
                ("/robots.txt".into(), "/srv/robots.txt".into(), false),
            ],
            server_root: "/tmp/root".into(),
            module: "/m/mod_rwsgi.so".into(),
            modules_dir: "/usr/lib/apache2/modules".into(),
            httpd: "/usr/sbin/apache2".into(),
            user: "www-data".into(),
            group: "www-data".into(),
            mime_types: "/etc/mime.types".into(),
            command_line: "rwsgi-express start-server app.wsgi".into(),
        }
    }

    #[test]
    fn daemon_mode_config() {
        let o = options("start-server app.wsgi --host 127.0.0.1 --port 8123 --processes 2");
        let c = httpd_conf(&plan(&o));
        for want in [
            "Listen 127.0.0.1:8123",
            "PidFile \"/tmp/root/httpd.pid\"",
            "DefaultRuntimeDir \"/tmp/root\"",
            "WSGIRestrictEmbedded On",
            "WSGIDaemonProcess 127.0.0.1:8123 \\",
            "processes=2 \\",
            "threads=5 \\",
            "home=\"/srv/app\" \\",
            "python-path=\"/srv/lib\"",
            "queue-timeout=45",
            "request-timeout=60",
            "connect-timeout=15",
            "socket-timeout=60",
            "WSGIApplicationGroup %{GLOBAL}",
            "WSGIPassAuthorization On",
            "WSGIScriptAlias \"/\" \"/srv/app/app.wsgi\" process-group=127.0.0.1:8123 \
             application-group=%{GLOBAL} callable-object=application",
            "LoadModule mpm_worker_module \"/usr/lib/apache2/modules/mod_mpm_worker.so\"",
            "    StartServers 3\n    ThreadsPerChild 12\n    MaxRequestWorkers 36\n    \
             MinSpareThreads 12\n    MaxSpareThreads 36\n",
            "LoadModule rwsgi_module \"/m/mod_rwsgi.so\"",
            "ErrorLog \"/dev/stderr\"",
            "<Files \"robots.txt\">",
        ] {
            assert!(c.contains(want), "missing {want:?} in\n{c}");
        }
        assert!(!c.contains("CustomLog"));
        assert!(!c.contains("WSGIImportScript"));
        // The longer alias comes first.
        assert!(c.find("Alias \"/static/x\"").unwrap() < c.find("Alias \"/static\"").unwrap());
    }

    #[test]
    fn server_status_and_metrics_pages() {
        let c = httpd_conf(&plan(&options("start-server app.wsgi")));
        assert!(!c.contains("server-status") && !c.contains("rwsgi-metrics"));
        let c = httpd_conf(&plan(&options(
            "start-server app.wsgi --server-status --metrics",
        )));
        for want in [
            "LoadModule status_module \"/usr/lib/apache2/modules/mod_status.so\"",
            "LoadModule authz_host_module \"/usr/lib/apache2/modules/mod_authz_host.so\"",
            "<Location /server-status>\n    SetHandler server-status\n    Require local\n",
            "<Location /rwsgi-metrics>\n    SetHandler rwsgi-metrics\n    Require local\n",
            "<Location /rwsgi-health>\n    SetHandler rwsgi-health\n    Require all granted\n",
        ] {
            assert!(c.contains(want), "missing {want:?} in\n{c}");
        }
    }

    #[test]
    fn embedded_mode_config() {
        let o = options(
            "start-server app.wsgi --embedded-mode --access-log --server-mpm prefork \
             --processes 3 --threads 1",
        );
        let c = httpd_conf(&plan(&o));
        assert!(!c.contains("WSGIDaemonProcess"));
        assert!(!c.contains("WSGIRestrictEmbedded"));
        assert!(c.contains("WSGIPythonPath \"/srv/app:/srv/lib\""));
        assert!(c.contains("process-group=%{GLOBAL}"));
        assert!(c.contains("Listen 8000\n"));
        assert!(c.contains("CustomLog \"/dev/stdout\" common"));
        assert!(c.contains("mod_mpm_prefork.so"));
        assert!(c.contains("    MaxRequestWorkers 3\n    MinSpareServers 3"));
    }

    #[test]
    fn sizing_is_mod_wsgi_express_capacity_started_up_front() {
        // 1 process x 5 threads: 10 + max(10, 7) = 20 clients, 10 threads per child.
        let z = sizing(&options("start-server a"));
        assert_eq!((z.server_limit, z.threads_per_child), (2, 10));
        assert_eq!(z.max_request_workers, 20);
        // 4 x 10: 10 + 60 = 70 clients: 70 / (3 + 1) = 17 threads per child, 5 children.
        let z = sizing(&options("start-server a --processes 4 --threads 10"));
        assert_eq!((z.server_limit, z.threads_per_child), (5, 17));
        // All of it started up front, and never retired for being idle.
        assert_eq!((z.start_servers, z.max_spare_threads), (5, 85));
        assert_eq!(z.max_request_workers, 85);
        assert_eq!(
            (z.prefork_start, z.prefork_max_spare, z.prefork_max),
            (70, 70, 70)
        );
        let z = sizing(&options(
            "start-server a --embedded-mode --processes 2 --threads 3",
        ));
        assert_eq!((z.server_limit, z.threads_per_child), (2, 3));
        assert_eq!(z.max_request_workers, 6);
    }

    #[test]
    fn asgi_is_sized_for_connections_not_threads() {
        // 2 processes x 5 threads: 100 per process = 200 clients (not 10 + 15 = 25, which is
        // 36 in whole children), in children of 200 / (10 + 1) = 18 threads: 12 children.
        let o = options("start-server a --processes 2 --application-interface asgi");
        let z = sizing(&o);
        assert_eq!((z.server_limit, z.threads_per_child), (12, 18));
        assert!(httpd_conf(&plan(&o)).contains(" application-interface=asgi\n"));
        // An explicit --max-clients wins (40: 3 children of 13 threads, rounded up to 4);
        // auto keeps mod_wsgi-express's sizing.
        let z = sizing(&options(
            "start-server a --application-interface asgi --max-clients 40",
        ));
        assert_eq!(z.max_request_workers, 52);
        let o = options("start-server a --processes 2");
        assert_eq!(sizing(&o).max_request_workers, 36);
        assert!(!httpd_conf(&plan(&o)).contains("application-interface"));
    }

    #[test]
    fn reload_monitor_is_imported_into_the_daemon_group() {
        let o = options("start-server app.wsgi --reload-on-changes");
        let c = httpd_conf(&plan(&o));
        assert!(c.contains(
            "WSGIImportScript \"/tmp/root/reload-monitor.py\" process-group=localhost:8000 \
             application-group=%{GLOBAL}"
        ));
        assert!(monitor().contains("pthread_sigmask"));
    }

    #[test]
    fn apachectl_quotes_paths() {
        let o = options("start-server app.wsgi");
        let mut p = plan(&o);
        p.server_root = "/tmp/it's".into();
        let s = apachectl(&p);
        assert!(s.starts_with("#!/bin/sh\n"));
        assert!(s.contains(r"CONF='/tmp/it'\''s/httpd.conf'"));
        assert!(s.contains("exec \"$HTTPD\" -f \"$CONF\" -k \"$cmd\" \"$@\""));
    }

    #[test]
    fn ipv6_host() {
        let o = options("start-server app.wsgi --host ::1 --port 9000");
        let p = plan(&o);
        let c = httpd_conf(&p);
        assert!(c.contains("Listen [::1]:9000\n"));
        assert!(c.contains("ServerName localhost\n"));
        assert_eq!(p.group_name(), "[::1]:9000");
    }

    #[test]
    fn split_paths() {
        assert_eq!(split("/a/b.wsgi"), ("/a", "b.wsgi"));
        assert_eq!(split("/b.wsgi"), ("/", "b.wsgi"));
    }
}
