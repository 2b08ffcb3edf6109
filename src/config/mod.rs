//! Typed configuration and the table of every mod_wsgi directive name, with pure parsers that
//! turn a directive's words into typed values or an error naming the directive and the fix.
//! Runs in the httpd parent while the configuration is read; children read the result.
#![forbid(unsafe_code)]

pub mod daemon;
pub mod groups;
pub mod interp_options;
pub mod net;
pub mod tokenize;

#[cfg(test)]
mod reference_check;

use crate::error::{Code, Error};
pub use crate::request::Interface;
use net::IpNet;
use std::ffi::CStr;

/// Where a directive may appear, with the same meaning as httpd's `req_override` flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Context {
    /// Server config and `<VirtualHost>` (`RSRC_CONF`).
    Server,
    /// Also `<Directory>`, `<Location>`, `<Files>` (`ACCESS_CONF | RSRC_CONF`).
    ServerDir,
    /// Everywhere, including `.htaccess` with `AllowOverride FileInfo` (`OR_FILEINFO`).
    FileInfo,
    /// Directory contexts and `.htaccess` with `AllowOverride AuthConfig` (`OR_AUTHCFG`).
    AuthCfg,
}

/// How far a directive is implemented.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Support {
    Implemented,
    /// Recognised, but `apachectl -t` fails: the feature is not implemented yet.
    NotYet,
    /// Accepted for old configurations; has no effect (as in mod_wsgi 6).
    Deprecated,
}

/// One entry of the directive table.
#[derive(Debug)]
pub struct Directive {
    /// C strings because httpd keeps pointers to them in its command table.
    pub c_name: &'static CStr,
    pub context: Context,
    pub support: Support,
    /// Shown in `apachectl -t` errors and `httpd -L`.
    pub c_usage: &'static CStr,
}

impl Directive {
    pub fn name(&self) -> &'static str {
        self.c_name.to_str().unwrap_or("?")
    }

    pub fn usage(&self) -> &'static str {
        self.c_usage.to_str().unwrap_or("?")
    }
}

const fn d(
    c_name: &'static CStr,
    context: Context,
    support: Support,
    c_usage: &'static CStr,
) -> Directive {
    Directive {
        c_name,
        context,
        support,
        c_usage,
    }
}

use Context::*;
use Support::*;

/// Every directive of mod_wsgi 6 (plus the four it removed), in mod_wsgi's table order, and
/// mod_rwsgi's own (`WSGIApplicationInterface`, `WSGIWebSocketMaxMessage`).
pub const DIRECTIVES: &[Directive] = &[
    d(c"WSGIScriptAlias", Server, Implemented, c"WSGIScriptAlias <url-path> <file-or-dir> [process-group=G] [application-group=A] [callable-object=C] [pass-authorization=On|Off] [application-interface=auto|wsgi|asgi]"),
    d(c"WSGIScriptAliasMatch", Server, Implemented, c"WSGIScriptAliasMatch <regex> <file-or-dir> [options as WSGIScriptAlias]"),
    d(c"WSGIDaemonProcess", Server, Implemented, c"WSGIDaemonProcess <name> [option=value ...]"),
    d(c"WSGISocketPrefix", Server, Implemented, c"WSGISocketPrefix <path-prefix>"),
    d(c"WSGISocketRotation", Server, Implemented, c"WSGISocketRotation On|Off"),
    d(c"WSGIAcceptMutex", Server, Implemented, c"WSGIAcceptMutex Default|flock|fcntl|sysvsem|posixsem|pthread"),
    d(c"WSGIVerboseDebugging", Server, Deprecated, c"WSGIVerboseDebugging On|Off (no effect; use LogLevel rwsgi:debug)"),
    d(c"WSGIDontWriteBytecode", Server, Implemented, c"WSGIDontWriteBytecode On|Off"),
    d(c"WSGIPythonWarnings", Server, Implemented, c"WSGIPythonWarnings <warning-filter> (as python -W)"),
    d(c"WSGIPythonOptimize", Server, Implemented, c"WSGIPythonOptimize 0|1|2"),
    d(c"WSGIPythonHome", Server, Implemented, c"WSGIPythonHome <prefix-or-venv>"),
    d(c"WSGIPythonPath", Server, Implemented, c"WSGIPythonPath <dir>[:<dir>...]"),
    d(c"WSGIPythonEggs", Server, Implemented, c"WSGIPythonEggs <directory>"),
    d(c"WSGIPythonHashSeed", Server, Implemented, c"WSGIPythonHashSeed random|<0-4294967295>"),
    d(c"WSGISwitchInterval", Server, Implemented, c"WSGISwitchInterval <seconds>"),
    d(c"WSGIDestroyInterpreter", Server, Implemented, c"WSGIDestroyInterpreter On|Off"),
    d(c"WSGIPerInterpreterGIL", Server, Implemented, c"WSGIPerInterpreterGIL On|Off (On: Python 3.12+ builds)"),
    d(c"WSGIFreeThreading", Server, Implemented, c"WSGIFreeThreading On|Off (On: free-threaded Python builds)"),
    d(c"<WSGIInterpreterOptions", Server, Implemented, c"<WSGIInterpreterOptions [process-group=G] [application-group=A]> ... </WSGIInterpreterOptions>"),
    d(c"WSGIRestrictEmbedded", Server, Implemented, c"WSGIRestrictEmbedded On|Off"),
    d(c"WSGIRestrictStdin", Server, Implemented, c"WSGIRestrictStdin On|Off"),
    d(c"WSGIRestrictStdout", Server, Implemented, c"WSGIRestrictStdout On|Off"),
    d(c"WSGIRestrictSignal", Server, Implemented, c"WSGIRestrictSignal On|Off"),
    d(c"WSGICaseSensitivity", Server, Implemented, c"WSGICaseSensitivity On|Off"),
    d(c"WSGIRestrictProcess", ServerDir, Implemented, c"WSGIRestrictProcess <group> ..."),
    d(c"WSGIProcessGroup", ServerDir, Implemented, c"WSGIProcessGroup %{GLOBAL}|<name>|%{ENV:var}"),
    d(c"WSGIApplicationGroup", ServerDir, Implemented, c"WSGIApplicationGroup %{GLOBAL}|%{SERVER}|%{RESOURCE}|%{HOST}|%{ENV:var}|<name>"),
    d(c"WSGICallableObject", FileInfo, Implemented, c"WSGICallableObject <name>|%{ENV:var}"),
    d(c"WSGIApplicationInterface", FileInfo, Implemented, c"WSGIApplicationInterface auto|wsgi|asgi"),
    d(c"WSGIWebSocketMaxMessage", FileInfo, Implemented, c"WSGIWebSocketMaxMessage <bytes> (1024-1073741824)"),
    d(c"WSGIImportScript", Server, Implemented, c"WSGIImportScript <file> process-group=%{GLOBAL} application-group=<group>"),
    d(c"WSGIDispatchScript", ServerDir, Implemented, c"WSGIDispatchScript <file> [application-group=A]"),
    d(c"WSGIPassApacheRequest", ServerDir, Implemented, c"WSGIPassApacheRequest On|Off"),
    d(c"WSGIPassAuthorization", FileInfo, Implemented, c"WSGIPassAuthorization On|Off"),
    d(c"WSGIScriptReloading", FileInfo, Implemented, c"WSGIScriptReloading On|Off"),
    d(c"WSGIErrorOverride", FileInfo, Implemented, c"WSGIErrorOverride On|Off"),
    d(c"WSGIChunkedRequest", FileInfo, Implemented, c"WSGIChunkedRequest On|Off"),
    d(c"WSGIMapHEADToGET", FileInfo, Implemented, c"WSGIMapHEADToGET On|Off|Auto"),
    d(c"WSGIIgnoreActivity", FileInfo, Implemented, c"WSGIIgnoreActivity On|Off"),
    d(c"WSGITrustedProxyHeaders", FileInfo, Implemented, c"WSGITrustedProxyHeaders <header> ..."),
    d(c"WSGITrustedProxies", FileInfo, Implemented, c"WSGITrustedProxies <ip-or-cidr> ..."),
    d(c"WSGIEnableSendfile", FileInfo, Implemented, c"WSGIEnableSendfile On|Off"),
    d(c"WSGIAccessScript", AuthCfg, Implemented, c"WSGIAccessScript <file> [application-group=A]"),
    d(c"WSGIAuthUserScript", AuthCfg, Implemented, c"WSGIAuthUserScript <file> [application-group=A]"),
    d(c"WSGIAuthGroupScript", AuthCfg, Implemented, c"WSGIAuthGroupScript <file> [application-group=A]"),
    d(c"WSGIGroupAuthoritative", AuthCfg, Implemented, c"WSGIGroupAuthoritative On|Off"),
    d(c"WSGIHandlerScript", ServerDir, Implemented, c"WSGIHandlerScript <handler-name> <file> [process-group=G] [application-group=A] [pass-authorization=On|Off]"),
    d(c"WSGIServerMetrics", Server, Implemented, c"WSGIServerMetrics On|Off"),
    d(c"WSGITelemetryService", Server, Implemented, c"WSGITelemetryService unix:<path> [interval=N]"),
    d(c"WSGISlowRequests", Server, Implemented, c"WSGISlowRequests <seconds>"),
    d(c"WSGITelemetryOptions", Server, Implemented, c"WSGITelemetryOptions [+|-]CaptureUserAgent|None|All ..."),
    // Removed in mod_wsgi 6.0 but common in 4.x configurations.
    d(c"WSGILazyInitialization", Server, Deprecated, c"WSGILazyInitialization On (Python always starts in the children)"),
    d(c"WSGINewRelicConfigFile", Server, Deprecated, c"WSGINewRelicConfigFile <file> (removed in mod_wsgi 6; no effect)"),
    d(c"WSGINewRelicEnvironment", Server, Deprecated, c"WSGINewRelicEnvironment <name> (removed in mod_wsgi 6; no effect)"),
    d(c"WSGIUserAuthoritative", AuthCfg, Deprecated, c"WSGIUserAuthoritative On|Off (no effect: httpd 2.4 combines authn providers itself)"),
];

/// Looks a directive up by its exact (case-insensitive, as httpd matches) name.
pub fn directive(name: &str) -> Option<&'static Directive> {
    DIRECTIVES
        .iter()
        .find(|d| d.name().eq_ignore_ascii_case(name))
}

/// `WSGIMapHEADToGET`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeadMode {
    On,
    Off,
    Auto,
}

/// `WSGIPythonHashSeed`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HashSeed {
    Random,
    Fixed(u32),
}

/// How a script alias matches the URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AliasPattern {
    Prefix(String),
    /// The regex source; the compiled form is owned by the httpd layer (`regex_slot`).
    Regex(String),
}

/// Per-alias options of `WSGIScriptAlias`/`WSGIScriptAliasMatch`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AliasOptions {
    pub process_group: Option<String>,
    pub application_group: Option<String>,
    pub callable_object: Option<String>,
    pub pass_authorization: Option<bool>,
    pub interface: Option<Interface>,
}

/// One `WSGIScriptAlias`/`WSGIScriptAliasMatch`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScriptAlias {
    pub pattern: AliasPattern,
    pub target: String,
    pub options: AliasOptions,
    /// Index of the compiled regex in the server config's regex list (regex aliases only).
    pub regex_slot: Option<usize>,
    /// The alias's index in `GlobalConfig::groups.aliases` (the one-group rule's id).
    pub id: usize,
}

/// `WSGIImportScript`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImportScript {
    pub path: String,
    pub process_group: String,
    pub application_group: String,
}

/// Interpreter-wide settings: one set per server, whichever `<VirtualHost>` they appear in
/// (mod_wsgi applies them globally too).
#[derive(Clone, Debug, PartialEq)]
pub struct GlobalConfig {
    pub python_home: Option<String>,
    pub python_path: Vec<String>,
    pub optimize: u8,
    pub warnings: Vec<String>,
    pub hash_seed: HashSeed,
    pub dont_write_bytecode: bool,
    pub python_eggs: Option<String>,
    pub switch_interval: Option<f64>,
    pub destroy_interpreter: bool,
    pub restrict_embedded: bool,
    pub restrict_stdin: bool,
    pub restrict_stdout: bool,
    pub restrict_signal: bool,
    /// `WSGIPerInterpreterGIL` at server level (`On` only on Python 3.12+ builds).
    pub per_interpreter_gil: bool,
    /// `<WSGIInterpreterOptions>` sections, in configuration order.
    pub interp_options: Vec<interp_options::Block>,
    pub case_sensitive: bool,
    pub import_scripts: Vec<ImportScript>,
    /// Notices to log once at start (deprecated directives used).
    pub notices: Vec<String>,
    /// `WSGIServerMetrics` (embedded mode; a daemon group's `server-metrics=`):
    /// `mod_wsgi.server_metrics()` returns the scoreboard.
    pub server_metrics: bool,
    /// `WSGISlowRequests`: requests that take longer are logged (`RW0026`).
    pub slow_requests: Option<std::time::Duration>,
    /// `WSGIDaemonProcess` groups, in configuration order.
    pub daemons: Vec<daemon::DaemonSpec>,
    /// `WSGISocketPrefix` (relative to ServerRoot); default `<DefaultRuntimeDir>/rwsgi`.
    pub socket_prefix: Option<String>,
    /// Literal process-group names used by directives, checked against `daemons` at start.
    pub process_group_refs: Vec<(String, &'static str)>,
    /// What the one-group rule needs: every alias and process/application-group directive.
    pub groups: groups::Recorded,
    /// The rule's result (`finish_groups`, once the configuration is read).
    pub groups_plan: groups::Plan,
}

impl GlobalConfig {
    /// Applies the one-group rule to the configuration read (`check_config`).
    pub fn finish_groups(&mut self) {
        let daemons: Vec<String> = self.daemons.iter().map(|d| d.name.clone()).collect();
        self.groups_plan = self.groups.plan(&daemons, &self.import_scripts);
    }

    /// Whether a `WSGIImportScript` runs in its process's main interpreter: its group is
    /// `%{GLOBAL}`, or the literal group of the process's sole alias.
    pub fn import_in_main(&self, imp: &ImportScript) -> bool {
        self.groups_plan.import_in_main(imp)
    }
}

impl Default for GlobalConfig {
    fn default() -> Self {
        GlobalConfig {
            python_home: None,
            python_path: Vec::new(),
            optimize: 0,
            warnings: Vec::new(),
            hash_seed: HashSeed::Random,
            dont_write_bytecode: false,
            python_eggs: None,
            switch_interval: None,
            destroy_interpreter: true,
            restrict_embedded: false,
            restrict_stdin: false,
            restrict_stdout: false,
            restrict_signal: true,
            per_interpreter_gil: false,
            interp_options: Vec::new(),
            case_sensitive: true,
            import_scripts: Vec::new(),
            notices: Vec::new(),
            slow_requests: None,
            server_metrics: false,
            daemons: Vec::new(),
            socket_prefix: None,
            process_group_refs: Vec::new(),
            groups: groups::Recorded::default(),
            groups_plan: groups::Plan::default(),
        }
    }
}

/// Per-server (`<VirtualHost>`) settings.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServerConfig {
    pub aliases: Vec<ScriptAlias>,
}

impl ServerConfig {
    /// A virtual host sees its own aliases first, then the main server's (as mod_alias).
    pub fn merge(base: &ServerConfig, vhost: &ServerConfig) -> ServerConfig {
        let mut aliases = vhost.aliases.clone();
        aliases.extend(base.aliases.iter().cloned());
        ServerConfig { aliases }
    }
}

/// `WSGIAuthUserScript`, `WSGIAuthGroupScript`, `WSGIAccessScript`, `WSGIDispatchScript`: a
/// script whose functions an httpd child calls for a request, outside the application (always
/// embedded, as in mod_wsgi).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HookScript {
    pub path: String,
    /// The application group it runs in: `%{GLOBAL}` (the default, as mod_wsgi) or a name.
    pub application_group: String,
}

/// `WSGIHandlerScript`: an httpd handler name whose requests the script's `handle_request`
/// serves (as a WSGI application), the requested file being the resource it handles.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HandlerScript {
    pub name: String,
    pub path: String,
    pub process_group: Option<String>,
    pub application_group: Option<String>,
    pub pass_authorization: Option<bool>,
}

/// Per-directory settings; `None` means "inherit".
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DirConfig {
    pub process_group: Option<String>,
    pub application_group: Option<String>,
    pub callable_object: Option<String>,
    /// `WSGIApplicationInterface`.
    pub interface: Option<Interface>,
    /// `WSGIWebSocketMaxMessage`: the largest WebSocket message a client may send, in bytes.
    pub websocket_max_message: Option<u32>,
    pub pass_authorization: Option<bool>,
    pub script_reloading: Option<bool>,
    pub error_override: Option<bool>,
    pub chunked_request: Option<bool>,
    pub map_head_to_get: Option<HeadMode>,
    pub ignore_activity: Option<bool>,
    pub trusted_proxy_headers: Option<Vec<String>>,
    pub trusted_proxies: Option<Vec<IpNet>>,
    pub enable_sendfile: Option<bool>,
    /// `WSGIRestrictProcess`: the process groups that may be selected here (`""` = embedded).
    pub restrict_process: Option<Vec<String>>,
    pub access_script: Option<HookScript>,
    /// `WSGIDispatchScript`: chooses the process group, application group and callable.
    pub dispatch_script: Option<HookScript>,
    /// `WSGIPassApacheRequest`: `apache.request_rec` in an embedded request's environ.
    pub pass_apache_request: Option<bool>,
    /// `WSGIHandlerScript`s defined here and above (a name defined again here wins).
    pub handler_scripts: Vec<HandlerScript>,
    pub auth_user_script: Option<HookScript>,
    pub auth_group_script: Option<HookScript>,
    /// `WSGIGroupAuthoritative` (default On): parsed and kept; as in mod_wsgi it changes
    /// nothing under httpd 2.4, whose `<RequireAll>`/`<RequireAny>` combine authz answers.
    pub group_authoritative: Option<bool>,
}

impl DirConfig {
    /// The settings of `child`, falling back to `parent` for what `child` does not set.
    pub fn merge(parent: &DirConfig, child: &DirConfig) -> DirConfig {
        fn or<T: Clone>(c: &Option<T>, p: &Option<T>) -> Option<T> {
            c.clone().or_else(|| p.clone())
        }
        DirConfig {
            process_group: or(&child.process_group, &parent.process_group),
            application_group: or(&child.application_group, &parent.application_group),
            callable_object: or(&child.callable_object, &parent.callable_object),
            interface: or(&child.interface, &parent.interface),
            websocket_max_message: or(&child.websocket_max_message, &parent.websocket_max_message),
            pass_authorization: or(&child.pass_authorization, &parent.pass_authorization),
            script_reloading: or(&child.script_reloading, &parent.script_reloading),
            error_override: or(&child.error_override, &parent.error_override),
            chunked_request: or(&child.chunked_request, &parent.chunked_request),
            map_head_to_get: or(&child.map_head_to_get, &parent.map_head_to_get),
            ignore_activity: or(&child.ignore_activity, &parent.ignore_activity),
            trusted_proxy_headers: or(&child.trusted_proxy_headers, &parent.trusted_proxy_headers),
            trusted_proxies: or(&child.trusted_proxies, &parent.trusted_proxies),
            enable_sendfile: or(&child.enable_sendfile, &parent.enable_sendfile),
            restrict_process: or(&child.restrict_process, &parent.restrict_process),
            access_script: or(&child.access_script, &parent.access_script),
            dispatch_script: or(&child.dispatch_script, &parent.dispatch_script),
            pass_apache_request: or(&child.pass_apache_request, &parent.pass_apache_request),
            handler_scripts: child
                .handler_scripts
                .iter()
                .chain(
                    parent
                        .handler_scripts
                        .iter()
                        .filter(|p| !child.handler_scripts.iter().any(|c| c.name == p.name)),
                )
                .cloned()
                .collect(),
            auth_user_script: or(&child.auth_user_script, &parent.auth_user_script),
            auth_group_script: or(&child.auth_group_script, &parent.auth_group_script),
            group_authoritative: or(&child.group_authoritative, &parent.group_authoritative),
        }
    }
}

/// What a parsed directive asks the httpd layer to do beyond storing values.
#[derive(Debug, PartialEq, Eq)]
pub enum Applied {
    Done,
    /// A regex alias was added: compile `ServerConfig::aliases[index]`'s pattern.
    CompileRegex(usize),
}

/// The configuration objects a directive may change.
pub struct Targets<'a> {
    pub server: &'a mut ServerConfig,
    pub dir: &'a mut DirConfig,
    pub global: &'a mut GlobalConfig,
    /// Where the directive was read (for the one-group rule).
    pub place: groups::Place,
}

fn bad(name: &str, msg: impl AsRef<str>) -> Error {
    Error::new(Code::BadDirective, format!("{name}: {}", msg.as_ref()))
}

fn usage(spec: &Directive) -> Error {
    bad(
        spec.name(),
        format!("wrong arguments; usage: {}", spec.usage()),
    )
}

fn one<'a>(spec: &Directive, words: &'a [String]) -> Result<&'a str, Error> {
    match words {
        [w] => Ok(w.as_str()),
        _ => Err(usage(spec)),
    }
}

fn flag(spec: &Directive, words: &[String]) -> Result<bool, Error> {
    let w = one(spec, words)?;
    if w.eq_ignore_ascii_case("on") {
        Ok(true)
    } else if w.eq_ignore_ascii_case("off") {
        Ok(false)
    } else {
        Err(bad(
            spec.name(),
            format!("'{w}' is not valid; use On or Off"),
        ))
    }
}

/// Queues a notice for the start-up log, once.
fn notice(g: &mut GlobalConfig, msg: String) {
    if !g.notices.contains(&msg) {
        g.notices.push(msg);
    }
}

/// Checks a `%{...}` group expression; returns it unchanged when valid.
fn group_expr(name: &str, v: &str, allowed: &[&str]) -> Result<String, Error> {
    if let Some(inner) = v.strip_prefix("%{").and_then(|s| s.strip_suffix('}')) {
        let ok = allowed.contains(&inner)
            || inner
                .strip_prefix("ENV:")
                .is_some_and(|var| !var.is_empty());
        if !ok {
            return Err(bad(
                name,
                format!(
                    "unknown expansion '{v}'; use one of {}, %{{ENV:variable}} or a plain name",
                    allowed
                        .iter()
                        .map(|a| format!("%{{{a}}}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
    } else if v.contains("%{") {
        return Err(bad(
            name,
            format!("'{v}' mixes an expansion with text; use one or the other"),
        ));
    }
    Ok(v.to_string())
}

const APP_GROUP_EXPANSIONS: &[&str] = &["GLOBAL", "SERVER", "RESOURCE", "HOST"];

/// `<file> [application-group=A]` of the auth and access script directives. The group is
/// `%{GLOBAL}`, `%{SERVER}`, `%{HOST}`, `%{ENV:var}` or a name; `%{RESOURCE}` names the
/// requested URL's script, which an auth phase does not have, so it is refused.
fn auth_script(spec: &Directive, words: &[String]) -> Result<HookScript, Error> {
    let name = spec.name();
    let Some((path, opts)) = words.split_first() else {
        return Err(usage(spec));
    };
    if path.is_empty() {
        return Err(usage(spec));
    }
    let mut application_group = "%{GLOBAL}".to_string();
    for w in opts {
        match w.split_once('=') {
            Some(("application-group", v)) => {
                application_group = group_expr(name, v, &["GLOBAL", "SERVER", "HOST"])?;
            }
            _ => {
                return Err(bad(
                    name,
                    format!("unknown option '{w}'; the only option is application-group="),
                ));
            }
        }
    }
    Ok(HookScript {
        path: path.clone(),
        application_group,
    })
}
const PROCESS_GROUP_EXPANSIONS: &[&str] = &["GLOBAL", "SERVER", "RESOURCE", "HOST"];

/// Checks a process-group expression. Literal names are recorded so the start-up check can
/// insist that a `WSGIDaemonProcess` defines them.
fn check_process_group(
    name: &'static str,
    v: &str,
    global: &mut GlobalConfig,
) -> Result<String, Error> {
    let v = group_expr(name, v, PROCESS_GROUP_EXPANSIONS)?;
    if !v.is_empty()
        && !v.starts_with("%{")
        && !global.process_group_refs.iter().any(|(g, _)| *g == v)
    {
        global.process_group_refs.push((v.clone(), name));
    }
    Ok(v)
}

fn alias_options(
    spec: &Directive,
    words: &[String],
    global: &mut GlobalConfig,
) -> Result<AliasOptions, Error> {
    let mut o = AliasOptions::default();
    for w in words {
        let Some((k, v)) = w.split_once('=') else {
            return Err(bad(
                spec.name(),
                format!("option '{w}' is not of the form name=value"),
            ));
        };
        match k {
            "process-group" => o.process_group = Some(check_process_group(spec.name(), v, global)?),
            "application-group" => {
                o.application_group = Some(group_expr(spec.name(), v, APP_GROUP_EXPANSIONS)?)
            }
            "callable-object" => {
                if v.is_empty() {
                    return Err(bad(spec.name(), "callable-object= needs a name"));
                }
                o.callable_object = Some(v.to_string())
            }
            "application-interface" => {
                o.interface = Some(Interface::parse(v).ok_or_else(|| {
                    bad(
                        spec.name(),
                        format!("application-interface='{v}' is not valid; use auto, wsgi or asgi"),
                    )
                })?)
            }
            "pass-authorization" => {
                o.pass_authorization = Some(if v.eq_ignore_ascii_case("on") {
                    true
                } else if v.eq_ignore_ascii_case("off") {
                    false
                } else {
                    return Err(bad(spec.name(), "pass-authorization= takes On or Off"));
                })
            }
            _ => {
                return Err(bad(
                    spec.name(),
                    format!(
                        "unknown option '{k}'; valid options are process-group=, \
                         application-group=, callable-object=, pass-authorization= and \
                         application-interface="
                    ),
                ));
            }
        }
    }
    Ok(o)
}

/// One directive inside a `<WSGIInterpreterOptions>` section, as the httpd layer read it.
pub struct SectionLine<'a> {
    pub name: &'a str,
    pub args: &'a str,
    /// Where it is, for the message (`line 12 of /etc/apache2/...`).
    pub at: String,
    /// It is itself a section (has children): never allowed.
    pub nested: bool,
}

/// Parses a `<WSGIInterpreterOptions>` section (`selectors`: the opening tag's arguments,
/// without `>`) and its contents, and records it. Errors name the directive and the fix.
pub fn add_interp_options(
    g: &mut GlobalConfig,
    selectors: &str,
    lines: &[SectionLine<'_>],
) -> Result<(), Error> {
    let mut block = interp_options::parse_selectors(selectors)?;
    for l in lines {
        let r = if l.nested {
            Err(interp_options::not_allowed(l.name))
        } else {
            interp_options::apply(&mut block, l.name, l.args)
        };
        r.map_err(|e| Error::new(e.code, format!("{} ({})", e.msg, l.at)))?;
    }
    g.interp_options.push(block);
    Ok(())
}

/// Parses and applies one directive. `raw` is the argument text as httpd hands it over
/// (`RAW_ARGS`). Errors name the directive and say how to fix it.
pub fn apply(spec: &Directive, raw: &str, t: Targets<'_>) -> Result<Applied, Error> {
    let words = tokenize::words(raw);
    let name = spec.name();
    match spec.support {
        NotYet => {
            return Err(Error::new(
                Code::NotSupported,
                format!(
                    "{name} is a mod_wsgi directive that mod_rwsgi does not support yet; \
                     remove it from the configuration (see the README's directive reference)"
                ),
            ));
        }
        Deprecated => {
            if name == "WSGILazyInitialization" && !flag(spec, &words)? {
                return Err(bad(
                    name,
                    "mod_rwsgi never initialises Python in the httpd parent, so Off is not \
                     possible; remove the directive",
                ));
            }
            if name == "WSGIVerboseDebugging" || name == "WSGIUserAuthoritative" {
                flag(spec, &words)?;
            }
            if name.starts_with("WSGINewRelic") {
                one(spec, &words)?;
            }
            notice(
                t.global,
                format!("{name} is deprecated and has no effect; remove it"),
            );
            return Ok(Applied::Done);
        }
        Implemented => {}
    }
    let (g, dcfg) = (t.global, t.dir);
    match name {
        "WSGIScriptAlias" | "WSGIScriptAliasMatch" => {
            if words.len() < 2 {
                return Err(usage(spec));
            }
            let options = alias_options(spec, &words[2..], g)?;
            let regex = name == "WSGIScriptAliasMatch";
            let pattern = if regex {
                AliasPattern::Regex(words[0].clone())
            } else {
                AliasPattern::Prefix(words[0].clone())
            };
            if words[1].is_empty() {
                return Err(bad(name, "the target file or directory is empty"));
            }
            g.groups.aliases.push(groups::AliasEntry {
                server: t.place.server,
                regex,
                location: words[0].clone(),
                process_group: options.process_group.clone(),
                application_group: options.application_group.clone(),
            });
            t.server.aliases.push(ScriptAlias {
                pattern,
                target: words[1].clone(),
                options,
                regex_slot: None,
                id: g.groups.aliases.len() - 1,
            });
            let index = t.server.aliases.len() - 1;
            return Ok(if regex {
                Applied::CompileRegex(index)
            } else {
                Applied::Done
            });
        }
        "WSGIDontWriteBytecode" => g.dont_write_bytecode = flag(spec, &words)?,
        "WSGIPythonWarnings" => g.warnings.push(one(spec, &words)?.to_string()),
        "WSGIPythonOptimize" => {
            g.optimize = match one(spec, &words)? {
                "0" => 0,
                "1" => 1,
                "2" => 2,
                v => return Err(bad(name, format!("'{v}' is not valid; use 0, 1 or 2"))),
            }
        }
        "WSGIPythonHome" => {
            let v = one(spec, &words)?;
            if !v.starts_with('/') {
                return Err(bad(name, format!("'{v}' must be an absolute path")));
            }
            g.python_home = Some(v.to_string());
        }
        "WSGIPythonPath" => {
            let v = one(spec, &words)?;
            g.python_path
                .extend(v.split(':').filter(|p| !p.is_empty()).map(String::from));
        }
        "WSGIPythonEggs" => g.python_eggs = Some(one(spec, &words)?.to_string()),
        "WSGIPythonHashSeed" => {
            let v = one(spec, &words)?;
            g.hash_seed = if v.eq_ignore_ascii_case("random") {
                HashSeed::Random
            } else {
                HashSeed::Fixed(v.parse::<u32>().map_err(|_| {
                    bad(
                        name,
                        format!("'{v}' is not valid; use random or a number 0-4294967295"),
                    )
                })?)
            };
        }
        "WSGISwitchInterval" => {
            let v = one(spec, &words)?;
            match v.parse::<f64>() {
                Ok(x) if x > 0.0 && x.is_finite() => g.switch_interval = Some(x),
                _ => {
                    return Err(bad(
                        name,
                        format!("'{v}' is not valid; use seconds > 0, e.g. 0.005"),
                    ));
                }
            }
        }
        "WSGIDestroyInterpreter" => g.destroy_interpreter = flag(spec, &words)?,
        "WSGIServerMetrics" => g.server_metrics = flag(spec, &words)?,
        "WSGIAcceptMutex" => {
            let v = one(spec, &words)?;
            const MECHANISMS: [&str; 6] = [
                "default", "flock", "fcntl", "sysvsem", "posixsem", "pthread",
            ];
            if !MECHANISMS.contains(&v.to_ascii_lowercase().as_str()) {
                return Err(bad(
                    name,
                    format!(
                        "'{v}' is not a mutex mechanism; use Default, flock, fcntl, sysvsem, posixsem or pthread"
                    ),
                ));
            }
            if !v.eq_ignore_ascii_case("default") {
                notice(
                    g,
                    "WSGIAcceptMutex: mod_rwsgi's daemon processes take connections from one \
                     queue without an accept mutex; the directive has no effect"
                        .to_string(),
                );
            }
        }
        "WSGIFreeThreading" => {
            if flag(spec, &words)? {
                return Err(Error::new(
                    Code::NeedsNewerPython,
                    format!(
                        "WSGIFreeThreading On needs a free-threaded Python build (3.13t or later), \
                         but mod_rwsgi is built for Python {} ({}), which has the GIL; use \
                         WSGIFreeThreading Off",
                        env!("RWSGI_PYTHON_VERSION"),
                        env!("RWSGI_PYTHON_EXECUTABLE")
                    ),
                ));
            }
        }
        "WSGITelemetryService" => {
            let Some((target, opts)) = words.split_first() else {
                return Err(usage(spec));
            };
            if !target
                .strip_prefix("unix:")
                .is_some_and(|p| p.starts_with('/'))
            {
                return Err(bad(
                    name,
                    format!("'{target}' is not valid; use unix:/absolute/path/of/the/socket"),
                ));
            }
            for w in opts {
                match w.split_once('=') {
                    Some(("interval", n)) if n.parse::<u32>().is_ok_and(|n| n > 0) => {}
                    _ => {
                        return Err(bad(
                            name,
                            format!(
                                "unknown option '{w}'; the only option is interval=SECONDS (> 0)"
                            ),
                        ));
                    }
                }
            }
            notice(
                g,
                "WSGITelemetryService: mod_rwsgi does not send mod_wsgi's telemetry datagrams; \
                 the directive has no effect (use WSGISlowRequests and the server-status page)"
                    .to_string(),
            );
        }
        "WSGITelemetryOptions" => {
            if words.is_empty() {
                return Err(usage(spec));
            }
            for w in &words {
                let opt = w.trim_start_matches(['+', '-']);
                if !["CaptureUserAgent", "None", "All"]
                    .iter()
                    .any(|o| o.eq_ignore_ascii_case(opt))
                {
                    return Err(bad(
                        name,
                        format!("unknown option '{w}'; use [+|-]CaptureUserAgent, None or All"),
                    ));
                }
            }
        }
        "WSGISlowRequests" => {
            let v = one(spec, &words)?;
            match v.parse::<f64>() {
                Ok(x) if x > 0.0 && x.is_finite() && x < 1e9 => {
                    g.slow_requests = Some(std::time::Duration::from_secs_f64(x))
                }
                _ => {
                    return Err(bad(
                        name,
                        format!("'{v}' is not valid; use seconds > 0, e.g. 2 or 0.5"),
                    ));
                }
            }
        }
        "WSGIRestrictEmbedded" => g.restrict_embedded = flag(spec, &words)?,
        "WSGIRestrictStdin" => g.restrict_stdin = flag(spec, &words)?,
        "WSGIRestrictStdout" => g.restrict_stdout = flag(spec, &words)?,
        "WSGIRestrictSignal" => g.restrict_signal = flag(spec, &words)?,
        "WSGICaseSensitivity" => g.case_sensitive = flag(spec, &words)?,
        "WSGIPerInterpreterGIL" => {
            flag(spec, &words)?;
            g.per_interpreter_gil = interp_options::per_interpreter_gil(
                &words,
                interp_options::OWN_GIL_BUILD,
                env!("RWSGI_PYTHON_VERSION"),
                env!("RWSGI_PYTHON_EXECUTABLE"),
            )?;
        }
        // The httpd layer hands a section with its contents to `add_interp_options`; the
        // opening tag alone is an empty section.
        "<WSGIInterpreterOptions" => add_interp_options(g, raw, &[])?,
        "WSGIProcessGroup" => {
            let v = check_process_group(name, one(spec, &words)?, g)?;
            g.groups.settings.push(groups::Setting {
                place: t.place,
                kind: groups::Kind::ProcessGroup,
                value: v.clone(),
            });
            dcfg.process_group = Some(v)
        }
        "WSGIDaemonProcess" => {
            let d = daemon::parse(&words)?;
            if g.daemons.iter().any(|x| x.name == d.name) {
                return Err(bad(
                    name,
                    format!(
                        "daemon process group '{}' is defined twice; names must be unique",
                        d.name
                    ),
                ));
            }
            g.daemons.push(d);
        }
        "WSGISocketPrefix" => g.socket_prefix = Some(one(spec, &words)?.to_string()),
        "WSGIRestrictProcess" => {
            if words.is_empty() {
                return Err(usage(spec));
            }
            let mut list = Vec::new();
            for w in &words {
                // %{GLOBAL} (embedded mode) is allowed by name, as in mod_wsgi.
                let v = check_process_group(name, w, g)?;
                list.push(if v == "%{GLOBAL}" { String::new() } else { v });
            }
            dcfg.restrict_process = Some(list);
        }
        "WSGISocketRotation" => {
            if flag(spec, &words)? {
                let notice = "WSGISocketRotation On: mod_rwsgi keeps daemon socket paths stable \
                              across graceful restarts (as with Off) and checks the server \
                              generation on every connection instead"
                    .to_string();
                if !g.notices.contains(&notice) {
                    g.notices.push(notice);
                }
            }
        }
        "WSGIApplicationGroup" => {
            let v = group_expr(name, one(spec, &words)?, APP_GROUP_EXPANSIONS)?;
            g.groups.settings.push(groups::Setting {
                place: t.place,
                kind: groups::Kind::ApplicationGroup,
                value: v.clone(),
            });
            dcfg.application_group = Some(v);
        }
        "WSGICallableObject" => {
            let v = one(spec, &words)?;
            if v.is_empty() {
                return Err(usage(spec));
            }
            dcfg.callable_object = Some(group_expr(name, v, &[])?);
        }
        "WSGIImportScript" => {
            let (mut pg, mut ag) = (None, None);
            let Some((path, opts)) = words.split_first() else {
                return Err(usage(spec));
            };
            for w in opts {
                match w.split_once('=') {
                    Some(("process-group", v)) => pg = Some(check_process_group(name, v, g)?),
                    Some(("application-group", v)) => {
                        ag = Some(group_expr(name, v, APP_GROUP_EXPANSIONS)?)
                    }
                    _ => {
                        return Err(bad(
                            name,
                            format!(
                                "unknown option '{w}'; valid options are process-group= and \
                                 application-group="
                            ),
                        ));
                    }
                }
            }
            let (Some(pg), Some(ag)) = (pg, ag) else {
                return Err(bad(
                    name,
                    "both process-group= and application-group= are required, e.g. \
                     process-group=%{GLOBAL} application-group=%{GLOBAL}",
                ));
            };
            if ag != "%{GLOBAL}" && ag.starts_with("%{") {
                return Err(bad(
                    name,
                    format!(
                        "application-group={ag} depends on a request; use %{{GLOBAL}} or a name"
                    ),
                ));
            }
            g.import_scripts.push(ImportScript {
                path: path.clone(),
                process_group: pg,
                application_group: ag,
            });
        }
        "WSGIApplicationInterface" => {
            let v = one(spec, &words)?;
            dcfg.interface =
                Some(Interface::parse(v).ok_or_else(|| {
                    bad(name, format!("'{v}' is not valid; use auto, wsgi or asgi"))
                })?);
        }
        "WSGIWebSocketMaxMessage" => {
            let v = one(spec, &words)?;
            let n = v
                .parse::<u32>()
                .ok()
                .filter(|n| (1024..=1 << 30).contains(n))
                .ok_or_else(|| {
                    bad(
                        name,
                        format!(
                            "'{v}' is not valid; use a number of bytes from 1024 to 1073741824"
                        ),
                    )
                })?;
            dcfg.websocket_max_message = Some(n);
        }
        "WSGIAccessScript" => dcfg.access_script = Some(auth_script(spec, &words)?),
        "WSGIHandlerScript" => {
            let [handler, path, opts @ ..] = &words[..] else {
                return Err(usage(spec));
            };
            if handler.is_empty() || path.is_empty() {
                return Err(usage(spec));
            }
            let o = alias_options(spec, opts, g)?;
            if o.callable_object.is_some() || o.interface.is_some() {
                return Err(bad(
                    name,
                    "the options are process-group=, application-group= and \
                     pass-authorization= (the callable is always handle_request)",
                ));
            }
            dcfg.handler_scripts.retain(|h| h.name != *handler);
            dcfg.handler_scripts.push(HandlerScript {
                name: handler.clone(),
                path: path.clone(),
                process_group: o.process_group,
                application_group: o.application_group,
                pass_authorization: o.pass_authorization,
            });
        }
        "WSGIDispatchScript" => {
            dcfg.dispatch_script = Some(auth_script(spec, &words)?);
            // Groups chosen per request: the one-group rule cannot hold for any alias.
            g.groups.dispatch = true;
        }
        "WSGIAuthUserScript" => dcfg.auth_user_script = Some(auth_script(spec, &words)?),
        "WSGIAuthGroupScript" => dcfg.auth_group_script = Some(auth_script(spec, &words)?),
        "WSGIGroupAuthoritative" => dcfg.group_authoritative = Some(flag(spec, &words)?),
        "WSGIPassAuthorization" => dcfg.pass_authorization = Some(flag(spec, &words)?),
        "WSGIPassApacheRequest" => dcfg.pass_apache_request = Some(flag(spec, &words)?),
        "WSGIScriptReloading" => dcfg.script_reloading = Some(flag(spec, &words)?),
        "WSGIErrorOverride" => dcfg.error_override = Some(flag(spec, &words)?),
        "WSGIChunkedRequest" => dcfg.chunked_request = Some(flag(spec, &words)?),
        "WSGIIgnoreActivity" => dcfg.ignore_activity = Some(flag(spec, &words)?),
        "WSGIEnableSendfile" => dcfg.enable_sendfile = Some(flag(spec, &words)?),
        "WSGIMapHEADToGET" => {
            let v = one(spec, &words)?;
            dcfg.map_head_to_get = Some(match v.to_ascii_lowercase().as_str() {
                "on" => HeadMode::On,
                "off" => HeadMode::Off,
                "auto" => HeadMode::Auto,
                _ => {
                    return Err(bad(
                        name,
                        format!("'{v}' is not valid; use On, Off or Auto"),
                    ));
                }
            });
        }
        "WSGITrustedProxyHeaders" => {
            if words.is_empty() {
                return Err(usage(spec));
            }
            let mut list = dcfg.trusted_proxy_headers.take().unwrap_or_default();
            for w in &words {
                let key = crate::wsgi::proxy::header_env_name(w).ok_or_else(|| {
                    bad(
                        name,
                        format!(
                            "'{w}' is not a proxy header mod_rwsgi understands; use any of {}",
                            crate::wsgi::proxy::KNOWN_HEADERS.join(", ")
                        ),
                    )
                })?;
                if !list.contains(&key) {
                    list.push(key);
                }
            }
            dcfg.trusted_proxy_headers = Some(list);
        }
        "WSGITrustedProxies" => {
            if words.is_empty() {
                return Err(usage(spec));
            }
            let mut list = dcfg.trusted_proxies.take().unwrap_or_default();
            for w in &words {
                list.push(IpNet::parse(w).map_err(|e| bad(name, e))?);
            }
            dcfg.trusted_proxies = Some(list);
        }
        _ => unreachable!("directive {name} is marked implemented but has no parser"),
    }
    Ok(Applied::Done)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Cfg {
        server: ServerConfig,
        dir: DirConfig,
        global: GlobalConfig,
    }

    fn cfg() -> Cfg {
        Cfg {
            server: ServerConfig::default(),
            dir: DirConfig::default(),
            global: GlobalConfig::default(),
        }
    }

    fn run(c: &mut Cfg, name: &str, args: &str) -> Result<Applied, Error> {
        let spec = directive(name).expect("known directive");
        apply(
            spec,
            args,
            Targets {
                server: &mut c.server,
                dir: &mut c.dir,
                global: &mut c.global,
                place: groups::Place::default(),
            },
        )
    }

    #[test]
    fn table_has_every_mod_wsgi6_directive_once() {
        // mod_wsgi 6's 49, the 4 it removed, and mod_rwsgi's own 2.
        assert_eq!(DIRECTIVES.len(), 49 + 4 + 2);
        let mut names: Vec<_> = DIRECTIVES
            .iter()
            .map(|d| d.name().to_ascii_lowercase())
            .collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), DIRECTIVES.len());
    }

    #[test]
    fn every_implemented_directive_has_a_parser() {
        for spec in DIRECTIVES.iter().filter(|d| d.support == Implemented) {
            let mut c = cfg();
            // Any outcome but a panic (the unreachable! arm) is fine here.
            let _ = apply(
                spec,
                "",
                Targets {
                    server: &mut c.server,
                    dir: &mut c.dir,
                    global: &mut c.global,
                    place: groups::Place::default(),
                },
            );
        }
    }

    #[test]
    fn script_alias_with_options() {
        let mut c = cfg();
        let r = run(
            &mut c,
            "WSGIScriptAlias",
            r#"/app "/srv/my app.wsgi" application-group=%{GLOBAL} callable-object=app pass-authorization=On"#,
        );
        assert_eq!(r, Ok(Applied::Done));
        let a = &c.server.aliases[0];
        assert_eq!(a.pattern, AliasPattern::Prefix("/app".into()));
        assert_eq!(a.target, "/srv/my app.wsgi");
        assert_eq!(a.options.callable_object.as_deref(), Some("app"));
        assert_eq!(a.options.pass_authorization, Some(true));
        assert_eq!(
            run(&mut c, "WSGIScriptAliasMatch", "^/x(.*) /srv/x.wsgi"),
            Ok(Applied::CompileRegex(1))
        );
    }

    #[test]
    fn application_interface_option_and_directive() {
        let mut c = cfg();
        run(
            &mut c,
            "WSGIScriptAlias",
            "/api /srv/api.py application-interface=ASGI",
        )
        .unwrap();
        assert_eq!(c.server.aliases[0].options.interface, Some(Interface::Asgi));
        let e = run(
            &mut c,
            "WSGIScriptAlias",
            "/b /srv/b.py application-interface=asgi2",
        )
        .unwrap_err();
        assert_eq!(
            e.msg,
            "WSGIScriptAlias: application-interface='asgi2' is not valid; use auto, wsgi or asgi"
        );
        run(&mut c, "WSGIApplicationInterface", "wsgi").unwrap();
        assert_eq!(c.dir.interface, Some(Interface::Wsgi));
        run(&mut c, "WSGIWebSocketMaxMessage", "65536").unwrap();
        assert_eq!(c.dir.websocket_max_message, Some(65536));
        for bad in ["100", "2g", "1073741825", "-1"] {
            let e = run(&mut c, "WSGIWebSocketMaxMessage", bad).unwrap_err();
            assert!(e.to_string().contains("from 1024 to 1073741824"), "{e}");
        }
        let e = run(&mut c, "WSGIApplicationInterface", "async").unwrap_err();
        assert_eq!(
            e.msg,
            "WSGIApplicationInterface: 'async' is not valid; use auto, wsgi or asgi"
        );
        let parent = DirConfig {
            interface: Some(Interface::Asgi),
            ..DirConfig::default()
        };
        assert_eq!(
            DirConfig::merge(&parent, &DirConfig::default()).interface,
            Some(Interface::Asgi)
        );
    }

    #[test]
    fn script_alias_errors_name_directive_and_fix() {
        let mut c = cfg();
        let e = run(&mut c, "WSGIScriptAlias", "/app").unwrap_err();
        assert!(
            e.msg
                .starts_with("WSGIScriptAlias: wrong arguments; usage: WSGIScriptAlias <url-path>"),
            "{e}"
        );
        let e = run(&mut c, "WSGIScriptAlias", "/app /x.wsgi bogus=1").unwrap_err();
        assert!(e.msg.contains("unknown option 'bogus'"), "{e}");
        run(&mut c, "WSGIScriptAlias", "/app /x.wsgi process-group=site").unwrap();
        assert_eq!(
            c.global.process_group_refs,
            [("site".to_string(), "WSGIScriptAlias")]
        );
        let e = run(
            &mut c,
            "WSGIScriptAlias",
            "/app /x.wsgi application-group=%{NOPE}",
        )
        .unwrap_err();
        assert!(e.msg.contains("unknown expansion '%{NOPE}'"), "{e}");
    }

    #[test]
    fn accepted_mod_wsgi_directives() {
        let mut c = cfg();
        run(&mut c, "WSGIAcceptMutex", "Default").unwrap();
        assert!(c.global.notices.is_empty());
        run(&mut c, "WSGIAcceptMutex", "fcntl").unwrap();
        assert!(
            c.global.notices[0].contains("no effect"),
            "{:?}",
            c.global.notices
        );
        let e = run(&mut c, "WSGIAcceptMutex", "spin").unwrap_err();
        assert!(e.msg.contains("'spin' is not a mutex mechanism"), "{e}");
        run(&mut c, "WSGIFreeThreading", "Off").unwrap();
        let e = run(&mut c, "WSGIFreeThreading", "On").unwrap_err();
        assert_eq!(e.code, Code::NeedsNewerPython);
        assert!(e.msg.contains("free-threaded Python build"), "{e}");
        run(
            &mut c,
            "WSGITelemetryService",
            "unix:/run/t.sock interval=5",
        )
        .unwrap();
        assert!(run(&mut c, "WSGITelemetryService", "udp:1.2.3.4").is_err());
        assert!(run(&mut c, "WSGITelemetryService", "unix:/t interval=0").is_err());
        run(&mut c, "WSGITelemetryOptions", "+CaptureUserAgent -None").unwrap();
        assert!(run(&mut c, "WSGITelemetryOptions", "+CaptureCookies").is_err());
        run(&mut c, "WSGISlowRequests", "1.5").unwrap();
        assert_eq!(
            c.global.slow_requests,
            Some(std::time::Duration::from_millis(1500))
        );
        assert!(run(&mut c, "WSGISlowRequests", "0").is_err());
        run(&mut c, "WSGINewRelicConfigFile", "/etc/newrelic.ini").unwrap();
        assert!(run(&mut c, "WSGINewRelicEnvironment", "").is_err());
    }

    #[test]
    fn auth_scripts() {
        let mut c = cfg();
        run(&mut c, "WSGIAuthUserScript", "/srv/auth.wsgi").unwrap();
        assert_eq!(
            c.dir.auth_user_script,
            Some(HookScript {
                path: "/srv/auth.wsgi".into(),
                application_group: "%{GLOBAL}".into()
            })
        );
        run(
            &mut c,
            "WSGIAuthGroupScript",
            "/srv/groups.wsgi application-group=admin",
        )
        .unwrap();
        assert_eq!(
            c.dir
                .auth_group_script
                .as_ref()
                .map(|a| a.application_group.as_str()),
            Some("admin")
        );
        run(
            &mut c,
            "WSGIAccessScript",
            "/srv/a.wsgi application-group=%{SERVER}",
        )
        .unwrap();
        let e = run(
            &mut c,
            "WSGIAccessScript",
            "/srv/a.wsgi application-group=%{RESOURCE}",
        )
        .unwrap_err();
        assert!(e.msg.contains("unknown expansion '%{RESOURCE}'"), "{e}");
        let e = run(&mut c, "WSGIAuthUserScript", "/srv/a.wsgi process-group=x").unwrap_err();
        assert!(
            e.msg.contains("the only option is application-group="),
            "{e}"
        );
        assert!(run(&mut c, "WSGIAuthUserScript", "").is_err());
        run(&mut c, "WSGIGroupAuthoritative", "Off").unwrap();
        assert_eq!(c.dir.group_authoritative, Some(false));
        // Removed in mod_wsgi 6, no effect under httpd 2.4: a notice, and a flag still checked.
        run(&mut c, "WSGIUserAuthoritative", "Off").unwrap();
        assert!(run(&mut c, "WSGIUserAuthoritative", "maybe").is_err());
        // A directory inherits the scripts it does not set.
        let child = DirConfig {
            auth_user_script: Some(HookScript {
                path: "/other.wsgi".into(),
                application_group: "%{GLOBAL}".into(),
            }),
            ..DirConfig::default()
        };
        let merged = DirConfig::merge(&c.dir, &child);
        assert_eq!(merged.auth_user_script.unwrap().path, "/other.wsgi");
        assert_eq!(merged.auth_group_script, c.dir.auth_group_script);
    }

    #[test]
    fn flags_and_values() {
        let mut c = cfg();
        run(&mut c, "WSGIPassAuthorization", "on").unwrap();
        assert_eq!(c.dir.pass_authorization, Some(true));
        let e = run(&mut c, "WSGIChunkedRequest", "yes").unwrap_err();
        assert_eq!(
            e.msg,
            "WSGIChunkedRequest: 'yes' is not valid; use On or Off"
        );
        run(&mut c, "WSGIMapHEADToGET", "Auto").unwrap();
        assert_eq!(c.dir.map_head_to_get, Some(HeadMode::Auto));
        assert!(run(&mut c, "WSGIPythonOptimize", "3").is_err());
        run(&mut c, "WSGIPythonOptimize", "2").unwrap();
        assert_eq!(c.global.optimize, 2);
        run(&mut c, "WSGIPythonHashSeed", "123").unwrap();
        assert_eq!(c.global.hash_seed, HashSeed::Fixed(123));
        assert!(run(&mut c, "WSGIPythonHashSeed", "-1").is_err());
        run(&mut c, "WSGIPythonPath", "/a:/b::/c").unwrap();
        assert_eq!(c.global.python_path, ["/a", "/b", "/c"]);
        assert!(run(&mut c, "WSGIPythonHome", "relative/venv").is_err());
        run(&mut c, "WSGIPythonWarnings", "ignore::DeprecationWarning").unwrap();
        run(&mut c, "WSGIPythonWarnings", "error").unwrap();
        assert_eq!(c.global.warnings.len(), 2);
        assert!(
            c.global.restrict_signal,
            "WSGIRestrictSignal defaults to On"
        );
    }

    #[test]
    fn flags_deprecated_and_daemons() {
        let mut c = cfg();
        run(&mut c, "WSGIServerMetrics", "On").unwrap();
        assert!(c.global.server_metrics);
        run(&mut c, "WSGIDaemonProcess", "site threads=5").unwrap();
        let e = run(&mut c, "WSGIDaemonProcess", "site").unwrap_err();
        assert!(e.msg.contains("defined twice"), "{e}");
        assert_eq!(
            run(&mut c, "WSGIPerInterpreterGIL", "Off"),
            Ok(Applied::Done)
        );
        if !interp_options::OWN_GIL_BUILD {
            assert_eq!(
                run(&mut c, "WSGIPerInterpreterGIL", "On").unwrap_err().code,
                Code::NeedsNewerPython
            );
        }
        run(&mut c, "WSGIVerboseDebugging", "On").unwrap();
        run(&mut c, "WSGILazyInitialization", "On").unwrap();
        assert!(run(&mut c, "WSGILazyInitialization", "Off").is_err());
        assert_eq!(c.global.notices.len(), 2);
    }

    #[test]
    fn import_script_needs_both_groups() {
        let mut c = cfg();
        assert!(
            run(
                &mut c,
                "WSGIImportScript",
                "/x.wsgi process-group=%{GLOBAL}"
            )
            .is_err()
        );
        run(
            &mut c,
            "WSGIImportScript",
            "/x.wsgi process-group=%{GLOBAL} application-group=%{GLOBAL}",
        )
        .unwrap();
        assert_eq!(c.global.import_scripts[0].path, "/x.wsgi");
        run(&mut c, "WSGIApplicationGroup", "site1").unwrap();
        assert_eq!(c.dir.application_group.as_deref(), Some("site1"));
    }

    #[test]
    fn trusted_proxies_and_headers() {
        let mut c = cfg();
        run(
            &mut c,
            "WSGITrustedProxyHeaders",
            "X-Forwarded-For X-Forwarded-Proto",
        )
        .unwrap();
        assert_eq!(
            c.dir.trusted_proxy_headers.as_deref(),
            Some(
                &[
                    "HTTP_X_FORWARDED_FOR".to_string(),
                    "HTTP_X_FORWARDED_PROTO".to_string()
                ][..]
            )
        );
        assert!(run(&mut c, "WSGITrustedProxyHeaders", "X-Bogus").is_err());
        run(&mut c, "WSGITrustedProxies", "127.0.0.1 10.0.0.0/8 ::1").unwrap();
        assert_eq!(c.dir.trusted_proxies.as_ref().map(|v| v.len()), Some(3));
        assert!(run(&mut c, "WSGITrustedProxies", "10.0.0.0/33").is_err());
    }

    #[test]
    fn restrict_process_list() {
        let mut c = cfg();
        run(&mut c, "WSGIRestrictProcess", "site1 %{GLOBAL} site2").unwrap();
        assert_eq!(
            c.dir.restrict_process.as_deref(),
            Some(&["site1".to_string(), String::new(), "site2".to_string()][..])
        );
        assert!(run(&mut c, "WSGIRestrictProcess", "").is_err());
    }

    #[test]
    fn dir_merge_prefers_child() {
        let parent = DirConfig {
            pass_authorization: Some(true),
            callable_object: Some("app".into()),
            ..Default::default()
        };
        let child = DirConfig {
            pass_authorization: Some(false),
            ..Default::default()
        };
        let m = DirConfig::merge(&parent, &child);
        assert_eq!(m.pass_authorization, Some(false));
        assert_eq!(m.callable_object.as_deref(), Some("app"));
    }
}
