//! The crate's one error type with stable log codes (`RW####`), shared by the httpd parent
//! (configuration), the httpd child, the daemon processes and rwsgi-express (which compiles
//! this file in for `diag`). Codes are never reused.
#![forbid(unsafe_code)]

use std::fmt;

/// Stable identifiers printed in the error log; the README's error table lists each one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Code {
    /// A directive has wrong or missing arguments.
    BadDirective,
    /// A directive names a mod_wsgi feature this version does not implement yet.
    NotSupported,
    /// mod_wsgi is loaded in the same server.
    ModWsgiLoaded,
    /// Python could not be initialised in an httpd child.
    PythonInit,
    /// The WSGI script could not be loaded (missing, unreadable, raised on import).
    ScriptLoad,
    /// The WSGI script has no callable with the configured name.
    NoCallable,
    /// The application raised an exception.
    AppException,
    /// The application broke the WSGI protocol (bad status, headers, body type ...).
    AppProtocol,
    /// Reading the request body failed (client gone, timeout, bad chunking).
    InputError,
    /// Writing the response failed (client gone).
    OutputError,
    /// The request was refused before reaching Python (ExecCGI, missing script, 411 ...).
    RequestRefused,
    /// A Rust panic was caught at an `extern "C"` boundary, a forked process's entry or a
    /// daemon thread's entry.
    Panic,
    /// Embedded mode is disabled by `WSGIRestrictEmbedded On`.
    EmbeddedRestricted,
    /// A daemon process could not start (user, group, home, limits, socket).
    DaemonStart,
    /// The daemon could not be reached (503).
    DaemonUnavailable,
    /// The daemon broke the protocol or died mid-request (502).
    DaemonProtocol,
    /// A daemon process exited and is restarted.
    DaemonExited,
    /// An application group's sub-interpreter could not be created or set up.
    Interpreter,
    /// A process reached its limit of sub-interpreters.
    InterpreterLimit,
    /// An extension module refused to load in a sub-interpreter.
    SubinterpreterExtension,
    /// An ASGI application broke the ASGI protocol (a wrong message, no response, a callable
    /// that is not ASGI 3 under `application-interface=asgi`).
    AsgiProtocol,
    /// An ASGI application's lifespan startup failed or timed out: the process does not
    /// serve it.
    AsgiLifespan,
    /// An ASGI application where it cannot be served (embedded mode, ASGI 2).
    AsgiUnsupported,
    /// An ASGI request ran longer than request-timeout: its task was cancelled.
    AsgiTimeout,
    /// An ASGI event loop has not run for seconds (a blocking call in a coroutine).
    AsgiLoopBlocked,
    /// An auth, access or dispatch script cannot answer: none configured where its provider
    /// is used, Python not running in the httpd child, or a wrong return type.
    AuthScript,
    /// A request took longer than `WSGISlowRequests`.
    SlowRequest,
    /// A `mod_wsgi.subscribe_events`/`subscribe_shutdown` subscriber raised an exception.
    EventSubscriber,
    /// `WSGIPythonHome`/`python-home=` is a Python of another X.Y than the build's.
    PythonHomeVersion,
    /// `WSGIPythonHome`/`python-home=` is not a Python prefix or virtual environment.
    PythonHomeInvalid,
    /// A script, python-path entry or python-home the process user cannot reach or read.
    PathAccess,
    /// The module was built with httpd struct layouts that differ from this Apache's.
    BuildMismatch,
    /// The configuration asks for what the build's Python cannot do (own-GIL
    /// sub-interpreters on Python < 3.12).
    NeedsNewerPython,
}

impl Code {
    /// The code as printed in the log, e.g. `RW0007`.
    pub fn as_str(self) -> &'static str {
        match self {
            Code::BadDirective => "RW0001",
            Code::NotSupported => "RW0002",
            Code::ModWsgiLoaded => "RW0003",
            Code::PythonInit => "RW0004",
            Code::ScriptLoad => "RW0005",
            Code::NoCallable => "RW0006",
            Code::AppException => "RW0007",
            Code::AppProtocol => "RW0008",
            Code::InputError => "RW0009",
            Code::OutputError => "RW0010",
            Code::RequestRefused => "RW0011",
            Code::Panic => "RW0999",
            Code::EmbeddedRestricted => "RW0012",
            Code::DaemonStart => "RW0013",
            Code::DaemonUnavailable => "RW0014",
            Code::DaemonProtocol => "RW0015",
            Code::DaemonExited => "RW0016",
            Code::Interpreter => "RW0017",
            Code::InterpreterLimit => "RW0018",
            Code::SubinterpreterExtension => "RW0019",
            Code::AsgiProtocol => "RW0020",
            Code::AsgiLifespan => "RW0021",
            Code::AsgiUnsupported => "RW0022",
            Code::AsgiTimeout => "RW0023",
            Code::AsgiLoopBlocked => "RW0024",
            Code::AuthScript => "RW0025",
            Code::SlowRequest => "RW0026",
            Code::EventSubscriber => "RW0027",
            Code::PythonHomeVersion => "RW0040",
            Code::PythonHomeInvalid => "RW0041",
            Code::PathAccess => "RW0042",
            Code::BuildMismatch => "RW0043",
            Code::NeedsNewerPython => "RW0044",
        }
    }

    /// Every code, for the README consistency test.
    pub const ALL: [Code; 33] = [
        Code::BadDirective,
        Code::NotSupported,
        Code::ModWsgiLoaded,
        Code::PythonInit,
        Code::ScriptLoad,
        Code::NoCallable,
        Code::AppException,
        Code::AppProtocol,
        Code::InputError,
        Code::OutputError,
        Code::RequestRefused,
        Code::Panic,
        Code::EmbeddedRestricted,
        Code::DaemonStart,
        Code::DaemonUnavailable,
        Code::DaemonProtocol,
        Code::DaemonExited,
        Code::Interpreter,
        Code::InterpreterLimit,
        Code::SubinterpreterExtension,
        Code::AsgiProtocol,
        Code::AsgiLifespan,
        Code::AsgiUnsupported,
        Code::AsgiTimeout,
        Code::AsgiLoopBlocked,
        Code::AuthScript,
        Code::SlowRequest,
        Code::EventSubscriber,
        Code::PythonHomeVersion,
        Code::PythonHomeInvalid,
        Code::PathAccess,
        Code::BuildMismatch,
        Code::NeedsNewerPython,
    ];
}

/// An error with its stable code and a message meant for the operator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Error {
    pub code: Code,
    pub msg: String,
}

impl Error {
    pub fn new(code: Code, msg: impl Into<String>) -> Self {
        Error {
            code,
            msg: msg.into(),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code.as_str(), self.msg)
    }
}

impl std::error::Error for Error {}

pub type Result<T> = std::result::Result<T, Error>;

/// The message of a caught panic (`catch_unwind`'s payload), for the RW0999 line.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_and_documented() {
        let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
            .expect("README.md");
        let mut seen = std::collections::HashSet::new();
        for c in Code::ALL {
            assert!(seen.insert(c.as_str()), "duplicate code {}", c.as_str());
            assert!(
                readme.contains(c.as_str()),
                "{} missing from README's error table",
                c.as_str()
            );
        }
    }

    #[test]
    fn panic_messages() {
        let p = std::panic::catch_unwind(|| panic!("static")).unwrap_err();
        assert_eq!(panic_message(p.as_ref()), "static");
        let n = 3;
        let p = std::panic::catch_unwind(|| panic!("formatted {n}")).unwrap_err();
        assert_eq!(panic_message(p.as_ref()), "formatted 3");
        let p = std::panic::catch_unwind(|| std::panic::panic_any(7u8)).unwrap_err();
        assert_eq!(panic_message(p.as_ref()), "unknown panic");
    }

    #[test]
    fn display_carries_code() {
        let e = Error::new(Code::BadDirective, "WSGIPythonOptimize takes 0, 1 or 2");
        assert_eq!(e.to_string(), "RW0001: WSGIPythonOptimize takes 0, 1 or 2");
    }
}
