//! Validation of what an application hands to `start_response`: the status line and the
//! response headers (PEP 3333 rules, plus what httpd needs to send them safely). Pure; runs in
//! the httpd child (and later in daemons).
#![forbid(unsafe_code)]

/// A validated response head.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Head {
    pub status: u16,
    /// The full status line as given, e.g. `299 Custom Thing`.
    pub status_line: String,
    pub headers: Vec<(String, String)>,
    /// The application's own `Content-Length`, if it declared one.
    pub content_length: Option<u64>,
}

const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "trailers",
    "transfer-encoding",
    "upgrade",
];

fn is_tchar(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c)
}

/// Checks a status line such as `200 OK`.
pub fn parse_status(status: &str) -> Result<(u16, String), String> {
    let bytes = status.as_bytes();
    if bytes.len() < 4 || !bytes[..3].iter().all(u8::is_ascii_digit) || bytes[3] != b' ' {
        return Err(format!(
            "invalid status '{}': it must be a three-digit code, a space and a reason phrase",
            status.escape_default()
        ));
    }
    if status
        .chars()
        .any(|c| (c as u32) > 0xff || (c.is_control() && c != '\t'))
    {
        return Err(format!(
            "invalid status '{}': control or non-latin-1 characters",
            status.escape_default()
        ));
    }
    let code: u16 = status[..3]
        .parse()
        .map_err(|_| "invalid status code".to_string())?;
    if !(100..=599).contains(&code) {
        return Err(format!("invalid status code {code}: it must be 100 to 599"));
    }
    Ok((code, status.to_string()))
}

/// Checks one header; the error says what is wrong with it.
pub fn check_header(name: &str, value: &str) -> Result<(), String> {
    if name.is_empty() || !name.chars().all(is_tchar) {
        return Err(format!(
            "invalid header name '{}': only token characters are allowed (no ':', spaces or \
             control characters)",
            name.escape_default()
        ));
    }
    if HOP_BY_HOP.iter().any(|h| name.eq_ignore_ascii_case(h)) {
        return Err(format!(
            "hop-by-hop header '{name}' is not allowed from a WSGI application"
        ));
    }
    if let Some(c) = value.chars().find(|&c| (c as u32) > 0xff) {
        return Err(format!(
            "header '{name}' has a character that is not latin-1 ({:?}); encode it first",
            c
        ));
    }
    if value
        .chars()
        .any(|c| c == '\r' || c == '\n' || (c.is_control() && c != '\t'))
    {
        return Err(format!(
            "header '{name}' value contains CR, LF or another control character"
        ));
    }
    Ok(())
}

/// Most headers one response may carry, in either mode: what a daemon can pass on in one
/// `Head` frame, applied in embedded mode too so an application behaves the same in both.
pub const MAX_RESPONSE_HEADERS: usize = crate::protocol::MAX_HEADERS;
/// Largest response head (status line plus every name and value, as encoded in a `Head` frame).
pub const MAX_RESPONSE_HEAD_BYTES: usize = crate::protocol::MAX_HEAD_FRAME;

/// Checks that a head fits the bounds above (a huge head is refused, never half-sent).
fn check_size(status: &str, headers: &[(String, String)]) -> Result<(), String> {
    if headers.len() > MAX_RESPONSE_HEADERS {
        return Err(format!(
            "the response has {} headers; at most {MAX_RESPONSE_HEADERS} are allowed",
            headers.len()
        ));
    }
    // The Head frame's layout: status u16, reason (u16 length), count u16, then per header a
    // u16-prefixed name and a u32-prefixed value (see crate::protocol).
    let size = headers
        .iter()
        .fold(2 + 2 + status.len() + 2, |acc, (n, v)| {
            acc.saturating_add(2 + n.len() + 4 + v.len())
        });
    if size > MAX_RESPONSE_HEAD_BYTES {
        return Err(format!(
            "the response head is {size} bytes; at most {MAX_RESPONSE_HEAD_BYTES} are allowed"
        ));
    }
    Ok(())
}

/// Validates a whole head.
pub fn validate(status: &str, headers: Vec<(String, String)>) -> Result<Head, String> {
    let (code, status_line) = parse_status(status)?;
    check_size(status, &headers)?;
    let mut content_length = None;
    for (n, v) in &headers {
        check_header(n, v)?;
        if n.eq_ignore_ascii_case("content-length") {
            // Optional whitespace is SP or HTAB only (RFC 9110 5.6.3), not Unicode spaces.
            let v = v.trim_matches([' ', '\t']);
            let n: u64 = if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
                v.parse()
                    .map_err(|_| format!("Content-Length '{v}' is too large"))?
            } else {
                return Err(format!("invalid Content-Length '{v}': it must be a number"));
            };
            if content_length.is_some_and(|c| c != n) {
                return Err("conflicting Content-Length headers".to_string());
            }
            content_length = Some(n);
        }
    }
    Ok(Head {
        status: code,
        status_line,
        headers,
        content_length,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(n: &str, v: &str) -> Vec<(String, String)> {
        vec![(n.to_string(), v.to_string())]
    }

    #[test]
    fn status_lines() {
        assert_eq!(parse_status("200 OK"), Ok((200, "200 OK".into())));
        assert_eq!(parse_status("299 Custom Thing").unwrap().0, 299);
        assert!(parse_status("200").is_err());
        assert!(parse_status("20 OK").is_err());
        assert!(parse_status("999 Nope").is_err());
        assert!(parse_status("200 OK\r\nX: y").is_err());
        assert!(parse_status("OK 200").is_err());
    }

    #[test]
    fn headers() {
        assert!(validate("200 OK", h("X-A", "b\tc")).is_ok());
        assert!(
            validate("200 OK", h("X-A", "b\r\nSet-Cookie: x"))
                .unwrap_err()
                .contains("CR, LF")
        );
        assert!(validate("200 OK", h("X-A", "caf\u{e9}")).is_ok());
        assert!(
            validate("200 OK", h("X-A", "\u{20ac}"))
                .unwrap_err()
                .contains("latin-1")
        );
        assert!(
            validate("200 OK", h("Connection", "close"))
                .unwrap_err()
                .contains("hop-by-hop")
        );
        assert!(validate("200 OK", h("Transfer-Encoding", "chunked")).is_err());
        assert!(
            validate("200 OK", h("X:Y", "1"))
                .unwrap_err()
                .contains("invalid header name")
        );
        assert!(validate("200 OK", h("", "1")).is_err());
        assert_eq!(
            validate("200 OK", h("Content-Length", "12"))
                .unwrap()
                .content_length,
            Some(12)
        );
        assert!(validate("200 OK", h("Content-Length", "-1")).is_err());
        let two = vec![
            ("Content-Length".into(), "1".into()),
            ("content-length".into(), "2".into()),
        ];
        assert!(validate("200 OK", two).is_err());
    }

    #[test]
    fn head_size_bounds() {
        let many = |n: usize, len: usize| -> Vec<(String, String)> {
            (0..n)
                .map(|i| (format!("X-H{i}"), "v".repeat(len)))
                .collect()
        };
        assert!(validate("200 OK", many(MAX_RESPONSE_HEADERS, 10)).is_ok());
        assert!(
            validate("200 OK", many(MAX_RESPONSE_HEADERS + 1, 1))
                .unwrap_err()
                .contains("at most 1024")
        );
        assert!(
            validate("200 OK", many(2, 600_000))
                .unwrap_err()
                .contains("response head is")
        );
        // The largest head validate() accepts is one a Head frame can carry.
        let one = MAX_RESPONSE_HEAD_BYTES - (2 + 2 + 6 + 2) - (2 + 1 + 4);
        assert!(validate("200 OK", vec![("X".into(), "v".repeat(one))]).is_ok());
        assert!(validate("200 OK", vec![("X".into(), "v".repeat(one + 1))]).is_err());
    }

    /// Fuzzing finding (response_head): `Content-Length: 2\u{a0}` (a latin-1 no-break space,
    /// or U+2000-style spaces through `str::trim`) was accepted as 2. Only SP and HTAB
    /// surround the digits.
    #[test]
    fn content_length_whitespace_is_sp_or_htab() {
        let cl = |v: &str| validate("200 OK", h("Content-Length", v)).map(|h| h.content_length);
        assert_eq!(cl(" \t2\t "), Ok(Some(2)));
        for v in ["2\u{a0}", "\u{a0}2", "2\t\u{a0}\t"] {
            let e = cl(v).unwrap_err();
            assert!(e.contains("invalid Content-Length"), "{v:?}: {e}");
        }
    }
}
