//! Trusted proxy headers (`WSGITrustedProxyHeaders`, `WSGITrustedProxies`), applied to the
//! environ as mod_wsgi 6 does: a trusted peer's header rewrites the CGI variable it stands for,
//! and every other header of the same kind is removed, so an untrusted client can never spoof
//! one (CVE-2022-2255). Pure; runs in the httpd child.
#![forbid(unsafe_code)]

use crate::config::net::IpNet;
use std::net::IpAddr;

/// What a proxy header tells.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    ClientFor,
    ClientVerbatim,
    Host,
    Server,
    Port,
    ScriptName,
    SchemeString,
    SchemeBool,
}

impl Kind {
    /// Headers of one category are synonyms: only the winner survives.
    fn category(self) -> u8 {
        match self {
            Kind::ClientFor | Kind::ClientVerbatim => 0,
            Kind::Host => 1,
            Kind::Server => 2,
            Kind::Port => 3,
            Kind::ScriptName => 4,
            Kind::SchemeString | Kind::SchemeBool => 5,
        }
    }
}

const REGISTRY: &[(&str, &str, Kind)] = &[
    ("X-Forwarded-For", "HTTP_X_FORWARDED_FOR", Kind::ClientFor),
    ("X-Client-IP", "HTTP_X_CLIENT_IP", Kind::ClientVerbatim),
    ("X-Real-IP", "HTTP_X_REAL_IP", Kind::ClientVerbatim),
    ("X-Forwarded-Host", "HTTP_X_FORWARDED_HOST", Kind::Host),
    ("X-Host", "HTTP_X_HOST", Kind::Host),
    (
        "X-Forwarded-Server",
        "HTTP_X_FORWARDED_SERVER",
        Kind::Server,
    ),
    ("X-Forwarded-Port", "HTTP_X_FORWARDED_PORT", Kind::Port),
    ("X-Script-Name", "HTTP_X_SCRIPT_NAME", Kind::ScriptName),
    (
        "X-Forwarded-Script-Name",
        "HTTP_X_FORWARDED_SCRIPT_NAME",
        Kind::ScriptName,
    ),
    (
        "X-Forwarded-Proto",
        "HTTP_X_FORWARDED_PROTO",
        Kind::SchemeString,
    ),
    (
        "X-Forwarded-Scheme",
        "HTTP_X_FORWARDED_SCHEME",
        Kind::SchemeString,
    ),
    ("X-Scheme", "HTTP_X_SCHEME", Kind::SchemeString),
    (
        "X-Forwarded-HTTPS",
        "HTTP_X_FORWARDED_HTTPS",
        Kind::SchemeBool,
    ),
    ("X-Forwarded-SSL", "HTTP_X_FORWARDED_SSL", Kind::SchemeBool),
    ("X-HTTPS", "HTTP_X_HTTPS", Kind::SchemeBool),
];

/// The header names accepted by `WSGITrustedProxyHeaders`.
pub const KNOWN_HEADERS: [&str; 15] = {
    let mut out = [""; 15];
    let mut i = 0;
    while i < REGISTRY.len() {
        out[i] = REGISTRY[i].0;
        i += 1;
    }
    out
};

/// Maps a header name as written in the directive (`X-Forwarded-For`, `x-forwarded-for` or
/// `HTTP_X_FORWARDED_FOR`) to its environ key, if it is a known proxy header.
pub fn header_env_name(name: &str) -> Option<String> {
    let key = name.to_ascii_uppercase().replace('-', "_");
    let key = if key.starts_with("HTTP_") {
        key
    } else {
        format!("HTTP_{key}")
    };
    REGISTRY
        .iter()
        .find(|(_, env, _)| *env == key)
        .map(|(_, env, _)| env.to_string())
}

/// The environ as the httpd layer builds it: keys and raw (latin-1) values.
pub type Environ = Vec<(String, Vec<u8>)>;

fn get<'a>(env: &'a Environ, key: &str) -> Option<&'a [u8]> {
    env.iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_slice())
}

fn set(env: &mut Environ, key: &str, value: Vec<u8>) {
    match env.iter_mut().find(|(k, _)| k == key) {
        Some(slot) => slot.1 = value,
        None => env.push((key.to_string(), value)),
    }
}

fn unset(env: &mut Environ, key: &str) {
    env.retain(|(k, _)| k != key);
}

fn parse_ip(s: &str) -> Option<IpAddr> {
    s.trim().parse().ok()
}

fn trusted(ip: Option<IpAddr>, nets: &[IpNet]) -> bool {
    ip.is_some_and(|ip| nets.iter().any(|n| n.contains(ip)))
}

fn apply_forwarded_for(env: &mut Environ, value: &[u8], proxies: Option<&[IpNet]>) {
    let text = String::from_utf8_lossy(value);
    let items: Vec<&str> = text
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    if items.is_empty() {
        return;
    }
    match proxies {
        None => {
            // Every peer is trusted: the client is the first entry. XFF is left as it is.
            set(env, "REMOTE_ADDR", items[0].as_bytes().to_vec());
        }
        Some(nets) => {
            // Walk from the right while the entries are trusted proxies; the client is the
            // entry just before the leftmost trusted one (mod_wsgi's rule).
            let mut first = None;
            for i in (0..items.len()).rev() {
                if !trusted(parse_ip(items[i]), nets) {
                    break;
                }
                first = Some(i);
            }
            let start = match first {
                Some(f) => f.saturating_sub(1),
                None => items.len() - 1,
            };
            set(env, "REMOTE_ADDR", items[start].as_bytes().to_vec());
            let rest = if first.is_some() {
                &items[start..]
            } else {
                &items[start..start + 1]
            };
            set(env, "HTTP_X_FORWARDED_FOR", rest.join(", ").into_bytes());
        }
    }
}

fn apply(env: &mut Environ, kind: Kind, value: &[u8], proxies: Option<&[IpNet]>) {
    let lower = String::from_utf8_lossy(value).trim().to_ascii_lowercase();
    match kind {
        Kind::ClientFor => apply_forwarded_for(env, value, proxies),
        Kind::ClientVerbatim => set(env, "REMOTE_ADDR", value.to_vec()),
        Kind::Host => set(env, "HTTP_HOST", value.to_vec()),
        Kind::Server => set(env, "SERVER_NAME", value.to_vec()),
        Kind::Port => set(env, "SERVER_PORT", value.to_vec()),
        Kind::ScriptName => {
            set(env, "mod_wsgi.mount_point", value.to_vec());
            set(env, "SCRIPT_NAME", value.to_vec());
        }
        Kind::SchemeString => match lower.as_str() {
            "https" => set(env, "HTTPS", b"1".to_vec()),
            "http" => unset(env, "HTTPS"),
            _ => {}
        },
        Kind::SchemeBool => match lower.as_str() {
            "on" | "true" | "1" => set(env, "HTTPS", b"1".to_vec()),
            "off" | "false" | "0" => unset(env, "HTTPS"),
            _ => {}
        },
    }
}

/// Applies the trusted headers to `env` (whose `REMOTE_ADDR` is the direct peer). Returns
/// whether a trusted scheme header decided `HTTPS`.
pub fn process(env: &mut Environ, headers: &[String], proxies: Option<&[IpNet]>) -> bool {
    if headers.is_empty() {
        return false;
    }
    let peer_trusted = match proxies {
        None => true,
        Some(nets) => {
            let peer = get(env, "REMOTE_ADDR").and_then(|v| parse_ip(&String::from_utf8_lossy(v)));
            trusted(peer, nets)
        }
    };
    let mut matched = [false; 6];
    let mut winner: [Option<&'static str>; 6] = [None; 6];
    for h in headers {
        let Some(&(_, key, kind)) = REGISTRY.iter().find(|(_, k, _)| k == h) else {
            continue;
        };
        let cat = kind.category() as usize;
        matched[cat] = true;
        if !peer_trusted {
            continue;
        }
        if let Some(value) = get(env, key).map(<[u8]>::to_vec) {
            apply(env, kind, &value, proxies);
            winner[cat] = Some(key);
        }
    }
    for (_, key, kind) in REGISTRY {
        let cat = kind.category() as usize;
        if matched[cat] && winner[cat] != Some(*key) {
            unset(env, key);
        }
    }
    winner[5].is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Environ {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
            .collect()
    }

    fn val<'a>(e: &'a Environ, k: &str) -> Option<&'a str> {
        get(e, k).map(|v| std::str::from_utf8(v).unwrap())
    }

    fn hdrs(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| header_env_name(n).unwrap()).collect()
    }

    #[test]
    fn names() {
        assert_eq!(
            header_env_name("x-forwarded-for").as_deref(),
            Some("HTTP_X_FORWARDED_FOR")
        );
        assert_eq!(
            header_env_name("HTTP_X_REAL_IP").as_deref(),
            Some("HTTP_X_REAL_IP")
        );
        assert_eq!(header_env_name("X-Bogus"), None);
        assert_eq!(KNOWN_HEADERS[0], "X-Forwarded-For");
    }

    #[test]
    fn trusted_peer_rewrites_and_strips_synonyms() {
        let mut e = env(&[
            ("REMOTE_ADDR", "127.0.0.1"),
            ("HTTP_X_FORWARDED_FOR", "203.0.113.9, 127.0.0.1"),
            ("HTTP_X_CLIENT_IP", "6.6.6.6"),
            ("HTTP_X_FORWARDED_PROTO", "https"),
        ]);
        let nets = [IpNet::parse("127.0.0.1").unwrap()];
        let scheme = process(
            &mut e,
            &hdrs(&["X-Forwarded-For", "X-Forwarded-Proto"]),
            Some(&nets),
        );
        assert!(scheme);
        assert_eq!(val(&e, "REMOTE_ADDR"), Some("203.0.113.9"));
        assert_eq!(val(&e, "HTTPS"), Some("1"));
        assert_eq!(
            val(&e, "HTTP_X_CLIENT_IP"),
            None,
            "CVE-2022-2255: spoofed synonym removed"
        );
        assert_eq!(
            val(&e, "HTTP_X_FORWARDED_FOR"),
            Some("203.0.113.9, 127.0.0.1")
        );
    }

    #[test]
    fn untrusted_peer_gets_headers_stripped() {
        let mut e = env(&[
            ("REMOTE_ADDR", "127.0.0.1"),
            ("HTTP_X_FORWARDED_FOR", "1.2.3.4"),
            ("HTTP_X_REAL_IP", "1.2.3.5"),
            ("HTTP_X_FORWARDED_HOST", "evil"),
        ]);
        let nets = [IpNet::parse("10.0.0.1").unwrap()];
        process(
            &mut e,
            &hdrs(&["X-Forwarded-For", "X-Forwarded-Host"]),
            Some(&nets),
        );
        assert_eq!(val(&e, "REMOTE_ADDR"), Some("127.0.0.1"));
        assert_eq!(val(&e, "HTTP_X_FORWARDED_FOR"), None);
        assert_eq!(val(&e, "HTTP_X_REAL_IP"), None);
        assert_eq!(val(&e, "HTTP_X_FORWARDED_HOST"), None);
    }

    #[test]
    fn no_proxy_list_trusts_everyone_and_takes_first() {
        let mut e = env(&[
            ("REMOTE_ADDR", "127.0.0.1"),
            ("HTTP_X_FORWARDED_FOR", " , 9.9.9.9, 8.8.8.8"),
        ]);
        process(&mut e, &hdrs(&["X-Forwarded-For"]), None);
        assert_eq!(val(&e, "REMOTE_ADDR"), Some("9.9.9.9"));
    }

    #[test]
    fn no_trusted_entry_uses_last() {
        let mut e = env(&[
            ("REMOTE_ADDR", "10.0.0.1"),
            ("HTTP_X_FORWARDED_FOR", "1.1.1.1, 2.2.2.2"),
        ]);
        let nets = [IpNet::parse("10.0.0.0/8").unwrap()];
        process(&mut e, &hdrs(&["X-Forwarded-For"]), Some(&nets));
        assert_eq!(val(&e, "REMOTE_ADDR"), Some("2.2.2.2"));
        assert_eq!(val(&e, "HTTP_X_FORWARDED_FOR"), Some("2.2.2.2"));
    }

    #[test]
    fn script_name_port_and_bool_scheme() {
        let mut e = env(&[
            ("REMOTE_ADDR", "127.0.0.1"),
            ("SCRIPT_NAME", "/app"),
            ("HTTP_X_SCRIPT_NAME", "/mounted"),
            ("HTTP_X_FORWARDED_PORT", "8443"),
            ("HTTP_X_FORWARDED_SSL", "on"),
        ]);
        process(
            &mut e,
            &hdrs(&["X-Script-Name", "X-Forwarded-Port", "X-Forwarded-SSL"]),
            None,
        );
        assert_eq!(val(&e, "SCRIPT_NAME"), Some("/mounted"));
        assert_eq!(val(&e, "mod_wsgi.mount_point"), Some("/mounted"));
        assert_eq!(val(&e, "SERVER_PORT"), Some("8443"));
        assert_eq!(val(&e, "HTTPS"), Some("1"));
    }
}
