//! The request core shared by both modes (pure, no I/O): [`RequestMeta`], the typed facts about a
//! request that are not environ keys, and [`Request`], what the httpd child hands to "an
//! application" — today a WSGI callable run embedded or in a daemon. Built once in the httpd
//! child; read there (embedded mode) or in a daemon process (carried by the wire protocol).
#![forbid(unsafe_code)]

pub mod admission;
pub mod metrics;

/// Which application interface the configuration asks for (`WSGIApplicationInterface`,
/// `application-interface=`): `Auto` looks at the callable (ASGI 3 when it is a coroutine
/// function, an object whose `__call__` is one, or marked by asgiref; WSGI otherwise).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Interface {
    #[default]
    Auto,
    Wsgi,
    Asgi,
}

impl Interface {
    /// The configuration word (`auto`, `wsgi`, `asgi`), any case.
    pub fn parse(word: &str) -> Option<Interface> {
        match word.to_ascii_lowercase().as_str() {
            "auto" => Some(Interface::Auto),
            "wsgi" => Some(Interface::Wsgi),
            "asgi" => Some(Interface::Asgi),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Interface::Auto => "auto",
            Interface::Wsgi => "wsgi",
            Interface::Asgi => "asgi",
        }
    }
}

/// Facts about one request that the application never sees as environ keys but that whoever
/// runs it needs: they become `wsgi.url_scheme`, the `mod_wsgi.*` timings, `apache.version`,
/// the log routing and the script-reload check. Times are microseconds since the epoch, as
/// httpd keeps them (`apr_time_t`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RequestMeta {
    /// A HEAD request that the application may answer as GET: no body is sent.
    pub head_request: bool,
    /// The request came over HTTPS (after trusted proxy headers were applied).
    pub https: bool,
    /// The application group runs in the process's main interpreter: it is `%{GLOBAL}`, or
    /// the configuration gives the process no other group (the one-group rule). Otherwise it
    /// runs in the group's own sub-interpreter.
    pub main_interpreter: bool,
    /// The application interface the configuration forces, if any.
    pub interface: Interface,
    /// Identity of the virtual host (`server_rec` address in the httpd child), for log routing;
    /// a daemon only compares it with the addresses it inherited, never dereferences it.
    pub server_id: u64,
    /// Modification time of the WSGI script as httpd saw it (0: unknown).
    pub script_mtime: i64,
    /// When httpd read the request line.
    pub request_start: i64,
    /// When the request was queued for the application (`mod_wsgi.queue_start` in daemon mode):
    /// the httpd child stamps it before it hands the request to a daemon, as mod_wsgi 6 does.
    pub queue_start: i64,
    /// The running Apache's version, for `apache.version`.
    pub apache_version: [u16; 3],
}

impl RequestMeta {
    /// Size of the fixed encoding: flags, server id, three times, the version.
    pub const ENCODED_LEN: usize = 1 + 8 + 8 + 8 + 8 + 3 * 2;

    const HEAD: u8 = 1;
    const HTTPS: u8 = 2;
    const MAIN_INTERPRETER: u8 = 4;
    const FORCE_WSGI: u8 = 8;
    const FORCE_ASGI: u8 = 16;
    const KNOWN: u8 =
        Self::HEAD | Self::HTTPS | Self::MAIN_INTERPRETER | Self::FORCE_WSGI | Self::FORCE_ASGI;

    /// Appends the fixed big-endian encoding.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let flags = if self.head_request { Self::HEAD } else { 0 }
            | if self.https { Self::HTTPS } else { 0 }
            | if self.main_interpreter {
                Self::MAIN_INTERPRETER
            } else {
                0
            }
            | match self.interface {
                Interface::Auto => 0,
                Interface::Wsgi => Self::FORCE_WSGI,
                Interface::Asgi => Self::FORCE_ASGI,
            };
        out.push(flags);
        out.extend_from_slice(&self.server_id.to_be_bytes());
        out.extend_from_slice(&self.script_mtime.to_be_bytes());
        out.extend_from_slice(&self.request_start.to_be_bytes());
        out.extend_from_slice(&self.queue_start.to_be_bytes());
        for v in self.apache_version {
            out.extend_from_slice(&v.to_be_bytes());
        }
    }

    /// Decodes the fixed encoding; `None` if `b` is not exactly [`Self::ENCODED_LEN`] bytes
    /// or sets a flag this version does not know (so every accepted value re-encodes to the
    /// same bytes).
    pub fn decode(b: &[u8]) -> Option<RequestMeta> {
        let b: &[u8; Self::ENCODED_LEN] = b.try_into().ok()?;
        let flags = b[0];
        if flags & !Self::KNOWN != 0 {
            return None;
        }
        let interface = match (flags & Self::FORCE_WSGI != 0, flags & Self::FORCE_ASGI != 0) {
            (false, false) => Interface::Auto,
            (true, false) => Interface::Wsgi,
            (false, true) => Interface::Asgi,
            (true, true) => return None,
        };
        let u64_at = |i: usize| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&b[i..i + 8]);
            u64::from_be_bytes(a)
        };
        let u16_at = |i: usize| u16::from_be_bytes([b[i], b[i + 1]]);
        Some(RequestMeta {
            head_request: flags & Self::HEAD != 0,
            https: flags & Self::HTTPS != 0,
            main_interpreter: flags & Self::MAIN_INTERPRETER != 0,
            interface,
            server_id: u64_at(1),
            script_mtime: u64_at(9) as i64,
            request_start: u64_at(17) as i64,
            queue_start: u64_at(25) as i64,
            apache_version: [u16_at(33), u16_at(35), u16_at(37)],
        })
    }

    /// `queue_start` as float epoch seconds.
    pub fn queue_start_secs(&self) -> f64 {
        self.queue_start as f64 / 1e6
    }
}

/// One request as the application runner receives it, in either mode: the CGI part of the
/// environ (CGI variables, `HTTP_*` headers, `SetEnv` values and the `mod_wsgi.*` settings, in
/// order, values as raw bytes) and its [`RequestMeta`].
pub struct Request<K> {
    pub env: Vec<(K, Vec<u8>)>,
    pub meta: RequestMeta,
}

impl<K: AsRef<[u8]>> Request<K> {
    /// The value of environ key `key`.
    pub fn get(&self, key: &str) -> Option<&[u8]> {
        self.env
            .iter()
            .find(|(k, _)| k.as_ref() == key.as_bytes())
            .map(|(_, v)| v.as_slice())
    }

    /// The value of `key` as text (lossy; empty when absent).
    pub fn text(&self, key: &str) -> String {
        String::from_utf8_lossy(self.get(key).unwrap_or(b"")).into_owned()
    }

    /// The WSGI script to run: the `WSGIHandlerScript` serving the request, else
    /// `SCRIPT_FILENAME`.
    pub fn script(&self) -> String {
        match self.get("mod_wsgi.handler_script") {
            Some(h) if !h.is_empty() => String::from_utf8_lossy(h).into_owned(),
            _ => self.text("SCRIPT_FILENAME"),
        }
    }

    /// The application group's name as mod_wsgi names it (`""`: `%{GLOBAL}`).
    pub fn application_group(&self) -> String {
        self.text("mod_wsgi.application_group")
    }

    /// Whether the request runs in the process's main interpreter (`%{GLOBAL}`, or its group
    /// runs there under the one-group rule).
    pub fn runs_in_main_interpreter(&self) -> bool {
        self.meta.main_interpreter || self.application_group().is_empty()
    }

    /// The callable in the script (`mod_wsgi.callable_object`).
    pub fn callable_object(&self) -> String {
        self.text("mod_wsgi.callable_object")
    }

    /// Whether a changed script is reloaded (`WSGIScriptReloading`, default On).
    pub fn script_reloading(&self) -> bool {
        self.get("mod_wsgi.script_reloading") != Some(b"0")
    }

    /// Whether the request counts as activity for inactivity-timeout (`WSGIIgnoreActivity`).
    pub fn counts_as_activity(&self) -> bool {
        self.get("mod_wsgi.ignore_activity") != Some(b"1")
    }

    /// What server-status shows of the request: `METHOD URI`, `IP:PORT` of the client and the
    /// request id, tab-separated.
    pub fn status_text(&self) -> Vec<u8> {
        let part = |k: &str| self.get(k).unwrap_or(b"");
        let mut t = Vec::with_capacity(128);
        t.extend_from_slice(part("REQUEST_METHOD"));
        t.push(b' ');
        t.extend_from_slice(part("REQUEST_URI"));
        t.push(b'\t');
        t.extend_from_slice(part("REMOTE_ADDR"));
        t.push(b':');
        t.extend_from_slice(part("REMOTE_PORT"));
        t.push(b'\t');
        t.extend_from_slice(part("mod_wsgi.request_id"));
        t
    }

    /// httpd's id of the request (for log lines).
    pub fn request_id(&self) -> String {
        self.text("mod_wsgi.request_id")
    }

    /// The `[client IP:PORT] ` context httpd's request log lines start with (empty without
    /// `REMOTE_ADDR`): a daemon process puts it on the lines of the request it runs, as
    /// `ap_log_rerror` does in the httpd child. The address is `REMOTE_ADDR` as the application
    /// sees it (after `WSGITrustedProxyHeaders`).
    pub fn log_client(&self) -> String {
        match self.get("REMOTE_ADDR") {
            Some(addr) if !addr.is_empty() => format!(
                "[client {}:{}] ",
                String::from_utf8_lossy(addr),
                self.text("REMOTE_PORT")
            ),
            _ => String::new(),
        }
    }

    /// The body length declared by `CONTENT_LENGTH`, if any and valid.
    pub fn content_length(&self) -> Option<u64> {
        self.get("CONTENT_LENGTH")
            .and_then(crate::wsgi::environ::parse_content_length)
    }

    /// The script's modification time as the httpd child saw it (`None`: unknown).
    pub fn script_mtime(&self) -> Option<i64> {
        (self.meta.script_mtime != 0).then_some(self.meta.script_mtime)
    }
}

/// Environ keys whose values are file-system paths: decoded as UTF-8 (the file-system
/// encoding) when they are valid UTF-8, as mod_wsgi does for `DOCUMENT_ROOT` and
/// `SCRIPT_FILENAME`; every other value is latin-1 (PEP 3333).
pub fn is_path_key(key: &[u8]) -> bool {
    matches!(
        key,
        b"DOCUMENT_ROOT" | b"SCRIPT_FILENAME" | b"CONTEXT_DOCUMENT_ROOT"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> RequestMeta {
        RequestMeta {
            head_request: true,
            https: false,
            main_interpreter: true,
            interface: Interface::Asgi,
            server_id: 0x5555_0000_1234,
            script_mtime: 1_700_000_000_123_456,
            request_start: -5,
            queue_start: i64::MAX,
            apache_version: [2, 4, 71],
        }
    }

    #[test]
    fn status_text_has_the_request_line_client_and_id() {
        let env = |pairs: &[(&str, &str)]| Request {
            env: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
                .collect(),
            meta: RequestMeta::default(),
        };
        let r = env(&[
            ("REQUEST_METHOD", "GET"),
            ("REMOTE_PORT", "5"),
            ("REQUEST_URI", "/a?b"),
            ("REMOTE_ADDR", "::1"),
            ("mod_wsgi.request_id", "Zx1"),
        ]);
        assert_eq!(r.status_text(), b"GET /a?b\t::1:5\tZx1");
        assert_eq!(env(&[]).status_text(), b" \t:\t");
    }

    #[test]
    fn meta_round_trips() {
        for m in [RequestMeta::default(), sample()] {
            let mut out = Vec::new();
            m.encode(&mut out);
            assert_eq!(out.len(), RequestMeta::ENCODED_LEN);
            assert_eq!(RequestMeta::decode(&out), Some(m));
        }
    }

    #[test]
    fn meta_rejects_wrong_sizes_and_unknown_flags() {
        let mut out = Vec::new();
        sample().encode(&mut out);
        assert_eq!(RequestMeta::decode(&out[..out.len() - 1]), None);
        out.push(0);
        assert_eq!(RequestMeta::decode(&out), None);
        out.pop();
        out[0] |= 32;
        assert_eq!(RequestMeta::decode(&out), None);
        // Both interfaces forced at once is not a value.
        out[0] = 8 | 16;
        assert_eq!(RequestMeta::decode(&out), None);
    }

    #[test]
    fn request_accessors() {
        let r = Request {
            env: vec![
                ("SCRIPT_FILENAME".to_string(), b"/srv/app.wsgi".to_vec()),
                ("mod_wsgi.script_reloading".to_string(), b"0".to_vec()),
                ("mod_wsgi.ignore_activity".to_string(), b"1".to_vec()),
                ("CONTENT_LENGTH".to_string(), b"12".to_vec()),
            ],
            meta: RequestMeta::default(),
        };
        assert_eq!(r.script(), "/srv/app.wsgi");
        let handled = Request {
            env: vec![
                ("SCRIPT_FILENAME".to_string(), b"/srv/page.tmpl".to_vec()),
                (
                    "mod_wsgi.handler_script".to_string(),
                    b"/srv/render.wsgi".to_vec(),
                ),
            ],
            meta: RequestMeta::default(),
        };
        assert_eq!(handled.script(), "/srv/render.wsgi");
        assert_eq!(r.callable_object(), "");
        assert!(!r.script_reloading());
        assert!(!r.counts_as_activity());
        assert_eq!(r.content_length(), Some(12));
        assert_eq!(r.script_mtime(), None);
        let r = Request::<Vec<u8>> {
            env: vec![],
            meta: sample(),
        };
        assert!(r.script_reloading() && r.counts_as_activity());
        assert_eq!(r.script_mtime(), Some(1_700_000_000_123_456));
        assert_eq!(r.content_length(), None);
        assert_eq!(r.log_client(), "");
    }

    #[test]
    fn log_client_as_httpd_writes_it() {
        let r = Request {
            env: vec![
                ("REMOTE_ADDR".to_string(), b"::1".to_vec()),
                ("REMOTE_PORT".to_string(), b"51234".to_vec()),
            ],
            meta: RequestMeta::default(),
        };
        assert_eq!(r.log_client(), "[client ::1:51234] ");
    }

    #[test]
    fn interface_words() {
        assert_eq!(Interface::parse("ASGI"), Some(Interface::Asgi));
        assert_eq!(Interface::parse("wsgi"), Some(Interface::Wsgi));
        assert_eq!(Interface::parse("Auto"), Some(Interface::Auto));
        assert_eq!(Interface::parse("asgi2"), None);
        for i in [Interface::Auto, Interface::Wsgi, Interface::Asgi] {
            assert_eq!(Interface::parse(i.as_str()), Some(i));
        }
    }

    #[test]
    fn path_keys() {
        assert!(is_path_key(b"DOCUMENT_ROOT"));
        assert!(is_path_key(b"SCRIPT_FILENAME"));
        assert!(is_path_key(b"CONTEXT_DOCUMENT_ROOT"));
        assert!(!is_path_key(b"PATH_INFO"));
        assert!(!is_path_key(b"REQUEST_URI"));
    }
}
