//! The one-group rule: from the configuration alone (the same answer in every process), which
//! `WSGIScriptAlias` entries are the only way into every process they can reach with one
//! application group, so that group runs in the process's main interpreter; and which
//! `WSGIImportScript`s run there too. Pure: the directive parsers record the facts, the httpd
//! parent computes the plan once the configuration is read (`check_config`), httpd children
//! and daemons read it.
#![forbid(unsafe_code)]

use std::collections::BTreeSet;

use super::ImportScript;

/// The server a directive was read in (`cmd->server`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub enum Server {
    /// The main server: its aliases and settings apply in every virtual host too.
    #[default]
    Main,
    /// A `<VirtualHost>`, by an identity unique within one configuration read.
    Virtual(usize),
}

/// Where a directive was read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Place {
    pub server: Server,
    /// Inside `<Directory>`, `<Location>`, `<Files>`, `<If>` (and their Match forms).
    pub section: bool,
}

/// One `WSGIScriptAlias`/`WSGIScriptAliasMatch`, as the rule sees it; its index in
/// `Recorded::aliases` is the alias's id (`ScriptAlias::id`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AliasEntry {
    pub server: Server,
    /// `WSGIScriptAliasMatch`.
    pub regex: bool,
    /// The URL prefix (`WSGIScriptAlias`) or regex.
    pub location: String,
    pub process_group: Option<String>,
    pub application_group: Option<String>,
}

/// Which of the two directives a [`Setting`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    ProcessGroup,
    ApplicationGroup,
}

/// A `WSGIProcessGroup` or `WSGIApplicationGroup` and where it was read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Setting {
    pub place: Place,
    pub kind: Kind,
    pub value: String,
}

/// What the directive parsers record for the rule.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recorded {
    pub aliases: Vec<AliasEntry>,
    pub settings: Vec<Setting>,
    /// A `WSGIDispatchScript` is configured: groups are chosen per request.
    pub dispatch: bool,
}

/// Whether the requests that come through an alias run in the main interpreter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Sole {
    /// No: each runs in the group its name says (a sub-interpreter unless `%{GLOBAL}`).
    No,
    /// Yes, every one.
    Yes,
    /// Those whose SCRIPT_NAME is this (the alias's own URL: its target is the script, not a
    /// directory of scripts, each of which `%{RESOURCE}` names a group of its own).
    IfScriptName(String),
}

/// The rule's result for one configuration.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// By alias id.
    pub sole: Vec<Sole>,
    /// `(process, group)`: in that process (`""` embedded, else the daemon group's name), the
    /// literal application group of its sole alias, which runs in the main interpreter
    /// whichever way a request reaches it (and its `WSGIImportScript`s too).
    pub main_group: Vec<(String, String)>,
    /// By alias id: the verdict and its reason, for the log (`LogLevel rwsgi:debug`).
    pub why: Vec<String>,
}

impl Plan {
    /// Whether a request runs in the main interpreter: its application group is `%{GLOBAL}`
    /// (`""`), or it came through a sole alias (`via`: the alias id and the request's
    /// SCRIPT_NAME), or its group is the literal group of its process's sole alias.
    pub fn runs_in_main(
        &self,
        via: Option<(usize, &[u8])>,
        process_group: &str,
        application_group: &str,
    ) -> bool {
        if application_group.is_empty() {
            return true;
        }
        let through_sole = via.is_some_and(|(id, script_name)| match self.sole.get(id) {
            Some(Sole::Yes) => true,
            Some(Sole::IfScriptName(s)) => s.as_bytes().eq_ignore_ascii_case(script_name),
            _ => false,
        });
        through_sole || self.main_group_of(process_group) == Some(application_group)
    }

    /// Whether a `WSGIImportScript` runs in the main interpreter of its process.
    pub fn import_in_main(&self, imp: &ImportScript) -> bool {
        imp.application_group == "%{GLOBAL}"
            || self.main_group_of(&process_name(&imp.process_group))
                == Some(imp.application_group.as_str())
    }

    /// The literal group that runs in `process`'s main interpreter besides `%{GLOBAL}`.
    pub fn main_group_of(&self, process: &str) -> Option<&str> {
        self.main_group
            .iter()
            .find(|(p, _)| p == process)
            .map(|(_, g)| g.as_str())
    }
}

/// A process-group expression as the process it names: `%{GLOBAL}` is embedded mode (`""`).
fn process_name(expr: &str) -> String {
    if expr == "%{GLOBAL}" {
        String::new()
    } else {
        expr.to_string()
    }
}

/// The processes an alias can reach.
#[derive(Debug, PartialEq, Eq)]
enum Reach {
    /// A process group that depends on the request (`%{ENV:}`, `%{SERVER}`, ...): any.
    All,
    Some(BTreeSet<String>),
}

impl Reach {
    fn contains(&self, p: &str) -> bool {
        match self {
            Reach::All => true,
            Reach::Some(s) => s.contains(p),
        }
    }
}

impl Recorded {
    /// The last server-level value of `kind` set in `server`.
    fn server_level(&self, kind: Kind, server: Server) -> Option<&str> {
        self.settings
            .iter()
            .rev()
            .find(|s| s.kind == kind && !s.place.section && s.place.server == server)
            .map(|s| s.value.as_str())
    }

    /// Every virtual host the configuration mentions (the others inherit the main server's).
    fn virtual_hosts(&self) -> BTreeSet<Server> {
        self.aliases
            .iter()
            .map(|a| a.server)
            .chain(self.settings.iter().map(|s| s.place.server))
            .filter(|s| *s != Server::Main)
            .collect()
    }

    /// The expressions of `kind` a request through `alias` can get: the alias's option if
    /// given (it wins over the directives); otherwise the server-level value of each virtual
    /// host it serves (a vhost's own, else the main server's, else the default) and every
    /// section-level value that can apply there (sections are not matched against the
    /// alias: any of them may apply).
    fn expressions(&self, alias: &AliasEntry, kind: Kind) -> BTreeSet<String> {
        let option = match kind {
            Kind::ProcessGroup => &alias.process_group,
            Kind::ApplicationGroup => &alias.application_group,
        };
        if let Some(v) = option {
            return BTreeSet::from([v.clone()]);
        }
        let default = match kind {
            Kind::ProcessGroup => "%{GLOBAL}",
            Kind::ApplicationGroup => "%{RESOURCE}",
        };
        let servers: Vec<Server> = match alias.server {
            // A main-server alias serves every virtual host as well.
            Server::Main => std::iter::once(Server::Main)
                .chain(self.virtual_hosts())
                .collect(),
            v => vec![v],
        };
        let main_level = self.server_level(kind, Server::Main);
        let mut out: BTreeSet<String> = servers
            .iter()
            .map(|&s| {
                self.server_level(kind, s)
                    .or(main_level)
                    .unwrap_or(default)
                    .to_string()
            })
            .collect();
        out.extend(
            self.settings
                .iter()
                .filter(|s| {
                    s.kind == kind
                        && s.place.section
                        && (alias.server == Server::Main
                            || s.place.server == Server::Main
                            || s.place.server == alias.server)
                })
                .map(|s| s.value.clone()),
        );
        out
    }

    /// The processes (`""` embedded, else a daemon group's name) alias `id` can reach.
    pub fn reachable(&self, id: usize, daemons: &[String]) -> Vec<String> {
        match self.aliases.get(id).map(|a| self.reach(a)) {
            None => Vec::new(),
            Some(Reach::All) => std::iter::once(String::new())
                .chain(daemons.iter().cloned())
                .collect(),
            Some(Reach::Some(s)) => s.into_iter().collect(),
        }
    }

    fn reach(&self, alias: &AliasEntry) -> Reach {
        let mut set = BTreeSet::new();
        for e in self.expressions(alias, Kind::ProcessGroup) {
            if e == "%{GLOBAL}" {
                set.insert(String::new());
            } else if e.starts_with("%{") {
                return Reach::All;
            } else {
                set.insert(e);
            }
        }
        Reach::Some(set)
    }

    /// Applies the rule to every alias (`daemons`: the names of the `WSGIDaemonProcess`
    /// groups; `imports`: the `WSGIImportScript`s).
    pub fn plan(&self, daemons: &[String], imports: &[ImportScript]) -> Plan {
        let reaches: Vec<Reach> = self.aliases.iter().map(|a| self.reach(a)).collect();
        let every_process: Vec<String> = std::iter::once(String::new())
            .chain(daemons.iter().cloned())
            .collect();
        let mut plan = Plan::default();
        for (id, alias) in self.aliases.iter().enumerate() {
            let processes: Vec<String> = match &reaches[id] {
                Reach::All => every_process.clone(),
                Reach::Some(s) => s.iter().cloned().collect(),
            };
            // Alone in every process it reaches.
            let alone = reaches.iter().enumerate().all(|(other, r)| {
                other == id
                    || match &reaches[id] {
                        Reach::All => false,
                        Reach::Some(s) => s.iter().all(|p| !r.contains(p)),
                    }
            });
            let groups = self.expressions(alias, Kind::ApplicationGroup);
            let names = |ps: &[String]| {
                ps.iter()
                    .map(|p| if p.is_empty() { "embedded" } else { p.as_str() })
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let (sole, why) = match (alone && !self.dispatch, groups.len(), groups.first()) {
                (false, ..) if self.dispatch => (
                    Sole::No,
                    "a WSGIDispatchScript chooses process and application groups per request"
                        .to_string(),
                ),
                (false, ..) => (
                    Sole::No,
                    format!(
                        "another alias can reach its process ({})",
                        names(&processes)
                    ),
                ),
                (true, 1, Some(expr)) => {
                    let literal = !expr.starts_with("%{");
                    // The processes' preloads are in %{GLOBAL} or in this very group.
                    let imports_agree = imports
                        .iter()
                        .filter(|i| processes.contains(&process_name(&i.process_group)))
                        .all(|i| {
                            i.application_group == "%{GLOBAL}"
                                || (literal && i.application_group == *expr)
                        });
                    let only = format!(
                        "the only alias of its process ({}), application group {expr}",
                        names(&processes)
                    );
                    match expr.as_str() {
                        _ if !imports_agree => (
                            Sole::No,
                            "a WSGIImportScript preloads another application group there".into(),
                        ),
                        "%{GLOBAL}" | "%{SERVER}" => (Sole::Yes, only),
                        "%{RESOURCE}" if !alias.regex => (
                            Sole::IfScriptName(script_name(alias)),
                            format!("{only} (when its target is the script)"),
                        ),
                        _ if literal => {
                            for p in &processes {
                                plan.main_group.push((p.clone(), expr.clone()));
                            }
                            (Sole::Yes, only)
                        }
                        // %{HOST}, %{ENV:...}, %{RESOURCE} of a regex alias.
                        _ => (
                            Sole::No,
                            format!("its application group {expr} depends on the request"),
                        ),
                    }
                }
                _ => (
                    Sole::No,
                    format!(
                        "its application group may be any of {}",
                        groups.iter().cloned().collect::<Vec<_>>().join(", ")
                    ),
                ),
            };
            let directive = if alias.regex {
                "WSGIScriptAliasMatch"
            } else {
                "WSGIScriptAlias"
            };
            let verdict = if sole == Sole::No {
                "its requests run in sub-interpreters by group name (main for %{GLOBAL})"
            } else {
                "its requests run in the main interpreter"
            };
            plan.why
                .push(format!("{directive} {}: {verdict}: {why}", alias.location));
            plan.sole.push(sole);
        }
        plan
    }
}

/// The SCRIPT_NAME of every request through a prefix alias whose target is the script (`//`
/// collapsed; `""` for `/`).
fn script_name(alias: &AliasEntry) -> String {
    let collapsed = crate::wsgi::environ::no2slash(alias.location.as_bytes());
    let s = String::from_utf8_lossy(&collapsed).into_owned();
    if s == "/" { String::new() } else { s }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{DirConfig, GlobalConfig, ServerConfig, Targets, apply, directive};

    /// A configuration read directive by directive, with a server config per virtual host.
    #[derive(Default)]
    struct Conf {
        global: GlobalConfig,
        servers: Vec<ServerConfig>,
    }

    impl Conf {
        /// `lines`: `<vhost> <section?> Directive args`, vhost 0 being the main server.
        fn read(lines: &[&str]) -> Conf {
            let mut c = Conf::default();
            for line in lines {
                let (vh, rest) = line.split_once(' ').unwrap();
                let (section, rest) = match rest.strip_prefix("dir ") {
                    Some(r) => (true, r),
                    None => (false, rest),
                };
                let (name, args) = rest.split_once(' ').unwrap_or((rest, ""));
                let vh: usize = vh.parse().unwrap();
                while c.servers.len() <= vh {
                    c.servers.push(ServerConfig::default());
                }
                let place = Place {
                    server: if vh == 0 {
                        Server::Main
                    } else {
                        Server::Virtual(vh)
                    },
                    section,
                };
                apply(
                    directive(name).unwrap(),
                    args,
                    Targets {
                        server: &mut c.servers[vh],
                        dir: &mut DirConfig::default(),
                        global: &mut c.global,
                        place,
                    },
                )
                .unwrap_or_else(|e| panic!("{line}: {e}"));
            }
            c.global.finish_groups();
            c
        }

        fn sole(&self) -> &[Sole] {
            &self.global.groups_plan.sole
        }
    }

    use Sole::{IfScriptName, No, Yes};

    fn script(s: &str) -> Sole {
        IfScriptName(s.into())
    }

    #[test]
    fn one_alias_embedded_is_single() {
        let c = Conf::read(&["0 WSGIScriptAlias /app /srv/app.wsgi"]);
        assert_eq!(c.sole(), [script("/app")]);
        let p = &c.global.groups_plan;
        assert!(p.runs_in_main(Some((0, b"/app")), "", "127.0.0.1:80|/app"));
        // The same alias with a directory target: each script is a group of its own.
        assert!(!p.runs_in_main(Some((0, b"/app/x.wsgi")), "", "h|/app/x.wsgi"));
        // Requests that came another way (SetHandler) run by name.
        assert!(!p.runs_in_main(None, "", "h|/app"));
        assert!(p.runs_in_main(None, "", ""));
        let root = Conf::read(&["0 WSGIScriptAlias // /srv/app.wsgi"]);
        assert_eq!(root.sole(), [script("")]);
    }

    #[test]
    fn one_alias_per_daemon_group_in_two_vhosts_are_single() {
        let c = Conf::read(&[
            "0 WSGIDaemonProcess a",
            "0 WSGIDaemonProcess b",
            "1 WSGIProcessGroup a",
            "1 WSGIScriptAlias / /srv/a.wsgi",
            "2 WSGIScriptAlias / /srv/b.wsgi process-group=b",
        ]);
        assert_eq!(c.sole(), [script(""), script("")]);
    }

    #[test]
    fn two_aliases_in_one_process_are_not() {
        let c = Conf::read(&[
            "0 WSGIScriptAlias /a /srv/a.wsgi",
            "0 WSGIScriptAlias /b /srv/b.wsgi",
        ]);
        assert_eq!(c.sole(), [No, No]);
        assert_eq!(
            c.global.groups_plan.why[1],
            "WSGIScriptAlias /b: its requests run in sub-interpreters by group name (main for \
             %{GLOBAL}): another alias can reach its process (embedded)"
        );
        // The same with a daemon group, one alias per vhost (the server-level group applies to
        // both), and with the same literal group.
        let c = Conf::read(&[
            "0 WSGIDaemonProcess site",
            "0 WSGIProcessGroup site",
            "0 WSGIApplicationGroup shared",
            "1 WSGIScriptAlias / /srv/a.wsgi",
            "2 WSGIScriptAlias / /srv/b.wsgi",
        ]);
        assert_eq!(c.sole(), [No, No]);
        assert_eq!(c.global.groups_plan.main_group, []);
        // A main-server alias is served by every vhost: a vhost's own alias shares its process.
        let c = Conf::read(&[
            "0 WSGIDaemonProcess a",
            "0 WSGIScriptAlias /m /srv/m.wsgi",
            "1 WSGIProcessGroup a",
            "1 WSGIScriptAlias / /srv/a.wsgi",
        ]);
        assert_eq!(c.sole(), [No, No]);
        // Two aliases, two processes: each alone.
        let c = Conf::read(&[
            "0 WSGIDaemonProcess a",
            "0 WSGIScriptAlias /a /srv/a.wsgi process-group=a",
            "0 WSGIScriptAlias /e /srv/e.wsgi",
        ]);
        assert_eq!(c.sole(), [script("/a"), script("/e")]);
    }

    #[test]
    fn match_alias_and_group_expressions() {
        // %{RESOURCE} of a regex alias: one group per matched URL.
        let c = Conf::read(&["0 WSGIScriptAliasMatch ^/m/([a-z]+) /srv/$1.wsgi"]);
        assert_eq!(c.sole(), [No]);
        // A literal or %{SERVER} group is one group whatever the script.
        let c =
            Conf::read(&["0 WSGIScriptAliasMatch ^/m/([a-z]+) /srv/$1.wsgi application-group=x"]);
        assert_eq!(c.sole(), [Yes]);
        assert_eq!(
            c.global.groups_plan.main_group,
            [(String::new(), "x".into())]
        );
        let c = Conf::read(&["0 WSGIScriptAlias /d/ /srv/scripts/ application-group=%{SERVER}"]);
        assert_eq!(c.sole(), [Yes]);
        // %{HOST} and %{ENV:} depend on the request.
        for g in ["%{HOST}", "%{ENV:SITE}"] {
            let c = Conf::read(&[&format!(
                "0 WSGIScriptAlias /a /srv/a.wsgi application-group={g}"
            )]);
            assert_eq!(c.sole(), [No], "{g}");
        }
        let c = Conf::read(&["0 WSGIScriptAlias /a /srv/a.wsgi application-group=%{GLOBAL}"]);
        assert_eq!(c.sole(), [Yes]);
    }

    #[test]
    fn dynamic_process_group_reaches_every_process() {
        let c = Conf::read(&[
            "0 WSGIDaemonProcess a",
            "0 WSGIScriptAlias /a /srv/a.wsgi process-group=a application-group=one",
            "0 WSGIScriptAlias /x /srv/x.wsgi process-group=%{ENV:PG}",
        ]);
        assert_eq!(c.sole(), [No, No]);
        // Alone in the configuration, it is the only alias of every process.
        let c = Conf::read(&[
            "0 WSGIDaemonProcess a",
            "0 WSGIScriptAlias /x /srv/x.wsgi process-group=%{ENV:PG} application-group=one",
        ]);
        assert_eq!(c.sole(), [Yes]);
        assert_eq!(
            c.global.groups_plan.main_group,
            [(String::new(), "one".into()), ("a".into(), "one".into())]
        );
        // %{SERVER} as a process group can name any daemon ("host:port" is a usual name).
        let c = Conf::read(&[
            "0 WSGIDaemonProcess a",
            "0 WSGIScriptAlias /a /srv/a.wsgi process-group=a",
            "1 WSGIProcessGroup %{SERVER}",
            "1 WSGIScriptAlias / /srv/b.wsgi",
        ]);
        assert_eq!(c.sole(), [No, No]);
    }

    #[test]
    fn section_level_settings() {
        // A section's group may apply to the alias's requests.
        let c = Conf::read(&[
            "0 WSGIScriptAlias /a /srv/a.wsgi",
            "0 dir WSGIApplicationGroup %{GLOBAL}",
        ]);
        assert_eq!(c.sole(), [No]);
        // ... unless the alias names its group itself (its option wins).
        let c = Conf::read(&[
            "0 WSGIScriptAlias /a /srv/a.wsgi application-group=%{RESOURCE}",
            "0 dir WSGIApplicationGroup other",
        ]);
        assert_eq!(c.sole(), [script("/a")]);
        // The same expression in a section changes nothing.
        let c = Conf::read(&[
            "0 WSGIScriptAlias /a /srv/a.wsgi",
            "0 dir WSGIApplicationGroup %{RESOURCE}",
        ]);
        assert_eq!(c.sole(), [script("/a")]);
        // Another vhost's sections never apply.
        let c = Conf::read(&[
            "1 WSGIScriptAlias /a /srv/a.wsgi",
            "2 dir WSGIApplicationGroup other",
        ]);
        assert_eq!(c.sole(), [script("/a")]);
        // A section's process group adds a process the alias may reach.
        let c = Conf::read(&[
            "0 WSGIDaemonProcess d",
            "1 WSGIScriptAlias /a /srv/a.wsgi process-group=d",
            "2 WSGIScriptAlias /b /srv/b.wsgi",
            "2 dir WSGIProcessGroup d",
        ]);
        assert_eq!(c.sole(), [No, No]);
        // A vhost's server-level group overrides the main server's for that vhost only.
        let c = Conf::read(&[
            "0 WSGIApplicationGroup %{GLOBAL}",
            "1 WSGIApplicationGroup site",
            "1 WSGIScriptAlias /a /srv/a.wsgi",
        ]);
        assert_eq!(c.sole(), [Yes]);
        assert_eq!(c.global.groups_plan.main_group_of(""), Some("site"));
        // A main-server alias takes each vhost's server-level group: two groups.
        let c = Conf::read(&[
            "0 WSGIScriptAlias /a /srv/a.wsgi",
            "1 WSGIApplicationGroup site",
        ]);
        assert_eq!(c.sole(), [No]);
    }

    #[test]
    fn imports() {
        let base = [
            "0 WSGIDaemonProcess d",
            "0 WSGIScriptAlias /a /srv/a.wsgi process-group=d application-group=app",
        ];
        let with = |imp: &str| {
            let mut lines = base.to_vec();
            lines.push(imp);
            Conf::read(&lines)
        };
        let c = with("0 WSGIImportScript /srv/a.wsgi process-group=d application-group=%{GLOBAL}");
        assert_eq!(c.sole(), [Yes]);
        assert!(c.global.import_in_main(&c.global.import_scripts[0]));
        let c = with("0 WSGIImportScript /srv/a.wsgi process-group=d application-group=app");
        assert_eq!(c.sole(), [Yes]);
        assert!(c.global.import_in_main(&c.global.import_scripts[0]));
        let p = &c.global.groups_plan;
        // A request reaching d another way with the same group joins it in main.
        assert!(p.runs_in_main(None, "d", "app"));
        assert!(!p.runs_in_main(None, "d", "other"));
        assert!(!p.runs_in_main(None, "", "app"));
        let c = with("0 WSGIImportScript /srv/o.wsgi process-group=d application-group=other");
        assert_eq!(c.sole(), [No]);
        assert!(!c.global.import_in_main(&c.global.import_scripts[0]));
        assert_eq!(c.global.groups_plan.main_group_of("d"), None);
        // Another process's preloads do not matter.
        let c =
            with("0 WSGIImportScript /srv/o.wsgi process-group=%{GLOBAL} application-group=other");
        assert_eq!(c.sole(), [Yes]);
        assert!(!c.global.import_in_main(&c.global.import_scripts[0]));
        // With %{RESOURCE} only %{GLOBAL} preloads agree.
        let c = Conf::read(&[
            "0 WSGIScriptAlias /a /srv/a.wsgi",
            "0 WSGIImportScript /srv/a.wsgi process-group=%{GLOBAL} application-group=x",
        ]);
        assert_eq!(c.sole(), [No]);
    }
}
