//! The handler's admission rules (pure, unit-tested): from what httpd knows about a request
//! and the settings that apply to it, whether it runs embedded, goes to a daemon group, is
//! left to httpd (413), or is refused with which status and why — mod_wsgi's rules, in
//! mod_wsgi's order. Decided in the httpd child.
#![forbid(unsafe_code)]

use crate::error::Code;

/// What httpd's stat says the target is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    Missing,
    Directory,
    File,
}

/// Everything the rules look at.
#[derive(Clone, Copy, Debug)]
pub struct Facts<'a> {
    /// A `WSGIScriptAlias` claimed the URL (else the handler was set by `AddHandler` and
    /// friends, which needs `Options ExecCGI`).
    pub aliased: bool,
    pub exec_cgi: bool,
    pub target: Target,
    pub filename: &'a str,
    /// `AcceptPathInfo Off` applies and the URL has extra path after the script.
    pub rejected_path_info: bool,
    pub transfer_encoding: Option<&'a [u8]>,
    /// `WSGIChunkedRequest On`.
    pub chunked_allowed: bool,
    pub content_length: Option<&'a [u8]>,
    /// `LimitRequestBody` (0: none).
    pub body_limit: u64,
    /// The expanded process group (`""`: embedded).
    pub process_group: &'a str,
    /// `WSGIRestrictProcess`, if set here.
    pub restrict_process: Option<&'a [String]>,
    /// `WSGIRestrictEmbedded On`.
    pub restrict_embedded: bool,
    /// Python runs in this httpd child.
    pub python_ready: bool,
}

/// HTTP statuses the rules answer with.
pub mod status {
    pub const BAD_REQUEST: u16 = 400;
    pub const FORBIDDEN: u16 = 403;
    pub const NOT_FOUND: u16 = 404;
    pub const LENGTH_REQUIRED: u16 = 411;
    pub const INTERNAL_SERVER_ERROR: u16 = 500;
    pub const NOT_IMPLEMENTED: u16 = 501;
}

/// The decision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Run the application in this httpd child.
    Embedded,
    /// Send the request to this daemon group.
    Daemon,
    /// The declared body is over `LimitRequestBody`: let httpd's input filter read it and
    /// answer 413 itself.
    TooLarge,
    /// Answer `status`; log `code: message`.
    Refuse {
        status: u16,
        code: Code,
        message: String,
    },
}

fn refuse(status: u16, message: impl Into<String>) -> Admission {
    Admission::Refuse {
        status,
        code: Code::RequestRefused,
        message: message.into(),
    }
}

/// Decides what happens to a request.
pub fn admit(f: &Facts<'_>) -> Admission {
    if !f.aliased && !f.exec_cgi {
        return refuse(
            status::FORBIDDEN,
            "Options ExecCGI is off in this directory",
        );
    }
    match f.target {
        Target::Missing => {
            return refuse(
                status::NOT_FOUND,
                format!(
                    "target WSGI script '{}' not found or unable to stat",
                    f.filename
                ),
            );
        }
        Target::Directory => {
            return refuse(
                status::FORBIDDEN,
                format!(
                    "attempt to invoke directory '{}' as WSGI application",
                    f.filename
                ),
            );
        }
        Target::File => {}
    }
    if f.rejected_path_info {
        return refuse(
            status::NOT_FOUND,
            "AcceptPathInfo Off disallows the extra path in the URL",
        );
    }
    // Request body policy (mod_wsgi's rules).
    if let Some(te) = f.transfer_encoding {
        if !te.eq_ignore_ascii_case(b"chunked") {
            return refuse(
                status::NOT_IMPLEMENTED,
                format!(
                    "unexpected Transfer-Encoding '{}'; only chunked is supported",
                    String::from_utf8_lossy(te)
                ),
            );
        }
        if !f.chunked_allowed {
            return refuse(
                status::LENGTH_REQUIRED,
                "the request body uses chunked transfer encoding, which is off; enable it with \
                 WSGIChunkedRequest On",
            );
        }
    }
    if let Some(cl) = f.content_length {
        let Some(len) = std::str::from_utf8(cl)
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
        else {
            return refuse(
                status::BAD_REQUEST,
                format!("invalid Content-Length '{}'", String::from_utf8_lossy(cl)),
            );
        };
        if f.body_limit > 0 && len > f.body_limit {
            return Admission::TooLarge;
        }
    }
    if let Some(allowed) = f.restrict_process
        && !allowed.iter().any(|a| a == f.process_group)
    {
        return refuse(
            status::INTERNAL_SERVER_ERROR,
            format!(
                "process group '{}' is not allowed here by WSGIRestrictProcess",
                if f.process_group.is_empty() {
                    "%{GLOBAL}"
                } else {
                    f.process_group
                }
            ),
        );
    }
    if !f.process_group.is_empty() {
        return Admission::Daemon;
    }
    if f.restrict_embedded {
        return Admission::Refuse {
            status: status::INTERNAL_SERVER_ERROR,
            code: Code::EmbeddedRestricted,
            message: "embedded mode is disabled by WSGIRestrictEmbedded On".into(),
        };
    }
    if !f.python_ready {
        return Admission::Refuse {
            status: status::INTERNAL_SERVER_ERROR,
            code: Code::PythonInit,
            message: "Python is not initialised in this httpd child (see the error log at \
                      start-up)"
                .into(),
        };
    }
    Admission::Embedded
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Facts<'static> {
        Facts {
            aliased: true,
            exec_cgi: false,
            target: Target::File,
            filename: "/srv/app.wsgi",
            rejected_path_info: false,
            transfer_encoding: None,
            chunked_allowed: false,
            content_length: None,
            body_limit: 0,
            process_group: "",
            restrict_process: None,
            restrict_embedded: false,
            python_ready: true,
        }
    }

    fn status_of(a: &Admission) -> Option<u16> {
        match a {
            Admission::Refuse { status, .. } => Some(*status),
            _ => None,
        }
    }

    #[test]
    fn an_ordinary_request_runs_embedded_or_in_its_group() {
        assert_eq!(admit(&base()), Admission::Embedded);
        let f = Facts {
            process_group: "site",
            ..base()
        };
        assert_eq!(admit(&f), Admission::Daemon);
    }

    #[test]
    fn exec_cgi_is_needed_only_without_an_alias() {
        let f = Facts {
            aliased: false,
            ..base()
        };
        let a = admit(&f);
        assert_eq!(status_of(&a), Some(403));
        assert!(
            matches!(a, Admission::Refuse { code: Code::RequestRefused, ref message, .. }
                 if message.contains("ExecCGI"))
        );
        let f = Facts {
            aliased: false,
            exec_cgi: true,
            ..base()
        };
        assert_eq!(admit(&f), Admission::Embedded);
    }

    #[test]
    fn missing_script_and_directory() {
        let f = Facts {
            target: Target::Missing,
            ..base()
        };
        let a = admit(&f);
        assert_eq!(status_of(&a), Some(404));
        assert!(
            matches!(a, Admission::Refuse { ref message, .. } if message.contains("'/srv/app.wsgi' not found"))
        );
        let f = Facts {
            target: Target::Directory,
            ..base()
        };
        assert_eq!(status_of(&admit(&f)), Some(403));
        // ExecCGI is judged first, as mod_wsgi does.
        let f = Facts {
            aliased: false,
            target: Target::Missing,
            ..base()
        };
        assert!(
            matches!(admit(&f), Admission::Refuse { ref message, .. } if message.contains("ExecCGI"))
        );
    }

    #[test]
    fn accept_path_info_off() {
        let f = Facts {
            rejected_path_info: true,
            ..base()
        };
        assert_eq!(status_of(&admit(&f)), Some(404));
    }

    #[test]
    fn transfer_encoding_rules() {
        for (te, allowed, want) in [
            (&b"chunked"[..], true, None),
            (b"Chunked", true, None),
            (b"chunked", false, Some(411)),
            (b"gzip", true, Some(501)),
            (b"gzip, chunked", true, Some(501)),
            (b"", true, Some(501)),
        ] {
            let f = Facts {
                transfer_encoding: Some(te),
                chunked_allowed: allowed,
                ..base()
            };
            assert_eq!(status_of(&admit(&f)), want, "{te:?} allowed={allowed}");
        }
    }

    #[test]
    fn content_length_rules() {
        for (cl, limit, want) in [
            (&b"10"[..], 0, Admission::Embedded),
            (b" 10 ", 10, Admission::Embedded),
            (b"11", 10, Admission::TooLarge),
            (b"18446744073709551615", 1, Admission::TooLarge),
        ] {
            let f = Facts {
                content_length: Some(cl),
                body_limit: limit,
                ..base()
            };
            assert_eq!(admit(&f), want, "{cl:?} limit={limit}");
        }
        for bad in [&b"-1"[..], b"1e3", b"", b"0x10", b"18446744073709551616"] {
            let f = Facts {
                content_length: Some(bad),
                ..base()
            };
            assert_eq!(status_of(&admit(&f)), Some(400), "{bad:?}");
        }
    }

    #[test]
    fn restrict_process() {
        let allowed = vec!["a".to_string(), "b".to_string()];
        let f = Facts {
            process_group: "b",
            restrict_process: Some(&allowed),
            ..base()
        };
        assert_eq!(admit(&f), Admission::Daemon);
        let f = Facts {
            process_group: "c",
            restrict_process: Some(&allowed),
            ..base()
        };
        assert_eq!(status_of(&admit(&f)), Some(500));
        let f = Facts {
            restrict_process: Some(&allowed),
            ..base()
        };
        assert!(matches!(admit(&f), Admission::Refuse { ref message, .. }
                 if message.contains("'%{GLOBAL}' is not allowed")));
    }

    #[test]
    fn embedded_needs_python_and_no_restriction() {
        let f = Facts {
            restrict_embedded: true,
            ..base()
        };
        assert!(matches!(
            admit(&f),
            Admission::Refuse {
                status: 500,
                code: Code::EmbeddedRestricted,
                ..
            }
        ));
        // A daemon group is not affected by either.
        let f = Facts {
            restrict_embedded: true,
            python_ready: false,
            process_group: "g",
            ..base()
        };
        assert_eq!(admit(&f), Admission::Daemon);
        let f = Facts {
            python_ready: false,
            ..base()
        };
        assert!(matches!(
            admit(&f),
            Admission::Refuse {
                status: 500,
                code: Code::PythonInit,
                ..
            }
        ));
    }
}
