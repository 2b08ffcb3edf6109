//! Pure pieces of the WSGI environ: header names to CGI keys (dropping names that could spoof
//! others), the SCRIPT_NAME/PATH_INFO split, `%{...}` group expansion and version parsing.
//! Runs in the httpd child (and later in daemons).
#![forbid(unsafe_code)]

/// What a request header becomes in the environ.
#[derive(Debug, PartialEq, Eq)]
pub enum HeaderKey {
    /// Stored under this key.
    Key(String),
    /// Left out: `Proxy` (httpoxy), or `Authorization` without pass-authorization.
    Skip,
    /// Left out because the name has characters other than letters, digits and `-`
    /// (`X_Foo` would otherwise collide with `X-Foo`).
    Invalid,
}

/// Maps a request header name to its environ key (`Content-Type` -> `CONTENT_TYPE`,
/// `X-Foo` -> `HTTP_X_FOO`).
pub fn header_key(name: &[u8], pass_authorization: bool) -> HeaderKey {
    if name.is_empty() || !name.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-') {
        return HeaderKey::Invalid;
    }
    if name.eq_ignore_ascii_case(b"content-type") {
        return HeaderKey::Key("CONTENT_TYPE".into());
    }
    if name.eq_ignore_ascii_case(b"content-length") {
        return HeaderKey::Key("CONTENT_LENGTH".into());
    }
    if name.eq_ignore_ascii_case(b"proxy") {
        return HeaderKey::Skip;
    }
    if (name.eq_ignore_ascii_case(b"authorization")
        || name.eq_ignore_ascii_case(b"proxy-authorization"))
        && !pass_authorization
    {
        return HeaderKey::Skip;
    }
    let mut key = String::with_capacity(5 + name.len());
    key.push_str("HTTP_");
    key.extend(name.iter().map(|&c| {
        if c == b'-' {
            '_'
        } else {
            c.to_ascii_uppercase() as char
        }
    }));
    HeaderKey::Key(key)
}

/// A `CONTENT_LENGTH` value as a number (`None` if it is not a plain decimal number).
pub fn parse_content_length(v: &[u8]) -> Option<u64> {
    std::str::from_utf8(v).ok()?.trim().parse().ok()
}

/// The declared request-body length in a CGI environ (absent for chunked bodies: httpd drops
/// `Content-Length` when `Transfer-Encoding` is present).
pub fn content_length<V: AsRef<[u8]>>(env: &[(String, V)]) -> Option<u64> {
    env.iter()
        .find(|(k, _)| k == "CONTENT_LENGTH")
        .and_then(|(_, v)| parse_content_length(v.as_ref()))
}

/// Collapses runs of `/` into one (httpd's `ap_no2slash`).
pub fn no2slash(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    for &c in s {
        if !(c == b'/' && out.last() == Some(&b'/')) {
            out.push(c);
        }
    }
    out
}

/// Where PATH_INFO starts inside the decoded URI (httpd's `ap_find_path_info`: the tail of
/// `uri` that matches `path_info`, tolerating repeated slashes in the URI).
pub fn find_path_info(uri: &[u8], path_info: &[u8]) -> usize {
    let mut lu = uri.len() as isize;
    let mut lp = path_info.len() as isize;
    loop {
        lu -= 1;
        if lu < 0 {
            break;
        }
        lp -= 1;
        if lp < 0 || uri[lu as usize] != path_info[lp as usize] {
            break;
        }
        if path_info[lp as usize] == b'/' {
            while lu > 0 && uri[lu as usize - 1] == b'/' {
                lu -= 1;
            }
        }
    }
    let mut lu = lu.max(0) as usize;
    while lu < uri.len() && uri[lu] != b'/' {
        lu += 1;
    }
    lu
}

/// SCRIPT_NAME and PATH_INFO for a request, with `//` collapsed as mod_wsgi does.
pub fn script_name_and_path_info(uri: &[u8], path_info: Option<&[u8]>) -> (Vec<u8>, Vec<u8>) {
    match path_info {
        Some(pi) if !pi.is_empty() => {
            let at = find_path_info(uri, pi);
            (no2slash(&uri[..at]), no2slash(pi))
        }
        _ => (no2slash(uri), Vec::new()),
    }
}

/// How many bytes of `uri` a `WSGIScriptAlias` prefix matches (0: no match). Runs of `/` in
/// the alias match runs of `/` in the URI, and the match must end at a path-segment boundary
/// (mod_alias's rule, as mod_wsgi uses it).
pub fn alias_matches(uri: &[u8], alias: &[u8]) -> usize {
    let (mut a, mut u) = (0, 0);
    while a < alias.len() {
        if alias[a] == b'/' {
            if uri.get(u) != Some(&b'/') {
                return 0;
            }
            while alias.get(a) == Some(&b'/') {
                a += 1;
            }
            while uri.get(u) == Some(&b'/') {
                u += 1;
            }
        } else {
            if uri.get(u) != Some(&alias[a]) {
                return 0;
            }
            a += 1;
            u += 1;
        }
    }
    if alias.last() != Some(&b'/') && u < uri.len() && uri[u] != b'/' {
        return 0;
    }
    u
}

/// Facts a `%{...}` expansion needs about the request.
pub struct GroupFacts<'a> {
    /// The virtual host's `ServerName` (`r->server->server_hostname`).
    pub server_hostname: &'a str,
    /// `ap_get_server_port` (with `UseCanonicalName Off`, the port the client asked for).
    pub server_port: u16,
    /// The host the client asked for, as httpd parsed it (`r->hostname`: lower case, no port).
    pub hostname: Option<&'a str>,
    /// SCRIPT_NAME (lower case under `WSGICaseSensitivity Off`, as mod_wsgi names groups).
    pub script_name: &'a [u8],
    /// Looks up `%{ENV:name}` (request notes, then subprocess_env, then the process environment).
    pub env: &'a dyn Fn(&str) -> Option<String>,
}

fn host_port(host: &str, port: u16) -> String {
    if port == 0 || port == 80 || port == 443 {
        host.to_string()
    } else {
        format!("{host}:{port}")
    }
}

/// Expands an application-group or process-group expression as mod_wsgi names groups:
/// `%{GLOBAL}` is `""`, `%{SERVER}` `host[:port]`, `%{HOST}` the same from the requested host,
/// `%{RESOURCE}` `host[:port]|SCRIPT_NAME` (no port for 80 and 443), `%{ENV:var}` the variable's
/// value (which may itself be one of the others), and anything else, including `%{ENV:var}`
/// for an unset variable, is the name as written.
pub fn expand_group(expr: &str, f: &GroupFacts<'_>) -> String {
    expand_group_depth(expr, f, 0)
}

fn expand_group_depth(expr: &str, f: &GroupFacts<'_>, depth: u8) -> String {
    match expr {
        "%{GLOBAL}" => String::new(),
        "%{SERVER}" => host_port(f.server_hostname, f.server_port),
        "%{HOST}" => match f.hostname {
            Some(h) if !h.is_empty() => host_port(h, f.server_port),
            _ => host_port(f.server_hostname, f.server_port),
        },
        "%{RESOURCE}" => format!(
            "{}|{}",
            host_port(f.server_hostname, f.server_port),
            String::from_utf8_lossy(f.script_name)
        ),
        e => match e.strip_prefix("%{ENV:").and_then(|v| v.strip_suffix('}')) {
            Some(var) => match (f.env)(var) {
                // The value may itself be another expansion (not ENV again).
                Some(v) if depth == 0 && v.starts_with("%{") && !v.starts_with("%{ENV:") => {
                    expand_group_depth(&v, f, depth + 1)
                }
                Some(v) => v,
                // Unset: the expression itself is the group's name (as mod_wsgi).
                None => e.to_string(),
            },
            None => e.to_string(),
        },
    }
}

/// Expands a `WSGICallableObject` value as mod_wsgi does: `%{ENV:var}` is the variable's value
/// as it is (never expanded further), `application` when it is unset; any other `%...` is
/// `application`; plain text is the name.
pub fn expand_callable(expr: &str, env: &dyn Fn(&str) -> Option<String>) -> String {
    if !expr.starts_with('%') {
        return expr.to_string();
    }
    expr.strip_prefix("%{ENV:")
        .and_then(|v| v.strip_suffix('}'))
        .and_then(env)
        .unwrap_or_else(|| "application".into())
}

/// `(major, minor, patch)` from a server description such as `Apache/2.4.71 (Debian)`.
pub fn apache_version(description: &str) -> (u32, u32, u32) {
    let v = description
        .split_whitespace()
        .find_map(|w| w.strip_prefix("Apache/"))
        .unwrap_or("0.0.0");
    let mut it = v.split('.').map(|p| {
        p.chars()
            .take_while(char::is_ascii_digit)
            .collect::<String>()
            .parse()
            .unwrap_or(0)
    });
    (
        it.next().unwrap_or(0),
        it.next().unwrap_or(0),
        it.next().unwrap_or(0),
    )
}

/// Decodes a byte string as latin-1, the WSGI rule for environ values.
pub fn latin1(v: &[u8]) -> String {
    if v.is_ascii() {
        // ASCII is the same in UTF-8 and latin-1.
        String::from_utf8_lossy(v).into_owned()
    } else {
        v.iter().map(|&b| b as char).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_keys() {
        assert_eq!(
            header_key(b"X-Foo", false),
            HeaderKey::Key("HTTP_X_FOO".into())
        );
        assert_eq!(header_key(b"x_foo", false), HeaderKey::Invalid);
        assert_eq!(header_key(b"X.Foo", false), HeaderKey::Invalid);
        assert_eq!(
            header_key(b"Content-Type", false),
            HeaderKey::Key("CONTENT_TYPE".into())
        );
        assert_eq!(
            header_key(b"content-length", false),
            HeaderKey::Key("CONTENT_LENGTH".into())
        );
        assert_eq!(header_key(b"Proxy", true), HeaderKey::Skip);
        assert_eq!(header_key(b"Authorization", false), HeaderKey::Skip);
        assert_eq!(
            header_key(b"Authorization", true),
            HeaderKey::Key("HTTP_AUTHORIZATION".into())
        );
    }

    #[test]
    fn split_paths() {
        let s = |u: &str, p: Option<&str>| {
            let (a, b) = script_name_and_path_info(u.as_bytes(), p.map(str::as_bytes));
            (String::from_utf8(a).unwrap(), String::from_utf8(b).unwrap())
        };
        assert_eq!(s("/app/a/b", Some("/a/b")), ("/app".into(), "/a/b".into()));
        assert_eq!(
            s("/app//a//b", Some("/a/b")),
            ("/app".into(), "/a/b".into())
        );
        assert_eq!(s("/x", Some("/x")), ("".into(), "/x".into()));
        assert_eq!(s("/app", None), ("/app".into(), "".into()));
        assert_eq!(s("//app", Some("")), ("/app".into(), "".into()));
        assert_eq!(s("/", Some("/")), ("".into(), "/".into()));
    }

    #[test]
    fn alias_prefixes() {
        assert_eq!(alias_matches(b"/app/x", b"/app"), 4);
        assert_eq!(alias_matches(b"/app", b"/app"), 4);
        assert_eq!(alias_matches(b"/apple", b"/app"), 0);
        assert_eq!(alias_matches(b"//app//x", b"/app"), 5);
        assert_eq!(alias_matches(b"/x", b"/"), 1);
        assert_eq!(alias_matches(b"/other", b"/app/"), 0);
        assert_eq!(alias_matches(b"/app/", b"/app/"), 5);
    }

    #[test]
    fn groups() {
        let env = |k: &str| match k {
            "SITE" => Some("blue".to_string()),
            "INDIRECT" => Some("%{SERVER}".to_string()),
            _ => None,
        };
        let f = GroupFacts {
            server_hostname: "example.org",
            server_port: 8080,
            hostname: Some("www.example.org"),
            script_name: b"/app",
            env: &env,
        };
        assert_eq!(expand_group("%{GLOBAL}", &f), "");
        assert_eq!(expand_group("%{SERVER}", &f), "example.org:8080");
        assert_eq!(expand_group("%{HOST}", &f), "www.example.org:8080");
        assert_eq!(expand_group("%{RESOURCE}", &f), "example.org:8080|/app");
        assert_eq!(expand_group("%{ENV:SITE}", &f), "blue");
        assert_eq!(expand_group("%{ENV:INDIRECT}", &f), "example.org:8080");
        // Unset: the group is named by the expression, as in mod_wsgi.
        assert_eq!(expand_group("%{ENV:NONE}", &f), "%{ENV:NONE}");
        assert_eq!(expand_group("plain", &f), "plain");
        let f80 = GroupFacts {
            server_port: 80,
            hostname: None,
            ..f
        };
        assert_eq!(expand_group("%{SERVER}", &f80), "example.org");
        assert_eq!(expand_group("%{RESOURCE}", &f80), "example.org|/app");
        // No Host header (HTTP/1.0): the ServerName.
        assert_eq!(expand_group("%{HOST}", &f80), "example.org");
        let f443 = GroupFacts {
            server_port: 443,
            hostname: Some("www.example.org"),
            ..f80
        };
        assert_eq!(expand_group("%{HOST}", &f443), "www.example.org");
    }

    #[test]
    fn callables() {
        let env = |k: &str| match k {
            "CO" => Some("app2".to_string()),
            "INDIRECT" => Some("%{SERVER}".to_string()),
            _ => None,
        };
        assert_eq!(expand_callable("handler", &env), "handler");
        assert_eq!(expand_callable("%{ENV:CO}", &env), "app2");
        assert_eq!(expand_callable("%{ENV:INDIRECT}", &env), "%{SERVER}");
        assert_eq!(expand_callable("%{ENV:NONE}", &env), "application");
        assert_eq!(expand_callable("%{GLOBAL}", &env), "application");
    }

    #[test]
    fn versions_and_latin1() {
        assert_eq!(apache_version("Apache/2.4.71 (Debian) mod_x/1"), (2, 4, 71));
        assert_eq!(apache_version("weird"), (0, 0, 0));
        assert_eq!(latin1(b"abc"), "abc");
        assert_eq!(latin1(&[0x63, 0xe9]), "c\u{e9}");
    }
}
