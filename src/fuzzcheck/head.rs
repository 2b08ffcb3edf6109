//! Properties of the response-head validator (`src/wsgi/headers.rs`), stated from HTTP and
//! PEP 3333 rather than from its code: whatever it accepts can be sent by httpd as it is.
//! Tool code (fuzz targets and the corpus replay test).
#![forbid(unsafe_code)]

use super::{assert_bounded, fields};
use crate::wsgi::headers::{check_header, parse_status, validate};

/// RFC 9110 token: visible ASCII except the delimiters.
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_graphic() && !b"\"(),/:;<=>?@[\\]{}".contains(&b))
}

/// Hop-by-hop headers (RFC 9110 7.6.1, PEP 3333 "Other HTTP Features").
const HOP_BY_HOP: &[&str] = &[
    "Connection",
    "Keep-Alive",
    "Proxy-Authenticate",
    "Proxy-Authorization",
    "TE",
    "Trailer",
    "Trailers",
    "Transfer-Encoding",
    "Upgrade",
];

/// Text httpd can put on the wire as it is: latin-1 (one byte per character), and no control
/// character but HTAB (so no CR, LF or NUL: no header injection, no C-string truncation).
fn sendable(s: &str) -> bool {
    s.chars()
        .all(|c| (c as u32) <= 0xff && c != '\u{7f}' && (c >= ' ' || c == '\t'))
}

/// An accepted status line.
fn check_status_ok(status: &str, code: u16, line: &str) {
    assert_eq!(line, status, "the status line is kept as given");
    let b = status.as_bytes();
    assert!(b.len() >= 4 && b[..3].iter().all(u8::is_ascii_digit) && b[3] == b' ');
    assert_eq!(status[..3].parse::<u16>().ok(), Some(code));
    assert!((100..=599).contains(&code), "{code}");
    assert!(sendable(status), "{status:?} accepted");
}

/// An accepted header.
fn check_header_ok(name: &str, value: &str) {
    assert!(is_token(name), "header name {name:?} accepted");
    assert!(
        !HOP_BY_HOP.iter().any(|h| h.eq_ignore_ascii_case(name)),
        "hop-by-hop {name:?} accepted"
    );
    assert!(sendable(value), "header value {value:?} accepted");
}

/// Content-Length as RFC 9110 allows it: digits, with optional SP/HTAB around them.
fn content_length(v: &str) -> Option<u64> {
    let v = v.trim_matches([' ', '\t']);
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    v.parse().ok()
}

/// Input: fields separated by 0xFF, the status line then name, value, name, value ...
pub fn check(data: &[u8]) {
    let fs = fields(data);
    let status = fs[0].as_str();
    let status_ok = match parse_status(status) {
        Ok((code, line)) => {
            check_status_ok(status, code, &line);
            true
        }
        Err(e) => {
            assert!(e.starts_with("invalid status"), "{e}");
            assert_bounded(&e, status.len());
            false
        }
    };
    let headers: Vec<(String, String)> = fs[1..]
        .chunks(2)
        .map(|p| (p[0].clone(), p.get(1).cloned().unwrap_or_default()))
        .collect();
    let mut all_ok = true;
    for (n, v) in &headers {
        match check_header(n, v) {
            Ok(()) => check_header_ok(n, v),
            Err(e) => {
                all_ok = false;
                assert!(!e.is_empty());
                assert_bounded(&e, n.len() + v.len());
            }
        }
    }
    let lengths: Vec<Option<u64>> = headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .map(|(_, v)| content_length(v))
        .collect();
    match validate(status, headers.clone()) {
        Ok(head) => {
            assert!(
                status_ok && all_ok,
                "validate accepted what a check refused"
            );
            assert_eq!(
                head.headers, headers,
                "headers are kept in order, unchanged"
            );
            check_status_ok(status, head.status, &head.status_line);
            // Every Content-Length is a number, and they all agree.
            assert!(
                lengths.iter().all(|l| l.is_some() && *l == lengths[0]),
                "{lengths:?}"
            );
            assert_eq!(head.content_length, lengths.first().copied().flatten());
        }
        Err(e) => {
            assert_bounded(&e, data.len());
            // Refused only for a reason: a bad status, a bad header or a bad Content-Length.
            let lengths_ok =
                lengths.iter().all(Option::is_some) && lengths.windows(2).all(|w| w[0] == w[1]);
            assert!(
                !(status_ok && all_ok && lengths_ok),
                "refused a valid head: {e}"
            );
        }
    }
}
