//! The request's CGI environ, built from httpd's request as mod_wsgi 6 builds it, with the
//! trusted proxy headers applied, and the typed facts: the `request::Request` both modes run.
//! Its buffers are reused per thread. Runs in the httpd child.
#![forbid(unsafe_code)]

use std::cell::Cell;
use std::ffi::c_int;
use std::sync::OnceLock;

use super::settings::RequestSettings;
use crate::config::{DirConfig, HeadMode};
use crate::httpd::request::{Request, server_description};
use crate::request::{self as core, RequestMeta};
use crate::wsgi::environ::{self, HeaderKey};
use crate::wsgi::proxy::{self, Environ};

/// Readies the request body and builds the request both modes run: the CGI part of the
/// environ with the trusted proxy headers applied (the `HTTPS` variable is taken out: it
/// becomes `wsgi.url_scheme`) and the typed facts.
pub fn prepare(
    req: Request,
    set: &RequestSettings,
    dcfg: &DirConfig,
    script_name: &[u8],
    path_info: &[u8],
    mtime: i64,
) -> Result<core::Request<String>, c_int> {
    req.setup_body()?;
    Ok(describe(req, set, dcfg, script_name, path_info, mtime))
}

/// The request both modes run, without readying its body: what `prepare` builds, and what
/// the auth phases' scripts get before any handler has run.
pub fn describe(
    req: Request,
    set: &RequestSettings,
    dcfg: &DirConfig,
    script_name: &[u8],
    path_info: &[u8],
    mtime: i64,
) -> core::Request<String> {
    let mut env = build_environ(req, set, script_name, path_info);
    proxy::process(
        &mut env,
        dcfg.trusted_proxy_headers.as_deref().unwrap_or(&[]),
        dcfg.trusted_proxies.as_deref(),
    );
    let https = env
        .iter()
        .find(|(k, _)| k == "HTTPS")
        .is_some_and(|(_, v)| v.eq_ignore_ascii_case(b"on") || v == b"1");
    env.retain(|(k, _)| k != "HTTPS");
    let started = req.request_time();
    let meta = RequestMeta {
        head_request: req.header_only(),
        https,
        main_interpreter: set.main_interpreter,
        interface: set.interface,
        server_id: req.server_id() as u64,
        script_mtime: mtime,
        request_start: started,
        // Stamped again when the request is handed to a daemon (`daemon_client`).
        queue_start: started,
        apache_version: running_apache_version(),
    };
    core::Request { env, meta }
}

thread_local! {
    /// The previous request's environ vector, emptied: reusing it avoids one allocation of
    /// ~2 KiB per request, which made glibc consolidate its free lists every time.
    static SPARE_ENVIRON: Cell<Option<Environ>> = const { Cell::new(None) };
    /// Entries of earlier environs, their key and value buffers kept for the next request's
    /// (about 90 small allocations fewer per request); bounded in count and size.
    static SPARE_ENTRIES: std::cell::RefCell<Vec<(String, Vec<u8>)>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// At most this many spare entries per thread, none with a buffer larger than
/// `SPARE_ENTRY_MAX` bytes (a rare huge header value is not kept).
const SPARE_ENTRIES_MAX: usize = 96;
const SPARE_ENTRY_MAX: usize = 1024;

fn new_environ() -> Environ {
    SPARE_ENVIRON
        .with(Cell::take)
        .unwrap_or_else(|| Vec::with_capacity(48))
}

/// One environ entry, in the buffers of a spare one when there is one.
fn environ_entry(k: &str, v: &[u8]) -> (String, Vec<u8>) {
    match SPARE_ENTRIES.with(|s| s.borrow_mut().pop()) {
        Some((mut key, mut value)) => {
            key.clear();
            key.push_str(k);
            value.clear();
            value.extend_from_slice(v);
            (key, value)
        }
        None => (k.to_string(), v.to_vec()),
    }
}

pub fn recycle_environ(mut env: Environ) {
    SPARE_ENTRIES.with(|s| {
        let mut spare = s.borrow_mut();
        for e in env.drain(..) {
            if spare.len() >= SPARE_ENTRIES_MAX {
                break;
            }
            if e.0.capacity() <= SPARE_ENTRY_MAX && e.1.capacity() <= SPARE_ENTRY_MAX {
                spare.push(e);
            }
        }
    });
    env.clear();
    SPARE_ENVIRON.with(|c| c.set(Some(env)));
}

/// The running Apache's version, from its server description (parsed once per process).
fn running_apache_version() -> [u16; 3] {
    static VERSION: OnceLock<[u16; 3]> = OnceLock::new();
    *VERSION.get_or_init(|| {
        let (a, b, c) = environ::apache_version(&server_description());
        [a, b, c].map(|v| v.min(u16::MAX as u32) as u16)
    })
}

/// The CGI part of the environ, as mod_wsgi 6 builds it (no PATH_TRANSLATED sub-request, no
/// REMOTE_HOST/REMOTE_IDENT look-ups), plus the `mod_wsgi.*` keys.
fn build_environ(
    req: Request,
    set: &RequestSettings,
    script_name: &[u8],
    path_info: &[u8],
) -> Environ {
    let mut env = new_environ();
    // A key set twice keeps its first place and takes the later value. Only the entries from
    // subprocess_env can hold a key of the fixed part (headers become HTTP_* or CONTENT_*,
    // which the fixed part never sets), so that part searches only them.
    let searched = Cell::new(usize::MAX);
    let len = Cell::new(0usize);
    let mut put = |k: &str, v: &[u8]| {
        let upto = env.len().min(searched.get());
        match env[..upto].iter_mut().find(|(key, _)| key == k) {
            Some(slot) => {
                slot.1.clear();
                slot.1.extend_from_slice(v);
            }
            None => env.push(environ_entry(k, v)),
        }
        len.set(env.len());
    };
    let c = req.cgi();
    // Anything other modules put into subprocess_env (SetEnv, mod_rewrite, mod_ssl ...).
    for (k, v) in req.subprocess_env().entries() {
        let k = String::from_utf8_lossy(k);
        if k != "PATH" {
            put(&k, v);
        }
    }
    let from_subprocess_env = len.get();
    for (k, v) in req.headers_in().entries() {
        if let HeaderKey::Key(key) = environ::header_key(k, set.pass_authorization) {
            put(&key, v);
        }
    }
    searched.set(from_subprocess_env);
    // mod_wsgi 6 leaves it out; mod_wsgi 4 (ap_add_cgi_vars) and wsgiref set it, and
    // applications ported from them test it.
    put("GATEWAY_INTERFACE", b"CGI/1.1");
    put("SERVER_SOFTWARE", c.server_software);
    put("SERVER_NAME", c.server_name.unwrap_or(b""));
    put("SERVER_ADDR", c.server_addr.unwrap_or(b""));
    put("SERVER_PORT", c.server_port.to_string().as_bytes());
    put("REMOTE_ADDR", c.remote_addr.unwrap_or(b""));
    put("DOCUMENT_ROOT", c.document_root.unwrap_or(b""));
    put("REQUEST_SCHEME", c.request_scheme.unwrap_or(b"http"));
    put("CONTEXT_PREFIX", c.context_prefix.unwrap_or(b""));
    put(
        "CONTEXT_DOCUMENT_ROOT",
        c.context_document_root.unwrap_or(b""),
    );
    if let Some(a) = c.server_admin {
        put("SERVER_ADMIN", a);
    }
    put("SCRIPT_FILENAME", c.script_filename.unwrap_or(b""));
    put("REMOTE_PORT", c.remote_port.to_string().as_bytes());
    if let Some(u) = c.remote_user {
        put("REMOTE_USER", u);
    }
    if let Some(t) = c.auth_type {
        put("AUTH_TYPE", t);
    }
    if c.redirected {
        if let Some(u) = c.redirect_url {
            put("REDIRECT_URL", u);
        }
        if let Some(a) = c.redirect_query {
            put("REDIRECT_QUERY_STRING", a);
        }
    }
    put("SERVER_PROTOCOL", c.protocol.unwrap_or(b"HTTP/1.0"));
    let method = c.method.unwrap_or(b"GET");
    let head_to_get = c.method_is_get
        && c.header_only
        && match set.map_head_to_get {
            HeadMode::On => true,
            HeadMode::Off => false,
            HeadMode::Auto => c.output_below_protocol,
        };
    put("REQUEST_METHOD", if head_to_get { b"GET" } else { method });
    put("QUERY_STRING", c.query.unwrap_or(b""));
    put("REQUEST_URI", c.request_uri.unwrap_or(b""));
    put("SCRIPT_NAME", script_name);
    put("PATH_INFO", path_info);
    put("mod_wsgi.script_name", script_name);
    put("mod_wsgi.path_info", path_info);
    put("mod_wsgi.process_group", set.process_group.as_bytes());
    put(
        "mod_wsgi.application_group",
        set.application_group.as_bytes(),
    );
    put("mod_wsgi.callable_object", set.callable_object.as_bytes());
    put("mod_wsgi.request_handler", c.handler.unwrap_or(b""));
    put(
        "mod_wsgi.handler_script",
        set.handler_script.as_deref().unwrap_or("").as_bytes(),
    );
    put(
        "mod_wsgi.script_reloading",
        if set.script_reloading { b"1" } else { b"0" },
    );
    put(
        "mod_wsgi.enable_sendfile",
        if set.enable_sendfile { b"1" } else { b"0" },
    );
    put(
        "mod_wsgi.ignore_activity",
        if set.ignore_activity { b"1" } else { b"0" },
    );
    put("mod_wsgi.listener_host", c.listener_host.unwrap_or(b""));
    put(
        "mod_wsgi.listener_port",
        c.listener_port.to_string().as_bytes(),
    );
    put(
        "mod_wsgi.server_pid",
        std::process::id().to_string().as_bytes(),
    );
    put("mod_wsgi.request_id", c.request_id.unwrap_or(b""));
    put("mod_wsgi.connection_id", c.connection_id.unwrap_or(b""));
    env
}
