//! Properties of the environ helpers (`src/wsgi/environ.rs`) and the trusted proxy headers
//! (`src/wsgi/proxy.rs`): header names map onto CGI keys without collisions, path splitting
//! stays inside the URI, group expansion is bounded, and an untrusted peer can never set what
//! a proxy header stands for. Tool code (fuzz targets and the corpus replay test).
#![forbid(unsafe_code)]

use super::raw_fields;
use crate::config::net::IpNet;
use crate::wsgi::environ::{
    GroupFacts, HeaderKey, alias_matches, expand_callable, expand_group, find_path_info,
    header_key, no2slash, script_name_and_path_info,
};
use crate::wsgi::proxy::{self, Environ, KNOWN_HEADERS};
use std::net::IpAddr;

/// The mapping CGI (RFC 3875 4.1.18) and mod_wsgi define, written out on its own.
fn expected_key(name: &[u8], pass_authorization: bool) -> HeaderKey {
    if name.is_empty() || !name.iter().all(|&b| b == b'-' || b.is_ascii_alphanumeric()) {
        // `X_Foo` would land on `X-Foo`'s key: such names are never mapped.
        return HeaderKey::Invalid;
    }
    let lower = name.to_ascii_lowercase();
    match lower.as_slice() {
        b"content-type" => HeaderKey::Key("CONTENT_TYPE".into()),
        b"content-length" => HeaderKey::Key("CONTENT_LENGTH".into()),
        b"proxy" => HeaderKey::Skip,
        b"authorization" | b"proxy-authorization" if !pass_authorization => HeaderKey::Skip,
        _ => HeaderKey::Key(format!(
            "HTTP_{}",
            String::from_utf8_lossy(&lower)
                .to_uppercase()
                .replace('-', "_")
        )),
    }
}

fn check_names(a: &[u8], b: &[u8], pass: bool) {
    let (ka, kb) = (header_key(a, pass), header_key(b, pass));
    assert_eq!(
        ka,
        expected_key(a, pass),
        "{:?}",
        String::from_utf8_lossy(a)
    );
    if let (HeaderKey::Key(x), HeaderKey::Key(y)) = (&ka, &kb) {
        assert!(
            x != y || a.eq_ignore_ascii_case(b),
            "{:?} and {:?} both map to {x}",
            String::from_utf8_lossy(a),
            String::from_utf8_lossy(b)
        );
    }
    let text = String::from_utf8_lossy(a);
    if let Some(k) = proxy::header_env_name(&text) {
        assert!(
            KNOWN_HEADERS
                .iter()
                .any(|h| proxy::header_env_name(h).as_ref() == Some(&k)),
            "{text:?} -> {k}"
        );
        assert_eq!(proxy::header_env_name(&k).as_ref(), Some(&k));
        let norm = text.to_ascii_uppercase().replace('-', "_");
        assert!(norm == k || format!("HTTP_{norm}") == k, "{text:?} -> {k}");
    }
}

fn has_double_slash(s: &[u8]) -> bool {
    s.windows(2).any(|w| w == b"//")
}

fn check_paths(uri: &[u8], path_info: &[u8], alias: &[u8]) {
    let n = no2slash(uri);
    assert!(!has_double_slash(&n) && n.len() <= uri.len());
    assert_eq!(no2slash(&n), n);
    let u = alias_matches(uri, alias);
    assert!(u <= uri.len());
    if u > 0 {
        assert_eq!(
            no2slash(&uri[..u]),
            no2slash(alias),
            "alias matched elsewhere"
        );
        assert!(
            u == uri.len() || uri[u] == b'/' || alias.ends_with(b"/"),
            "alias match ends inside a path segment"
        );
    }
    let at = find_path_info(uri, path_info);
    assert!(at <= uri.len());
    assert!(at == uri.len() || uri[at] == b'/');
    let (sn, pi) = script_name_and_path_info(uri, Some(path_info));
    assert!(!has_double_slash(&sn) && !has_double_slash(&pi));
    assert!(sn.len() <= uri.len() && pi.len() <= path_info.len());
}

fn check_group(expr: &[u8], env_value: &[u8], host: &[u8], hostname: &[u8], script: &[u8]) {
    let expr = String::from_utf8_lossy(expr);
    let value = String::from_utf8_lossy(env_value).into_owned();
    let host = String::from_utf8_lossy(host);
    let hostname = String::from_utf8_lossy(hostname);
    let port = (script.len() as u16).wrapping_mul(7919);
    let env = |_: &str| Some(value.clone()).filter(|v| !v.is_empty());
    let f = GroupFacts {
        server_hostname: &hostname,
        server_port: port,
        hostname: Some(&host),
        script_name: script,
        env: &env,
    };
    let out = expand_group(&expr, &f);
    let limit = expr.len() + value.len() + host.len() + hostname.len() + 3 * script.len() + 16;
    assert!(
        out.len() <= limit,
        "{expr:?} expanded to {} bytes",
        out.len()
    );
    if !expr.starts_with("%{") {
        assert_eq!(out, expr, "plain text is not expanded");
    }
    if expr == "%{GLOBAL}" {
        assert!(out.is_empty());
    }
    if value.is_empty() && expr.starts_with("%{ENV:") {
        assert_eq!(
            out, expr,
            "an unset variable names the group by the expression"
        );
    }
    let callable = expand_callable(&expr, &env);
    if expr.starts_with('%') {
        assert!(
            callable == "application" || callable == value,
            "{expr:?} -> {callable:?}"
        );
    } else {
        assert_eq!(callable, expr);
    }
}

/// Synonymous proxy headers (mod_wsgi's groups): a trusted one wins, the others are removed.
const CATEGORIES: &[&[&str]] = &[
    &["X-Forwarded-For", "X-Client-IP", "X-Real-IP"],
    &["X-Forwarded-Host", "X-Host"],
    &["X-Forwarded-Server"],
    &["X-Forwarded-Port"],
    &["X-Script-Name", "X-Forwarded-Script-Name"],
    &[
        "X-Forwarded-Proto",
        "X-Forwarded-Scheme",
        "X-Scheme",
        "X-Forwarded-HTTPS",
        "X-Forwarded-SSL",
        "X-HTTPS",
    ],
];

/// What the proxy headers may change when the peer is trusted.
const DERIVED: &[&str] = &[
    "REMOTE_ADDR",
    "HTTP_HOST",
    "SERVER_NAME",
    "SERVER_PORT",
    "SCRIPT_NAME",
    "mod_wsgi.mount_point",
    "HTTPS",
];

fn key(h: &str) -> String {
    proxy::header_env_name(h).expect("a known proxy header")
}

fn get<'a>(env: &'a Environ, k: &str) -> Option<&'a Vec<u8>> {
    env.iter().find(|(n, _)| n == k).map(|(_, v)| v)
}

fn check_proxy(raw: &[&[u8]], mask: u16) {
    let f = |i: usize| raw.get(i).copied().unwrap_or_default();
    let peer = f(9);
    let mut env: Environ = vec![("REMOTE_ADDR".into(), peer.to_vec())];
    for (i, h) in KNOWN_HEADERS.iter().enumerate() {
        let v = f(10 + i);
        if !v.is_empty() {
            env.push((key(h), v.to_vec()));
        }
    }
    for (i, k) in DERIVED.iter().enumerate().skip(1) {
        if mask & (1 << (i + 8)) != 0 {
            env.push((k.to_string(), f(i).to_vec()));
        }
    }
    let configured: Vec<String> = KNOWN_HEADERS
        .iter()
        .enumerate()
        .filter(|(i, _)| mask & (1 << i) != 0)
        .map(|(_, h)| key(h))
        .collect();
    let nets_text = String::from_utf8_lossy(f(8));
    let nets: Option<Vec<IpNet>> = (!nets_text.is_empty()).then(|| {
        nets_text
            .split(' ')
            .filter_map(|n| IpNet::parse(n).ok())
            .collect()
    });
    let before = env.clone();
    let scheme = proxy::process(&mut env, &configured, nets.as_deref());

    let peer_ip: Option<IpAddr> = String::from_utf8_lossy(peer).trim().parse().ok();
    let trusted = match &nets {
        None => true,
        Some(nets) => peer_ip.is_some_and(|ip| nets.iter().any(|n| n.contains(ip))),
    };
    assert!(env.len() <= before.len() + DERIVED.len());
    for cat in CATEGORIES {
        let keys: Vec<String> = cat.iter().map(|h| key(h)).collect();
        let in_use = keys.iter().any(|k| configured.contains(k));
        let left: Vec<&String> = keys.iter().filter(|k| get(&env, k).is_some()).collect();
        if !in_use {
            for k in &keys {
                assert_eq!(get(&env, k), get(&before, k), "{k} changed, not configured");
            }
        } else if !trusted {
            assert!(left.is_empty(), "untrusted peer kept {left:?}");
        } else {
            assert!(left.len() <= 1, "synonyms kept: {left:?}");
            assert!(left.iter().all(|k| configured.contains(k)), "{left:?}");
        }
    }
    if !trusted || configured.is_empty() {
        for k in DERIVED {
            assert_eq!(
                get(&env, k),
                get(&before, k),
                "{k} changed for an untrusted peer"
            );
        }
    }
    if scheme {
        assert!(trusted);
        let schemes: Vec<String> = CATEGORIES[5].iter().map(|h| key(h)).collect();
        assert!(
            schemes
                .iter()
                .any(|k| configured.contains(k) && get(&before, k).is_some())
        );
    }
}

/// Input: fields separated by 0xFF: two header names, URI, path info, alias, group
/// expression, environment value, Host header, proxy networks, peer address, then values for
/// the 15 proxy headers. The first two bytes choose pass-authorization, the configured proxy
/// headers and which derived variables are present.
pub fn check(data: &[u8]) {
    let raw = raw_fields(data);
    let f = |i: usize| raw.get(i).copied().unwrap_or_default();
    let mask = u16::from_le_bytes([
        data.first().copied().unwrap_or(0),
        data.get(1).copied().unwrap_or(0),
    ]);
    check_names(f(0), f(1), mask & 0x8000 != 0);
    check_names(f(1), f(0), mask & 0x8000 == 0);
    check_paths(f(2), f(3), f(4));
    check_group(f(5), f(6), f(7), f(8), f(2));
    check_proxy(&raw, mask);
}
