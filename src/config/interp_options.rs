//! `<WSGIInterpreterOptions [process-group=G] [application-group=A]>`: parsing its selectors
//! and contents, and resolving the options that apply to one interpreter (mod_wsgi 6's rules:
//! the most specific matching section wins per option, later wins a tie, the server-level
//! directive is the lowest layer; `WSGIPythonPath` adds up, least specific first). Pure: the
//! httpd parent parses (the section handler walks the children in `httpd/module.rs`); httpd
//! children and daemon processes resolve when they set up an interpreter.
#![forbid(unsafe_code)]

use super::{GlobalConfig, bad, tokenize};
use crate::error::{Code, Error};

/// The section's name as written in the configuration.
pub const SECTION: &str = "<WSGIInterpreterOptions>";

/// The directives a section may contain.
pub const ALLOWED: [&str; 6] = [
    "WSGIPythonPath",
    "WSGISwitchInterval",
    "WSGIRestrictStdin",
    "WSGIRestrictStdout",
    "WSGIRestrictSignal",
    "WSGIPerInterpreterGIL",
];

/// One `<WSGIInterpreterOptions>` section. `None` selectors match anything; `Some("")` is
/// embedded mode (`process-group=`) or the main interpreter (`application-group=`), which
/// `%{GLOBAL}` also spells. `None` options leave the value to less specific layers.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Block {
    pub process_group: Option<String>,
    pub application_group: Option<String>,
    pub per_interpreter_gil: Option<bool>,
    pub switch_interval: Option<f64>,
    pub restrict_stdin: Option<bool>,
    pub restrict_stdout: Option<bool>,
    pub restrict_signal: Option<bool>,
    pub python_path: Vec<String>,
}

impl Block {
    /// How many selectors it has (0, 1 or 2): the more, the more specific.
    fn specificity(&self) -> u8 {
        u8::from(self.process_group.is_some()) + u8::from(self.application_group.is_some())
    }
}

fn selector_value(key: &str, v: &str) -> Result<String, Error> {
    if v == "%{GLOBAL}" {
        return Ok(String::new());
    }
    if v.contains("%{") {
        return Err(bad(
            SECTION,
            format!(
                "{key}={v}: a selector is matched against the resolved name, so only \
                 %{{GLOBAL}} or a plain name can match; write the name the group resolves to"
            ),
        ));
    }
    Ok(v.to_string())
}

/// Parses the opening tag's arguments (`raw` without the closing `>`).
pub fn parse_selectors(raw: &str) -> Result<Block, Error> {
    let mut b = Block::default();
    for w in tokenize::words(raw) {
        let Some((key, v)) = w.split_once('=') else {
            return Err(bad(
                SECTION,
                format!(
                    "'{w}' is not of the form key=value; use process-group=NAME and/or \
                     application-group=NAME"
                ),
            ));
        };
        let slot = if key.eq_ignore_ascii_case("process-group") {
            &mut b.process_group
        } else if key.eq_ignore_ascii_case("application-group") {
            &mut b.application_group
        } else {
            return Err(bad(
                SECTION,
                format!(
                    "unknown selector '{key}'; use process-group=NAME and/or \
                     application-group=NAME"
                ),
            ));
        };
        if slot.is_some() {
            return Err(bad(
                SECTION,
                format!("{key}= is given twice; give each selector once"),
            ));
        }
        *slot = Some(selector_value(key, v)?);
    }
    Ok(b)
}

/// The error for a directive a section may not contain.
pub fn not_allowed(name: &str) -> Error {
    Error::new(
        Code::BadDirective,
        format!(
            "{name} is not allowed inside {SECTION}; only {} may be there. Move it outside \
             the section",
            ALLOWED.join(", ")
        ),
    )
}

fn flag(name: &str, words: &[String]) -> Result<bool, Error> {
    match words {
        [w] if w.eq_ignore_ascii_case("on") => Ok(true),
        [w] if w.eq_ignore_ascii_case("off") => Ok(false),
        _ => Err(bad(
            name,
            format!("wrong arguments inside {SECTION}; use {name} On or {name} Off"),
        )),
    }
}

/// The RW0044 error for `WSGIPerInterpreterGIL On` on a build without own-GIL interpreters.
pub fn gil_needs_312(version: &str, executable: &str) -> Error {
    Error::new(
        Code::NeedsNewerPython,
        format!(
            "WSGIPerInterpreterGIL On needs Python 3.12 or later (own-GIL sub-interpreters, \
             PEP 684), but this mod_rwsgi is built for Python {version} ({executable}); use \
             WSGIPerInterpreterGIL Off, or rebuild with PYO3_PYTHON=/path/to/python3.12"
        ),
    )
}

/// Checks a `WSGIPerInterpreterGIL` value (at server level or in a section): `On` needs a
/// build for Python 3.12+ (`own_gil_build`).
pub fn per_interpreter_gil(
    words: &[String],
    own_gil_build: bool,
    version: &str,
    executable: &str,
) -> Result<bool, Error> {
    let on = flag("WSGIPerInterpreterGIL", words)?;
    if on && !own_gil_build {
        return Err(gil_needs_312(version, executable));
    }
    Ok(on)
}

/// Whether this build can give sub-interpreters their own GIL (Python 3.12+).
pub const OWN_GIL_BUILD: bool = cfg!(rwsgi_py312);

/// Applies one directive found inside a section to it. `name` is as written.
pub fn apply(block: &mut Block, name: &str, raw: &str) -> Result<(), Error> {
    let Some(canon) = ALLOWED.iter().find(|a| a.eq_ignore_ascii_case(name)) else {
        return Err(not_allowed(name));
    };
    let words = tokenize::words(raw);
    match *canon {
        "WSGIPythonPath" => {
            let [v] = &words[..] else {
                return Err(bad(
                    canon,
                    format!("wrong arguments inside {SECTION}; use WSGIPythonPath DIR[:DIR...]"),
                ));
            };
            block
                .python_path
                .extend(v.split(':').filter(|p| !p.is_empty()).map(String::from));
        }
        "WSGISwitchInterval" => match &words[..] {
            [v] => match v.parse::<f64>() {
                Ok(x) if x > 0.0 && x.is_finite() => block.switch_interval = Some(x),
                _ => {
                    return Err(bad(
                        canon,
                        format!("'{v}' is not valid; use seconds > 0, e.g. 0.005"),
                    ));
                }
            },
            _ => {
                return Err(bad(
                    canon,
                    "wrong arguments; use WSGISwitchInterval SECONDS",
                ));
            }
        },
        "WSGIRestrictStdin" => block.restrict_stdin = Some(flag(canon, &words)?),
        "WSGIRestrictStdout" => block.restrict_stdout = Some(flag(canon, &words)?),
        "WSGIRestrictSignal" => block.restrict_signal = Some(flag(canon, &words)?),
        "WSGIPerInterpreterGIL" => {
            block.per_interpreter_gil = Some(per_interpreter_gil(
                &words,
                OWN_GIL_BUILD,
                env!("RWSGI_PYTHON_VERSION"),
                env!("RWSGI_PYTHON_EXECUTABLE"),
            )?)
        }
        _ => unreachable!("{canon} is in ALLOWED"),
    }
    Ok(())
}

/// Which application group a `switch interval` came from, to decide where it may be set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IntervalScope {
    /// Server level, or a section without `application-group=`: the same value for every
    /// interpreter of the process.
    Process,
    /// A section with `application-group=` (the name; `""` for `%{GLOBAL}`).
    Group(String),
}

/// The options in force for one interpreter.
#[derive(Clone, Debug, PartialEq)]
pub struct Effective {
    /// Own GIL: never for the main interpreter.
    pub own_gil: bool,
    pub switch_interval: Option<(f64, IntervalScope)>,
    pub restrict_stdin: bool,
    pub restrict_stdout: bool,
    pub restrict_signal: bool,
    /// The sections' `WSGIPythonPath` directories, one list per matching section, least
    /// specific first (each is put in front of the ones before it). The server-level (or
    /// `python-path=`) list is not included.
    pub python_path_layers: Vec<Vec<String>>,
}

impl Effective {
    /// Whether the switch interval is set in this interpreter (`main`: the main one), as
    /// mod_wsgi: under a shared GIL it is process-wide, so a value scoped to a named group is
    /// skipped (`Err` with the value and group, for the log); a process-wide one is set by the
    /// main interpreter; an own-GIL interpreter sets whatever applies to it.
    pub fn switch_interval_here(&self, main: bool) -> Result<Option<f64>, (f64, String)> {
        match &self.switch_interval {
            None => Ok(None),
            Some((x, _)) if self.own_gil => Ok(Some(*x)),
            Some((x, IntervalScope::Group(g))) if !g.is_empty() => Err((*x, g.clone())),
            Some((x, _)) => Ok(main.then_some(*x)),
        }
    }
}

/// Resolves the options of an interpreter in `process` (`""`: an httpd child, else the daemon
/// group's name) serving `groups` (the sub-interpreter's application group; the main
/// interpreter's `""`, plus the group it runs under the one-group rule, if any).
pub fn resolve(g: &GlobalConfig, process: &str, groups: &[&str]) -> Effective {
    let main = groups.iter().any(|n| n.is_empty());
    let mut gil = (g.per_interpreter_gil, -1i8);
    let mut interval = g
        .switch_interval
        .map(|x| ((x, IntervalScope::Process), -1i8));
    let mut stdin = (g.restrict_stdin, -1i8);
    let mut stdout = (g.restrict_stdout, -1i8);
    let mut signal = (g.restrict_signal, -1i8);
    let mut layers: Vec<(u8, usize, &Vec<String>)> = Vec::new();
    for (i, b) in g.interp_options.iter().enumerate() {
        if b.process_group.as_ref().is_some_and(|p| p != process)
            || b.application_group
                .as_ref()
                .is_some_and(|a| !groups.contains(&a.as_str()))
        {
            continue;
        }
        let s = b.specificity() as i8;
        fn take<T: Clone>(slot: &mut (T, i8), v: &Option<T>, s: i8) {
            if let Some(v) = v
                && s >= slot.1
            {
                *slot = (v.clone(), s);
            }
        }
        take(&mut gil, &b.per_interpreter_gil, s);
        take(&mut stdin, &b.restrict_stdin, s);
        take(&mut stdout, &b.restrict_stdout, s);
        take(&mut signal, &b.restrict_signal, s);
        if let Some(x) = b.switch_interval
            && interval.as_ref().is_none_or(|(_, cur)| s >= *cur)
        {
            let scope = match &b.application_group {
                Some(a) => IntervalScope::Group(a.clone()),
                None => IntervalScope::Process,
            };
            interval = Some(((x, scope), s));
        }
        if !b.python_path.is_empty() {
            layers.push((b.specificity(), i, &b.python_path));
        }
    }
    layers.sort_by_key(|(s, i, _)| (*s, *i));
    Effective {
        own_gil: gil.0 && !main,
        switch_interval: interval.map(|(v, _)| v),
        restrict_stdin: stdin.0,
        restrict_stdout: stdout.0,
        restrict_signal: signal.0,
        python_path_layers: layers.into_iter().map(|(_, _, p)| p.clone()).collect(),
    }
}

/// Notices for the start-up log: sections whose `WSGISwitchInterval` is scoped to a named
/// application group that cannot have its own GIL here, so it is never set (mod_wsgi skips it
/// with a warning, since under a shared GIL it would change every interpreter's).
pub fn interval_notices(g: &GlobalConfig) -> Vec<String> {
    let mut out = Vec::new();
    for b in &g.interp_options {
        let (Some(x), Some(app)) = (b.switch_interval, &b.application_group) else {
            continue;
        };
        if app.is_empty() {
            continue;
        }
        let process = b.process_group.as_deref().unwrap_or("");
        let own = OWN_GIL_BUILD && resolve(g, process, &[app]).own_gil;
        if !own {
            out.push(format!(
                "{SECTION} application-group={app}: WSGISwitchInterval {x} is not applied: the \
                 group's interpreter shares the process's GIL, whose switch interval is \
                 process-wide (as mod_wsgi, it is set only for own-GIL interpreters; set it at \
                 server level or with process-group= only)"
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(sel: &str, lines: &[(&str, &str)]) -> Block {
        let mut b = parse_selectors(sel).unwrap();
        for (n, a) in lines {
            apply(&mut b, n, a).unwrap();
        }
        b
    }

    #[test]
    fn selectors() {
        assert_eq!(parse_selectors("").unwrap(), Block::default());
        let b = parse_selectors("process-group=d1 application-group=%{GLOBAL}").unwrap();
        assert_eq!(b.process_group.as_deref(), Some("d1"));
        assert_eq!(b.application_group.as_deref(), Some(""));
        let b = parse_selectors("Process-Group=%{GLOBAL}").unwrap();
        assert_eq!(b.process_group.as_deref(), Some(""));
        let e = parse_selectors("group=x").unwrap_err();
        assert!(e.msg.contains("unknown selector 'group'"), "{e}");
        let e = parse_selectors("alpha").unwrap_err();
        assert!(e.msg.contains("not of the form key=value"), "{e}");
        let e = parse_selectors("process-group=a process-group=b").unwrap_err();
        assert!(e.msg.contains("given twice"), "{e}");
        let e = parse_selectors("application-group=%{ENV:X}").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("RW0001: <WSGIInterpreterOptions>: "),
            "{e}"
        );
    }

    #[test]
    fn contents() {
        let b = block(
            "application-group=a",
            &[
                ("WSGIPythonPath", "/x:/y"),
                ("wsgipythonpath", "/z"),
                ("WSGIRestrictStdout", "On"),
                ("WSGIRestrictSignal", "off"),
                ("WSGISwitchInterval", "0.002"),
                ("WSGIPerInterpreterGIL", "Off"),
            ],
        );
        assert_eq!(b.python_path, ["/x", "/y", "/z"]);
        assert_eq!(b.restrict_stdout, Some(true));
        assert_eq!(b.restrict_signal, Some(false));
        assert_eq!(b.restrict_stdin, None);
        assert_eq!(b.switch_interval, Some(0.002));
        assert_eq!(b.per_interpreter_gil, Some(false));
        let mut b = Block::default();
        let e = apply(&mut b, "ServerName", "x").unwrap_err();
        assert_eq!(e.code, Code::BadDirective);
        assert!(
            e.msg
                .starts_with("ServerName is not allowed inside <WSGIInterpreterOptions>")
        );
        assert!(e.msg.contains("Move it outside"), "{e}");
        let e = apply(&mut b, "WSGIPythonHome", "/x").unwrap_err();
        assert!(e.msg.contains("not allowed"), "{e}");
        assert!(apply(&mut b, "WSGIRestrictStdin", "maybe").is_err());
        assert!(apply(&mut b, "WSGISwitchInterval", "-1").is_err());
        assert!(apply(&mut b, "WSGIPythonPath", "").is_err());
    }

    #[test]
    fn gil_on_needs_312() {
        let w = |s: &str| vec![s.to_string()];
        assert_eq!(per_interpreter_gil(&w("On"), true, "3.12", "/p"), Ok(true));
        assert_eq!(
            per_interpreter_gil(&w("off"), false, "3.11", "/p"),
            Ok(false)
        );
        let e = per_interpreter_gil(&w("On"), false, "3.11", "/usr/bin/python3.11").unwrap_err();
        let line = e.to_string();
        assert!(line.starts_with("RW0044: WSGIPerInterpreterGIL On needs Python 3.12 or later"));
        assert!(
            line.contains("built for Python 3.11 (/usr/bin/python3.11)"),
            "{line}"
        );
        assert!(!line.contains('\n'));
        assert!(per_interpreter_gil(&w("yes"), true, "3.12", "/p").is_err());
    }

    fn cfg(blocks: Vec<Block>) -> GlobalConfig {
        GlobalConfig {
            interp_options: blocks,
            ..Default::default()
        }
    }

    #[test]
    fn defaults_without_sections() {
        let g = GlobalConfig {
            restrict_stdin: true,
            switch_interval: Some(0.01),
            ..Default::default()
        };
        let e = resolve(&g, "", &["alpha"]);
        assert!(e.restrict_stdin && !e.restrict_stdout && e.restrict_signal && !e.own_gil);
        assert_eq!(e.switch_interval, Some((0.01, IntervalScope::Process)));
        assert!(e.python_path_layers.is_empty());
    }

    #[test]
    fn matching_and_precedence() {
        let g = cfg(vec![
            block(
                "",
                &[("WSGIRestrictStdout", "On"), ("WSGIPythonPath", "/all")],
            ),
            block(
                "application-group=alpha",
                &[("WSGIRestrictStdout", "Off"), ("WSGIPythonPath", "/alpha")],
            ),
            block(
                "process-group=d1 application-group=alpha",
                &[("WSGIRestrictStdin", "On"), ("WSGIPythonPath", "/d1alpha")],
            ),
            block("process-group=d1", &[("WSGIPythonPath", "/d1")]),
            block(
                "application-group=%{GLOBAL}",
                &[("WSGIRestrictSignal", "Off")],
            ),
        ]);
        // Embedded, group alpha: the empty section and the alpha one; alpha is more specific.
        let e = resolve(&g, "", &["alpha"]);
        assert!(!e.restrict_stdout && !e.restrict_stdin && e.restrict_signal);
        assert_eq!(e.python_path_layers, [vec!["/all"], vec!["/alpha"]]);
        // Daemon d1, alpha: every layer but %{GLOBAL}'s, least specific first, ties by order.
        let e = resolve(&g, "d1", &["alpha"]);
        assert!(e.restrict_stdin);
        assert_eq!(
            e.python_path_layers,
            [vec!["/all"], vec!["/alpha"], vec!["/d1"], vec!["/d1alpha"]]
        );
        // beta: only the empty section.
        let e = resolve(&g, "", &["beta"]);
        assert!(e.restrict_stdout);
        assert_eq!(e.python_path_layers, [vec!["/all"]]);
        // The main interpreter (%{GLOBAL}).
        let e = resolve(&g, "", &[""]);
        assert!(e.restrict_stdout && !e.restrict_signal);
        // The main interpreter also serving alpha (one-group rule): both names match.
        let e = resolve(&g, "", &["", "alpha"]);
        assert!(!e.restrict_stdout && !e.restrict_signal);
        // A process-group=%{GLOBAL} section is embedded mode only.
        let g = cfg(vec![block(
            "process-group=%{GLOBAL}",
            &[("WSGIRestrictStdin", "On")],
        )]);
        assert!(resolve(&g, "", &["x"]).restrict_stdin);
        assert!(!resolve(&g, "d1", &["x"]).restrict_stdin);
    }

    #[test]
    fn later_section_wins_a_tie() {
        let g = cfg(vec![
            block("application-group=a", &[("WSGIRestrictStdout", "On")]),
            block("process-group=d", &[("WSGIRestrictStdout", "Off")]),
        ]);
        assert!(!resolve(&g, "d", &["a"]).restrict_stdout);
        assert!(resolve(&g, "", &["a"]).restrict_stdout);
    }

    #[test]
    fn own_gil_and_switch_interval() {
        let mut g = cfg(vec![
            block(
                "application-group=fast",
                &[
                    ("WSGIPerInterpreterGIL", "Off"),
                    ("WSGISwitchInterval", "0.001"),
                ],
            ),
            block("process-group=d", &[("WSGISwitchInterval", "0.002")]),
        ]);
        g.switch_interval = Some(0.01);
        // Scoped to a named group under a shared GIL: skipped, with what to log.
        let e = resolve(&g, "", &["fast"]);
        assert_eq!(e.switch_interval_here(false), Err((0.001, "fast".into())));
        // Server level: set by the main interpreter only.
        let e = resolve(&g, "", &["other"]);
        assert_eq!(e.switch_interval_here(false), Ok(None));
        assert_eq!(
            resolve(&g, "", &[""]).switch_interval_here(true),
            Ok(Some(0.01))
        );
        // process-group= only: process-wide, the main interpreter sets it.
        assert_eq!(
            resolve(&g, "d", &[""]).switch_interval_here(true),
            Ok(Some(0.002))
        );
        // An own-GIL interpreter sets its own.
        g.per_interpreter_gil = true;
        g.interp_options[0].per_interpreter_gil = None;
        let e = resolve(&g, "", &["fast"]);
        assert!(e.own_gil);
        assert_eq!(e.switch_interval_here(false), Ok(Some(0.001)));
        assert_eq!(
            resolve(&g, "", &["x"]).switch_interval_here(false),
            Ok(Some(0.01))
        );
        // Never for the main interpreter.
        assert!(!resolve(&g, "", &[""]).own_gil);
        assert!(!resolve(&g, "", &["", "fast"]).own_gil);
    }

    #[test]
    fn notices_for_group_scoped_interval() {
        let g = cfg(vec![
            block("application-group=a", &[("WSGISwitchInterval", "0.001")]),
            block(
                "application-group=%{GLOBAL}",
                &[("WSGISwitchInterval", "0.001")],
            ),
            block("process-group=d", &[("WSGISwitchInterval", "0.001")]),
        ]);
        let n = interval_notices(&g);
        assert_eq!(n.len(), 1, "{n:?}");
        assert!(n[0].contains("application-group=a: WSGISwitchInterval 0.001 is not applied"));
    }
}
