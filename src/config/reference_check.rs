//! The guard that keeps the README's directive reference true to the parser: a unit test (no
//! code in any process) that reads README.md and checks its "Directive reference" and
//! "`WSGIDaemonProcess` options" tables against [`DIRECTIVES`] and [`daemon::OPTIONS`]: one row
//! per directive and per option, the context each directive is registered with, and whether it
//! is implemented, deprecated or still refused (`RW0002`).
#![forbid(unsafe_code)]

use super::{Context, DIRECTIVES, Support, daemon};

const README: &str = include_str!("../../README.md");

/// The lines of the section that starts with the heading `start` (up to the next heading of
/// the same or a higher level).
fn section(start: &str) -> Vec<&'static str> {
    let level = start.chars().take_while(|&c| c == '#').count();
    let mut lines = README.lines().skip_while(|l| l.trim_end() != start);
    assert!(lines.next().is_some(), "README.md has no heading '{start}'");
    lines
        .take_while(|l| {
            let hashes = l.chars().take_while(|&c| c == '#').count();
            !(hashes > 0 && hashes <= level && l[hashes..].starts_with(' '))
        })
        .collect()
}

/// The cells of a Markdown table row (`\|` is a pipe inside a cell), trimmed.
fn cells(row: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut escaped = false;
    for c in row.trim().trim_matches('|').chars() {
        match c {
            '|' if !escaped => out.push(String::new()),
            _ => out.last_mut().expect("one cell at least").push(c),
        }
        escaped = c == '\\';
    }
    out.iter().map(|c| c.trim().to_string()).collect()
}

/// The `code spans` of a cell.
fn spans(cell: &str) -> Vec<&str> {
    cell.split('`').skip(1).step_by(2).collect()
}

/// The table rows of a section whose first cell starts with a code span.
fn rows(section: &[&str]) -> Vec<Vec<String>> {
    section
        .iter()
        .filter(|l| l.starts_with("| `"))
        .map(|l| cells(l))
        .collect()
}

fn context_words(c: Context) -> &'static str {
    match c {
        Context::Server => "server",
        Context::ServerDir => "dir",
        Context::FileInfo => "htaccess",
        Context::AuthCfg => "htaccess (AuthConfig)",
    }
}

/// Whether a status cell says what `support` means.
fn status_fits(support: Support, status: &str) -> bool {
    let s = status.to_ascii_lowercase();
    let not_yet = s.contains("not yet");
    match support {
        Support::Implemented => !not_yet,
        Support::NotYet => not_yet,
        Support::Deprecated => !not_yet && s.contains("notice"),
    }
}

#[test]
fn directive_reference_matches_the_parser() {
    let rows = rows(&section("## Directive reference"));
    assert!(rows.len() > 20, "the directive table was not found");
    let mut seen: Vec<&str> = Vec::new();
    for row in &rows {
        assert!(
            row.len() >= 4,
            "a directive row without four cells: {row:?}"
        );
        let names: Vec<&str> = spans(&row[0])
            .into_iter()
            .filter_map(|s| s.split_whitespace().next())
            .filter(|w| w.starts_with("WSGI") || w.starts_with("<WSGI"))
            .collect();
        for name in names {
            let Some(d) = DIRECTIVES.iter().find(|d| d.name() == name) else {
                panic!("README names {name}, which the parser does not know: {row:?}");
            };
            assert!(
                !seen.contains(&name),
                "{name} has more than one row in the README"
            );
            seen.push(name);
            let context = context_words(d.context);
            let cell = row[1].as_str();
            let fits = match d.context {
                // "server", "main server only", "server, repeatable", ...
                Context::Server => {
                    cell.contains("server") && !cell.contains("dir") && !cell.contains("htaccess")
                }
                _ => cell == context,
            };
            assert!(
                fits,
                "{name}: the README's context '{cell}' is not the parser's '{context}'"
            );
            assert!(
                status_fits(d.support, &row[3]),
                "{name}: the README's status '{}' does not say {:?}",
                row[3],
                d.support
            );
        }
    }
    let missing: Vec<&str> = DIRECTIVES
        .iter()
        .map(|d| d.name())
        .filter(|n| !seen.contains(n))
        .collect();
    assert!(
        missing.is_empty(),
        "directives without a README row: {missing:?}"
    );
}

#[test]
fn daemon_option_reference_matches_the_parser() {
    let rows = rows(&section("#### `WSGIDaemonProcess` options"));
    assert!(rows.len() > 10, "the option table was not found");
    let mut seen: Vec<String> = Vec::new();
    for row in &rows {
        assert!(row.len() >= 3, "an option row without three cells: {row:?}");
        for span in spans(&row[0]) {
            let Some((name, _)) = span.split_once('=') else {
                continue;
            };
            let Some((_, support)) = daemon::OPTIONS.iter().find(|(n, _)| *n == name) else {
                panic!("README names option {name}=, which the parser does not know: {row:?}");
            };
            assert!(
                !seen.iter().any(|s| s == name),
                "{name}= has more than one row in the README"
            );
            seen.push(name.to_string());
            let not_yet = row[2].to_ascii_lowercase().contains("not yet");
            assert_eq!(
                not_yet,
                *support == daemon::OptionSupport::NotYet,
                "{name}=: the README's status '{}' does not say {support:?}",
                row[2]
            );
        }
    }
    let missing: Vec<&str> = daemon::OPTIONS
        .iter()
        .map(|(n, _)| *n)
        .filter(|n| !seen.iter().any(|s| s == n))
        .collect();
    assert!(
        missing.is_empty(),
        "options without a README row: {missing:?}"
    );
}

#[test]
fn cells_keep_escaped_pipes() {
    assert_eq!(
        cells("| `A On\\|Off` | server | x |"),
        vec!["`A On\\|Off`", "server", "x"]
    );
    assert_eq!(spans("`a` and `b c`"), vec!["a", "b c"]);
}
