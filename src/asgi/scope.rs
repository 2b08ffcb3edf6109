//! The ASGI connection scope of a request, worked out from the request core (`request::Request`:
//! the CGI environ with the trusted proxy headers already applied, and its typed facts), the
//! way the WSGI environ is: pure, no Python, no I/O. Runs where the application runs (a daemon
//! process).
#![forbid(unsafe_code)]

use crate::request::Request;

/// The parts of an HTTP (or WebSocket) scope that come from the request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpScope {
    /// `"1.0"`, `"1.1"` or `"2"`.
    pub http_version: String,
    pub method: String,
    /// `"http"` or `"https"`.
    pub scheme: &'static str,
    /// The whole path, percent-decoded and UTF-8-decoded: `root_path` plus the rest.
    pub path: String,
    /// The path as the client sent it (percent-encoded), without the query.
    pub raw_path: Vec<u8>,
    /// Still percent-encoded.
    pub query_string: Vec<u8>,
    /// The mount point (`SCRIPT_NAME`).
    pub root_path: String,
    /// Lower-cased names, in the order httpd received them.
    pub headers: Vec<(Vec<u8>, Vec<u8>)>,
    pub client: Option<(String, u16)>,
    pub server: Option<(String, u16)>,
    /// The request has a body to read (a length above 0, or chunked).
    pub has_body: bool,
    /// It opens a WebSocket (a GET with `Upgrade: websocket`; the httpd child checked the
    /// rest of the handshake): a `websocket` scope.
    pub websocket: bool,
    /// The subprotocols the client offers (`Sec-WebSocket-Protocol`), in order.
    pub subprotocols: Vec<String>,
}

/// Text of an environ value: UTF-8, with replacement characters for bytes that are not (a
/// path httpd decoded from `%XX` escapes that are not UTF-8), as uvicorn's `unquote` leaves
/// them; `raw_path` keeps the exact bytes.
fn text(v: &[u8]) -> String {
    String::from_utf8_lossy(v).into_owned()
}

/// The request header an environ key carries, lower-cased as ASGI wants it (`HTTP_X_FOO` ->
/// `x-foo`, `CONTENT_TYPE` -> `content-type`), or `None` for a key that is not a header.
pub fn header_name(key: &[u8]) -> Option<Vec<u8>> {
    match key {
        b"CONTENT_TYPE" => return Some(b"content-type".to_vec()),
        b"CONTENT_LENGTH" => return Some(b"content-length".to_vec()),
        _ => {}
    }
    let rest = key.strip_prefix(b"HTTP_")?;
    if rest.is_empty() {
        return None;
    }
    Some(
        rest.iter()
            .map(|&c| {
                if c == b'_' {
                    b'-'
                } else {
                    c.to_ascii_lowercase()
                }
            })
            .collect(),
    )
}

fn port(v: Option<&[u8]>) -> Option<u16> {
    std::str::from_utf8(v?).ok()?.trim().parse().ok()
}

impl HttpScope {
    /// The scope parts of `req`.
    pub fn of<K: AsRef<[u8]>>(req: &Request<K>) -> HttpScope {
        let get = |k: &str| req.get(k);
        let protocol = get("SERVER_PROTOCOL").unwrap_or(b"HTTP/1.1");
        let http_version = match protocol {
            b"HTTP/1.0" => "1.0",
            b"HTTP/2" | b"HTTP/2.0" => "2",
            _ => "1.1",
        }
        .to_string();
        let root = get("SCRIPT_NAME").unwrap_or(b"");
        let rest = get("PATH_INFO").unwrap_or(b"");
        let uri = get("REQUEST_URI").unwrap_or(b"");
        let raw_path = uri.split(|&b| b == b'?').next().unwrap_or(b"").to_vec();
        let headers = req
            .env
            .iter()
            .filter_map(|(k, v)| header_name(k.as_ref()).map(|n| (n, v.clone())))
            .collect();
        let client = get("REMOTE_ADDR").map(|a| (text(a), port(get("REMOTE_PORT")).unwrap_or(0)));
        let server_host = get("SERVER_ADDR").or_else(|| get("SERVER_NAME"));
        let server = server_host.map(|h| (text(h), port(get("SERVER_PORT")).unwrap_or(0)));
        let chunked = get("HTTP_TRANSFER_ENCODING")
            .is_some_and(|v| v.to_ascii_lowercase().windows(7).any(|w| w == b"chunked"));
        let method = text(get("REQUEST_METHOD").unwrap_or(b"GET"));
        let websocket = method == "GET"
            && get("HTTP_UPGRADE").is_some_and(|v| {
                v.split(|&b| b == b',')
                    .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"websocket"))
            });
        HttpScope {
            http_version,
            method,
            scheme: if req.meta.https { "https" } else { "http" },
            path: text(&[root, rest].concat()),
            raw_path,
            query_string: get("QUERY_STRING").unwrap_or(b"").to_vec(),
            root_path: text(root),
            headers,
            client,
            server,
            has_body: chunked || req.content_length().is_some_and(|n| n > 0),
            websocket,
            subprotocols: crate::websocket::handshake::subprotocols(get(
                "HTTP_SEC_WEBSOCKET_PROTOCOL",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::RequestMeta;

    fn req(env: &[(&str, &[u8])], https: bool) -> Request<String> {
        Request {
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_vec()))
                .collect(),
            meta: RequestMeta {
                https,
                ..RequestMeta::default()
            },
        }
    }

    #[test]
    fn a_get_under_a_mount() {
        let r = req(
            &[
                ("HTTP_HOST", b"example.org"),
                ("HTTP_X_MULTI_WORD", b"1"),
                ("SERVER_PROTOCOL", b"HTTP/1.1"),
                ("REQUEST_METHOD", b"GET"),
                ("SCRIPT_NAME", b"/api"),
                ("PATH_INFO", b"/caf\xc3\xa9 x"),
                ("REQUEST_URI", b"/api/caf%C3%A9%20x?q=%20a"),
                ("QUERY_STRING", b"q=%20a"),
                ("REMOTE_ADDR", b"127.0.0.1"),
                ("REMOTE_PORT", b"50123"),
                ("SERVER_ADDR", b"127.0.0.1"),
                ("SERVER_NAME", b"example.org"),
                ("SERVER_PORT", b"8080"),
                ("mod_wsgi.process_group", b"g"),
            ],
            true,
        );
        let s = HttpScope::of(&r);
        assert_eq!(s.http_version, "1.1");
        assert_eq!(s.method, "GET");
        assert_eq!(s.scheme, "https");
        assert_eq!(s.path, "/api/café x");
        assert_eq!(s.root_path, "/api");
        assert_eq!(s.raw_path, b"/api/caf%C3%A9%20x");
        assert_eq!(s.query_string, b"q=%20a");
        assert_eq!(
            s.headers,
            vec![
                (b"host".to_vec(), b"example.org".to_vec()),
                (b"x-multi-word".to_vec(), b"1".to_vec())
            ]
        );
        assert_eq!(s.client, Some(("127.0.0.1".into(), 50123)));
        assert_eq!(s.server, Some(("127.0.0.1".into(), 8080)));
        assert!(!s.has_body);
    }

    #[test]
    fn bodies_versions_and_odd_bytes() {
        let r = req(
            &[
                ("CONTENT_TYPE", b"text/plain"),
                ("CONTENT_LENGTH", b"5"),
                ("SERVER_PROTOCOL", b"HTTP/2.0"),
                ("REQUEST_METHOD", b"POST"),
                ("PATH_INFO", b"/\xff"),
            ],
            false,
        );
        let s = HttpScope::of(&r);
        assert_eq!(s.http_version, "2");
        assert_eq!(s.scheme, "http");
        assert!(s.has_body);
        assert_eq!(s.path, "/\u{fffd}");
        assert_eq!(s.root_path, "");
        assert_eq!(
            s.headers,
            vec![
                (b"content-type".to_vec(), b"text/plain".to_vec()),
                (b"content-length".to_vec(), b"5".to_vec())
            ]
        );
        assert_eq!(s.client, None);
        let chunked = req(&[("HTTP_TRANSFER_ENCODING", b"Chunked")], false);
        assert!(HttpScope::of(&chunked).has_body);
        let empty = req(&[("CONTENT_LENGTH", b"0")], false);
        assert!(!HttpScope::of(&empty).has_body);
        assert_eq!(
            HttpScope::of(&req(&[("SERVER_PROTOCOL", b"HTTP/1.0")], false)).http_version,
            "1.0"
        );
    }

    #[test]
    fn websocket_requests() {
        let r = req(
            &[
                ("REQUEST_METHOD", b"GET"),
                ("HTTP_UPGRADE", b"WebSocket"),
                ("HTTP_SEC_WEBSOCKET_PROTOCOL", b"chat, v2.chat"),
            ],
            true,
        );
        let s = HttpScope::of(&r);
        assert!(s.websocket);
        assert_eq!(s.subprotocols, vec!["chat", "v2.chat"]);
        assert!(!HttpScope::of(&req(&[("REQUEST_METHOD", b"GET")], false)).websocket);
        let post = req(
            &[("REQUEST_METHOD", b"POST"), ("HTTP_UPGRADE", b"websocket")],
            false,
        );
        assert!(!HttpScope::of(&post).websocket);
    }

    #[test]
    fn header_names() {
        assert_eq!(
            header_name(b"HTTP_ACCEPT_ENCODING").unwrap(),
            b"accept-encoding"
        );
        assert_eq!(header_name(b"CONTENT_LENGTH").unwrap(), b"content-length");
        assert_eq!(header_name(b"HTTP_"), None);
        assert_eq!(header_name(b"REMOTE_ADDR"), None);
        assert_eq!(header_name(b"HTTPS"), None);
    }
}
