//! Properties of the directive parsers (`src/config/`): the word splitter, the
//! `WSGIDaemonProcess` option parser, every directive's parser and the `WSGITrustedProxies`
//! networks. Tool code (fuzz targets and the corpus replay test).
#![forbid(unsafe_code)]

use super::{assert_bounded, fields};
use crate::config::daemon::{self, DaemonSpec, GroupSpec, UserSpec};
use crate::config::groups::{Place, Server, Sole};
use crate::config::net::IpNet;
use crate::config::tokenize::words;
use crate::config::{
    self, AliasPattern, Applied, DIRECTIVES, DirConfig, GlobalConfig, ScriptAlias, ServerConfig,
    Support, Targets,
};
use crate::error::{Code, Error};
use std::net::IpAddr;
use std::time::Duration;

/// Whitespace as httpd's `ap_getword_conf` sees it (`apr_isspace` in the C locale).
fn httpd_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\x0b' | '\x0c' | '\r')
}

/// One word as it can be written in a configuration line so that the splitter gives it back,
/// or `None` if httpd's quoting cannot express it (a word that needs quotes and ends in `\`).
pub fn render_word(w: &str) -> Option<String> {
    let bare = !w.is_empty()
        && !w.chars().any(httpd_space)
        && !w.starts_with(['"', '\''])
        && !w.contains("=\"")
        && !w.contains("='");
    if bare {
        return Some(w.to_string());
    }
    if w.ends_with('\\') {
        return None;
    }
    Some(format!("\"{}\"", w.replace('"', "\\\"")))
}

/// Words joined into one configuration line, if every word can be written.
pub fn render_words(ws: &[String]) -> Option<String> {
    let parts: Option<Vec<String>> = ws.iter().map(|w| render_word(w)).collect();
    Some(parts?.join(" "))
}

/// The splitter: bounded output, and words written with httpd's quoting come back unchanged.
pub fn tokenize(data: &[u8]) {
    let line = String::from_utf8_lossy(data);
    let ws = words(&line);
    let chars = line.chars().count();
    assert!(
        ws.len() <= chars,
        "{} words from {chars} characters",
        ws.len()
    );
    let total: usize = ws.iter().map(|w| w.chars().count()).sum();
    assert!(total <= chars, "{total} characters of words from {chars}");
    // The splitter's own output, written back, splits the same way.
    if let Some(again) = render_words(&ws) {
        assert_eq!(words(&again), ws, "re-rendered as {again:?}");
    }
    // Any list of words (the input's fields) survives a round trip.
    let list = fields(data);
    if let Some(line) = render_words(&list) {
        assert_eq!(words(&line), list, "rendered as {line:?}");
    }
}

fn user(u: &UserSpec) -> String {
    match u {
        UserSpec::Name(n) => n.clone(),
        UserSpec::Id(i) => format!("#{i}"),
    }
}

fn group(g: &GroupSpec) -> String {
    match g {
        GroupSpec::Name(n) => n.clone(),
        GroupSpec::Id(i) => format!("#{i}"),
    }
}

fn secs(d: Duration) -> String {
    format!("{}.{:09}", d.as_secs(), d.subsec_nanos())
}

fn millis(d: Duration) -> String {
    let n = d.as_nanos();
    format!("{}.{:06}", n / 1_000_000, n % 1_000_000)
}

/// The canonical words of a daemon definition: the name, then every option whose value is not
/// mod_wsgi's default. Destructures the whole struct so a new field cannot be forgotten.
pub fn render_daemon(s: &DaemonSpec) -> Vec<String> {
    let d = DaemonSpec::new(s.name.clone());
    let DaemonSpec {
        name,
        processes,
        processes_given,
        threads,
        display_name,
        home,
        user: run_as,
        group: primary,
        supplementary_groups,
        umask,
        lang,
        locale,
        python_home,
        python_path,
        python_eggs,
        switch_interval,
        stack_size,
        maximum_requests,
        restart_interval,
        inactivity_timeout,
        request_timeout,
        interrupt_timeout,
        deadlock_timeout,
        startup_timeout,
        graceful_timeout,
        eviction_timeout,
        shutdown_timeout,
        connect_timeout,
        socket_timeout,
        queue_timeout,
        listen_backlog,
        socket_user,
        send_buffer_size,
        receive_buffer_size,
        header_buffer_size,
        response_buffer_size,
        response_socket_timeout,
        response_flush_delay,
        cpu_time_limit,
        cpu_priority,
        memory_limit,
        virtual_memory_limit,
        script_user,
        script_group,
        chroot,
        server_metrics,
        lifespan,
        lifespan_timeout,
        max_tasks,
    } = s;
    let mut out = vec![name.clone()];
    let mut opt = |k: &str, v: String| out.push(format!("{k}={v}"));
    if *processes_given {
        opt("processes", processes.to_string());
    }
    if *threads != d.threads {
        opt("threads", threads.to_string());
    }
    let texts = [
        ("display-name", display_name),
        ("home", home),
        ("lang", lang),
        ("locale", locale),
        ("python-home", python_home),
        ("python-eggs", python_eggs),
        ("chroot", chroot),
    ];
    for (k, v) in texts {
        if let Some(v) = v {
            opt(k, v.clone());
        }
    }
    for (k, u) in [
        ("user", run_as),
        ("socket-user", socket_user),
        ("script-user", script_user),
    ] {
        if let Some(u) = u {
            opt(k, user(u));
        }
    }
    for (k, g) in [("group", primary), ("script-group", script_group)] {
        if let Some(g) = g {
            opt(k, group(g));
        }
    }
    if !supplementary_groups.is_empty() {
        let list: Vec<String> = supplementary_groups.iter().map(group).collect();
        opt("supplementary-groups", list.join(","));
    }
    if let Some(m) = umask {
        opt("umask", format!("0{m:o}"));
    }
    if !python_path.is_empty() {
        opt("python-path", python_path.join(":"));
    }
    if let Some(x) = switch_interval {
        opt("switch-interval", x.to_string());
    }
    let numbers = [
        ("stack-size", stack_size.map(|n| n.to_string())),
        ("cpu-time-limit", cpu_time_limit.map(|n| n.to_string())),
        ("memory-limit", memory_limit.map(|n| n.to_string())),
        (
            "virtual-memory-limit",
            virtual_memory_limit.map(|n| n.to_string()),
        ),
        ("socket-timeout", socket_timeout.map(secs)),
        ("response-socket-timeout", response_socket_timeout.map(secs)),
    ];
    for (k, v) in numbers {
        if let Some(v) = v {
            opt(k, v);
        }
    }
    let changed = [
        (
            "maximum-requests",
            *maximum_requests != d.maximum_requests,
            maximum_requests.to_string(),
        ),
        (
            "listen-backlog",
            *listen_backlog != d.listen_backlog,
            listen_backlog.to_string(),
        ),
        (
            "send-buffer-size",
            *send_buffer_size != d.send_buffer_size,
            send_buffer_size.to_string(),
        ),
        (
            "receive-buffer-size",
            *receive_buffer_size != d.receive_buffer_size,
            receive_buffer_size.to_string(),
        ),
        (
            "header-buffer-size",
            *header_buffer_size != d.header_buffer_size,
            header_buffer_size.to_string(),
        ),
        (
            "response-buffer-size",
            *response_buffer_size != d.response_buffer_size,
            response_buffer_size.to_string(),
        ),
        (
            "cpu-priority",
            *cpu_priority != d.cpu_priority,
            cpu_priority.to_string(),
        ),
        (
            "response-flush-delay",
            *response_flush_delay != d.response_flush_delay,
            millis(*response_flush_delay),
        ),
        (
            "server-metrics",
            *server_metrics != d.server_metrics,
            if *server_metrics { "On" } else { "Off" }.to_string(),
        ),
        (
            "lifespan",
            *lifespan != d.lifespan,
            lifespan.as_str().to_string(),
        ),
        (
            "max-tasks",
            *max_tasks != d.max_tasks,
            max_tasks.to_string(),
        ),
    ];
    for (k, differs, v) in changed {
        if differs {
            opt(k, v);
        }
    }
    let durations = [
        ("restart-interval", restart_interval, d.restart_interval),
        (
            "inactivity-timeout",
            inactivity_timeout,
            d.inactivity_timeout,
        ),
        ("request-timeout", request_timeout, d.request_timeout),
        ("interrupt-timeout", interrupt_timeout, d.interrupt_timeout),
        ("deadlock-timeout", deadlock_timeout, d.deadlock_timeout),
        ("startup-timeout", startup_timeout, d.startup_timeout),
        ("graceful-timeout", graceful_timeout, d.graceful_timeout),
        ("eviction-timeout", eviction_timeout, d.eviction_timeout),
        ("shutdown-timeout", shutdown_timeout, d.shutdown_timeout),
        ("connect-timeout", connect_timeout, d.connect_timeout),
        ("queue-timeout", queue_timeout, d.queue_timeout),
        ("lifespan-timeout", lifespan_timeout, d.lifespan_timeout),
    ];
    for (k, v, default) in durations {
        if *v != default {
            opt(k, secs(*v));
        }
    }
    out
}

/// A directive's error: a configuration error code, a message that starts with the
/// directive's name, and a length bounded by the input.
pub fn check_error(e: &Error, name: &str, input_len: usize) {
    assert!(
        matches!(
            e.code,
            Code::BadDirective | Code::NotSupported | Code::NeedsNewerPython
        ),
        "{name}: unexpected code in {e}"
    );
    assert!(
        e.msg.starts_with(&format!("{name}:"))
            || e.msg.starts_with(&format!("{name} "))
            || e.msg.starts_with(&format!("{name}>:")),
        "error does not name {name}: {e}"
    );
    assert_bounded(&e.msg, input_len);
}

/// The `WSGIDaemonProcess` option parser on arbitrary words: it never panics, an error names
/// the directive, and an accepted definition survives rendering and parsing again.
pub fn daemon(data: &[u8]) {
    let ws = fields(data);
    match daemon::parse(&ws) {
        Ok(spec) => {
            assert_eq!(spec.name, ws[0]);
            assert!(!spec.name.is_empty() && !spec.name.contains('/'));
            let canonical = render_daemon(&spec);
            assert!(
                canonical.len() <= ws.len(),
                "{canonical:?} has more words than {ws:?}"
            );
            assert_eq!(
                daemon::parse(&canonical).as_ref(),
                Ok(&spec),
                "canonical form {canonical:?}"
            );
            if spec.display_name.as_deref() == Some("%{GROUP}") {
                assert_eq!(
                    spec.display_name_expanded(),
                    Some(format!("(wsgi:{})", spec.name))
                );
            }
        }
        Err(e) => check_error(&e, "WSGIDaemonProcess", data.len()),
    }
}

/// The three configuration objects a directive writes to.
#[derive(Default)]
struct Cfg {
    server: ServerConfig,
    dir: DirConfig,
    global: GlobalConfig,
    /// Where the next directive is read.
    place: Place,
}

impl Cfg {
    fn apply(&mut self, spec: &config::Directive, raw: &str) -> Result<Applied, Error> {
        config::apply(
            spec,
            raw,
            Targets {
                server: &mut self.server,
                dir: &mut self.dir,
                global: &mut self.global,
                place: self.place,
            },
        )
    }
}

/// A directive written in canonical words, applied to a fresh configuration; `None` if the
/// words cannot be written as a configuration line.
fn reapply(name: &str, ws: &[String]) -> Option<Cfg> {
    let line = render_words(ws)?;
    let mut fresh = Cfg::default();
    let spec = config::directive(name).expect("a known directive");
    fresh
        .apply(spec, &line)
        .unwrap_or_else(|e| panic!("canonical {line:?} refused: {e}"));
    Some(fresh)
}

fn no_duplicates<T: PartialEq + std::fmt::Debug>(list: &[T]) {
    for (i, x) in list.iter().enumerate() {
        assert!(!list[..i].contains(x), "{x:?} listed twice in {list:?}");
    }
}

/// The flag value a directive's single word asks for, if it is On or Off.
fn flag_word(raw: &str) -> Option<bool> {
    match words(raw).as_slice() {
        [w] if w.eq_ignore_ascii_case("on") => Some(true),
        [w] if w.eq_ignore_ascii_case("off") => Some(false),
        _ => None,
    }
}

/// What an accepted directive must have stored; `before` is the configuration before it.
fn check_applied(name: &str, raw: &str, c: &Cfg, before_aliases: usize, applied: &Applied) {
    let dir_flags: [(&str, Option<bool>); 7] = [
        ("WSGIPassAuthorization", c.dir.pass_authorization),
        ("WSGIScriptReloading", c.dir.script_reloading),
        ("WSGIErrorOverride", c.dir.error_override),
        ("WSGIChunkedRequest", c.dir.chunked_request),
        ("WSGIIgnoreActivity", c.dir.ignore_activity),
        ("WSGIEnableSendfile", c.dir.enable_sendfile),
        ("WSGIDontWriteBytecode", Some(c.global.dont_write_bytecode)),
    ];
    for (n, v) in dir_flags {
        if n == name {
            assert_eq!(v, flag_word(raw), "{name} {raw:?}");
        }
    }
    match name {
        "WSGIScriptAlias" | "WSGIScriptAliasMatch" => {
            assert_eq!(c.server.aliases.len(), before_aliases + 1);
            let a = c.server.aliases.last().expect("an alias was added");
            assert!(!a.target.is_empty());
            let regex = matches!(a.pattern, AliasPattern::Regex(_));
            assert_eq!(regex, name == "WSGIScriptAliasMatch");
            assert_eq!(
                *applied,
                if regex {
                    Applied::CompileRegex(before_aliases)
                } else {
                    Applied::Done
                }
            );
            // Canonical form: pattern, target and the options that are set.
            let (AliasPattern::Prefix(p) | AliasPattern::Regex(p)) = &a.pattern;
            let mut ws = vec![p.clone(), a.target.clone()];
            let o = &a.options;
            for (k, v) in [
                ("process-group", &o.process_group),
                ("application-group", &o.application_group),
                ("callable-object", &o.callable_object),
            ] {
                if let Some(v) = v {
                    ws.push(format!("{k}={v}"));
                }
            }
            if let Some(pa) = o.pass_authorization {
                ws.push(format!(
                    "pass-authorization={}",
                    if pa { "On" } else { "Off" }
                ));
            }
            // Its id is its place among every alias read.
            assert_eq!(a.id, c.global.groups.aliases.len() - 1);
            if let Some(fresh) = reapply(name, &ws) {
                let a = ScriptAlias { id: 0, ..a.clone() };
                assert_eq!(fresh.server.aliases, [a], "{ws:?}");
            }
        }
        "WSGIDaemonProcess" => {
            let s = c.global.daemons.last().expect("a daemon was added");
            let canonical = render_daemon(s);
            assert_eq!(daemon::parse(&canonical).as_ref(), Ok(s));
            if let Some(fresh) = reapply(name, &canonical) {
                assert_eq!(
                    fresh.global.daemons,
                    std::slice::from_ref(s),
                    "{canonical:?}"
                );
            }
        }
        "WSGITrustedProxies" => {
            for n in c.dir.trusted_proxies.as_deref().unwrap_or_default() {
                assert!(n.contains(n.addr()), "{n:?} does not contain its address");
            }
        }
        "WSGITrustedProxyHeaders" => {
            let list = c.dir.trusted_proxy_headers.as_deref().unwrap_or_default();
            assert!(!list.is_empty());
            for k in list {
                assert_eq!(crate::wsgi::proxy::header_env_name(k).as_ref(), Some(k));
            }
        }
        "WSGIApplicationGroup" | "WSGIProcessGroup" | "WSGICallableObject" => {
            let v = match name {
                "WSGIApplicationGroup" => &c.dir.application_group,
                "WSGIProcessGroup" => &c.dir.process_group,
                _ => &c.dir.callable_object,
            };
            let v = v.as_deref().expect("stored");
            // Either one whole expansion or plain text, never a mix.
            if v.starts_with("%{") && v.ends_with('}') {
                assert!(v.len() > 3);
            } else {
                assert!(!v.contains("%{"), "{name} stored {v:?}");
            }
        }
        "WSGIPythonOptimize" => assert!(c.global.optimize <= 2),
        "WSGIPythonHome" => {
            assert!(
                c.global
                    .python_home
                    .as_deref()
                    .unwrap_or("")
                    .starts_with('/')
            )
        }
        "WSGIPythonPath" => assert!(c.global.python_path.iter().all(|p| !p.is_empty())),
        "WSGISwitchInterval" => {
            let x = c.global.switch_interval.expect("stored");
            assert!(x > 0.0 && x.is_finite());
        }
        _ => {}
    }
}

/// Lines of `<directive name> <arguments>` applied in order to one configuration, as httpd
/// would read them: no panic, errors name the directive, accepted values are what was asked
/// and have a canonical form that reads back the same; lists stay free of duplicates.
pub fn directive(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut c = Cfg::default();
    for line in text.split('\n').take(32) {
        let (first, rest) = line.split_once(' ').unwrap_or((line, ""));
        let (spec, raw) = match config::directive(first) {
            Some(spec) => (spec, rest),
            None => {
                // Not a name: pick a directive from the bytes so no input is wasted.
                let i = line.bytes().map(usize::from).sum::<usize>() % DIRECTIVES.len();
                (&DIRECTIVES[i], line)
            }
        };
        let name = spec.name();
        // The main server or one of two virtual hosts, in a section or not, from the bytes.
        let h = line
            .bytes()
            .fold(0usize, |h, b| h.wrapping_mul(31).wrapping_add(b.into()));
        c.place = Place {
            server: match h % 3 {
                0 => Server::Main,
                n => Server::Virtual(n),
            },
            section: (h / 3) % 2 == 1,
        };
        let before_aliases = c.server.aliases.len();
        let before_daemons = c.global.daemons.len();
        match c.apply(spec, raw) {
            Ok(applied) => {
                assert!(
                    spec.support != Support::NotYet,
                    "{name} is not supported yet but was accepted"
                );
                if name == "WSGIDaemonProcess" {
                    assert_eq!(c.global.daemons.len(), before_daemons + 1);
                }
                check_applied(name, raw, &c, before_aliases, &applied);
                // The same arguments on a fresh configuration give the same result.
                let expected = match applied {
                    Applied::Done => Applied::Done,
                    Applied::CompileRegex(_) => Applied::CompileRegex(0),
                };
                assert_eq!(Cfg::default().apply(spec, raw), Ok(expected));
            }
            Err(e) => {
                check_error(&e, name, raw.len());
                if spec.support == Support::NotYet {
                    assert_eq!(e.code, Code::NotSupported);
                }
            }
        }
        let g = &c.global;
        no_duplicates(&g.notices);
        no_duplicates(&g.process_group_refs);
        no_duplicates(&g.daemons.iter().map(|d| &d.name).collect::<Vec<_>>());
        no_duplicates(c.dir.trusted_proxy_headers.as_deref().unwrap_or_default());
        // One notice per kind at most: the five deprecated directives, WSGISocketRotation On,
        // WSGIAcceptMutex and WSGITelemetryService.
        assert!(g.notices.len() <= 8, "{:?}", g.notices);
    }
    check_groups(&mut c.global);
}

/// The one-group rule on whatever was read: a verdict per alias; two aliases that run in the
/// main interpreter never share a process; one main group per process; `%{GLOBAL}` preloads
/// always run in main, other ones only in their process's main group.
fn check_groups(g: &mut GlobalConfig) {
    g.finish_groups();
    let daemons: Vec<String> = g.daemons.iter().map(|d| d.name.clone()).collect();
    let plan = &g.groups_plan;
    assert_eq!(plan.sole.len(), g.groups.aliases.len());
    assert_eq!(plan.why.len(), g.groups.aliases.len());
    let main: Vec<Vec<String>> = (0..plan.sole.len())
        .filter(|&i| plan.sole[i] != Sole::No)
        .map(|i| g.groups.reachable(i, &daemons))
        .collect();
    for (i, a) in main.iter().enumerate() {
        assert!(!a.is_empty());
        for b in &main[..i] {
            assert!(
                a.iter().all(|p| !b.contains(p)),
                "{a:?} and {b:?} share a process"
            );
        }
    }
    no_duplicates(&plan.main_group.iter().map(|(p, _)| p).collect::<Vec<_>>());
    for imp in &g.import_scripts {
        let in_main = g.import_in_main(imp);
        if imp.application_group == "%{GLOBAL}" {
            assert!(in_main);
        } else if in_main {
            assert_eq!(
                plan.main_group_of(&imp.process_group.replace("%{GLOBAL}", "")),
                Some(imp.application_group.as_str())
            );
        }
    }
    assert!(plan.runs_in_main(None, "", ""));
}

/// Whether `net` contains `ip`, computed independently of `IpNet::contains`: the first
/// `prefix` bits of the octets agree; an IPv4-mapped IPv6 address is its IPv4 address, as
/// `apr_ipsubnet_test` treats it; other family mismatches never match.
fn reference_contains(net: &IpNet, ip: IpAddr) -> bool {
    let octets = |a: IpAddr| match a {
        IpAddr::V4(v) => v.octets().to_vec(),
        IpAddr::V6(v) => match v.to_ipv4_mapped() {
            Some(v4) => v4.octets().to_vec(),
            None => v.octets().to_vec(),
        },
    };
    let (a, b) = (octets(net.addr()), octets(ip));
    if a.len() != b.len() {
        return false;
    }
    (0..usize::from(net.prefix())).all(|bit| {
        let mask = 0x80u8 >> (bit % 8);
        a[bit / 8] & mask == b[bit / 8] & mask
    })
}

fn flip_bit(a: IpAddr, bit: usize) -> IpAddr {
    match a {
        IpAddr::V4(v) => {
            let mut o = v.octets();
            o[bit / 8] ^= 0x80 >> (bit % 8);
            IpAddr::from(o)
        }
        IpAddr::V6(v) => {
            let mut o = v.octets();
            o[bit / 8] ^= 0x80 >> (bit % 8);
            IpAddr::from(o)
        }
    }
}

/// `WSGITrustedProxies` networks: an accepted network contains its own address, reads back
/// from `addr/prefix`, and agrees with an independent membership test on every address one
/// bit away from its own and on addresses made from the input.
pub fn net(data: &[u8]) {
    let fs = fields(data);
    let s = fs[0].as_str();
    let n = match IpNet::parse(s) {
        Ok(n) => n,
        Err(e) => {
            assert!(e.contains(s), "error does not quote the input: {e}");
            assert_bounded(&e, s.len());
            return;
        }
    };
    let width = match n.addr() {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    };
    assert!(usize::from(n.prefix()) <= width);
    assert!(
        n.contains(n.addr()),
        "{s:?} -> {n:?} misses its own address"
    );
    let canonical = format!("{}/{}", n.addr(), n.prefix());
    assert_eq!(IpNet::parse(&canonical), Ok(n), "canonical {canonical}");
    for bit in 0..width {
        let other = flip_bit(n.addr(), bit);
        // An IPv4-mapped neighbour of an IPv6 network is an IPv4 peer: never inside.
        let mapped = matches!(other, IpAddr::V6(v) if v.to_ipv4_mapped().is_some());
        assert_eq!(
            n.contains(other),
            bit >= usize::from(n.prefix()) && !mapped,
            "{n:?} {other}"
        );
    }
    let mut candidates: Vec<IpAddr> = fs[1..].iter().filter_map(|f| f.parse().ok()).collect();
    let raw = data.get(s.len()..).unwrap_or_default();
    for chunk in raw.chunks(16) {
        if let Ok(b) = <[u8; 16]>::try_from(chunk) {
            candidates.push(IpAddr::from(b));
        }
        if let Some(b) = chunk.get(..4).and_then(|c| <[u8; 4]>::try_from(c).ok()) {
            candidates.push(IpAddr::from(b));
        }
    }
    for ip in candidates {
        assert_eq!(n.contains(ip), reference_contains(&n, ip), "{n:?} {ip}");
    }
}
