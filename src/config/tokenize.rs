//! Splits a directive's raw argument line into words the way httpd's `ap_getword_conf` does
//! (double or single quotes group words, a backslash escapes the quote inside them).
//! Pure; runs in the httpd parent while the configuration is read.
#![forbid(unsafe_code)]

/// Whitespace as `ap_getword_conf` sees it: `apr_isspace` in the C locale, ASCII only. A
/// non-breaking space (U+00A0) or another Unicode space is part of a word, as in httpd.
fn is_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\x0b' | '\x0c' | '\r')
}

/// Splits `line` into configuration words.
pub fn words(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        while chars.peek().is_some_and(|&c| is_space(c)) {
            chars.next();
        }
        let Some(&first) = chars.peek() else { break };
        let mut word = String::new();
        if first == '"' || first == '\'' {
            chars.next();
            while let Some(c) = chars.next() {
                if c == '\\' && chars.peek() == Some(&first) {
                    word.push(first);
                    chars.next();
                } else if c == first {
                    break;
                } else {
                    word.push(c);
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if is_space(c) {
                    break;
                }
                chars.next();
                if (c == '"' || c == '\'') && word.ends_with('=') {
                    // `option='value with spaces'`: mod_wsgi strips the quotes of a value.
                    while let Some(q) = chars.next() {
                        if q == '\\' && chars.peek() == Some(&c) {
                            word.push(c);
                            chars.next();
                        } else if q == c {
                            break;
                        } else {
                            word.push(q);
                        }
                    }
                } else {
                    word.push(c);
                }
            }
        }
        out.push(word);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::words;

    #[test]
    fn plain_and_quoted_words() {
        assert_eq!(words("  a b\tc "), ["a", "b", "c"]);
        assert_eq!(
            words(r#"/x "/srv/my app.wsgi" process-group=a"#),
            ["/x", "/srv/my app.wsgi", "process-group=a"]
        );
        assert_eq!(words(r#"'it\'s' "q\"q""#), ["it's", "q\"q"]);
        assert_eq!(words(""), Vec::<String>::new());
        assert_eq!(
            words(r#"site display-name='%{GROUP}' python-path="/a b:/c" x=1"#),
            [
                "site",
                "display-name=%{GROUP}",
                "python-path=/a b:/c",
                "x=1"
            ]
        );
        assert_eq!(words(r#""""#), [""]);
    }

    /// Fuzzing finding (config_tokenize): a non-breaking space split a word, so
    /// `WSGIScriptAlias /x /srv/my\u{a0}app.wsgi` gave three words where httpd and mod_wsgi
    /// see two. Only ASCII whitespace separates words.
    #[test]
    fn only_ascii_whitespace_separates_words() {
        assert_eq!(
            words("/x /srv/my\u{a0}app.wsgi"),
            ["/x", "/srv/my\u{a0}app.wsgi"]
        );
        assert_eq!(words("a\u{2003}b\u{3000}c"), ["a\u{2003}b\u{3000}c"]);
        assert_eq!(words("a\x0bb\x0cc\rd"), ["a", "b", "c", "d"]);
    }
}
