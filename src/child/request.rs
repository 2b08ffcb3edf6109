//! One request in embedded mode: `translate_name` claims the URL for a `WSGIScriptAlias`, the
//! `handler` checks the request, builds the environ from `request_rec`, and runs the
//! application through `wsgi::adapter` with httpd-backed body source and response sink.
//! Runs in the httpd child.

use std::cell::Cell;
use std::ffi::{CStr, c_char, c_int};
use std::io;
use std::os::fd::RawFd;
use std::ptr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

use pyo3::prelude::*;

use crate::config::{AliasPattern, DirConfig, GlobalConfig, HeadMode};
use crate::error::Code;
use crate::httpd::ffi::*;
use crate::httpd::{
    ServerState, apache_level, global, guard, log_request, log_server, module_config,
};
use crate::python;
use crate::request::{Request, RequestMeta};
use crate::wsgi::adapter::{self, BodySource, LogFn, Outcome, RequestIo, ResponseSink};
use crate::wsgi::build::{self, ProcessFacts};
use crate::wsgi::environ::{self, GroupFacts, HeaderKey};
use crate::wsgi::headers::Head;
use crate::wsgi::proxy::{self, Environ};

const HANDLER: &CStr = c"wsgi-script";

// ------------------------------------------------------------------------------------------
// Small safe views over httpd data

/// Bytes of a C string, or `None` for NULL.
///
/// # Safety
/// `p` must be NULL or a NUL-terminated string that outlives `'a`.
unsafe fn bytes<'a>(p: *const c_char) -> Option<&'a [u8]> {
    // SAFETY: per the contract.
    (!p.is_null()).then(|| unsafe { CStr::from_ptr(p) }.to_bytes())
}

fn text(b: Option<&[u8]>) -> String {
    b.map(|b| String::from_utf8_lossy(b).into_owned())
        .unwrap_or_default()
}

/// A pool copy of `s`, for strings httpd keeps a pointer to.
fn pstr(pool: *mut apr_pool_t, s: &[u8]) -> *mut c_char {
    // SAFETY: apr_pstrmemdup copies `s.len()` bytes into the live pool and NUL-terminates.
    unsafe { apr_pstrmemdup(pool, s.as_ptr().cast(), s.len()) }
}

/// Looks `key` up in an httpd table.
fn table_get<'a>(t: *const apr_table_t, key: &CStr) -> Option<&'a [u8]> {
    if t.is_null() {
        return None;
    }
    // SAFETY: `t` is a live table of the current request; values live as long as its pool.
    unsafe { bytes(apr_table_get(t, key.as_ptr())) }
}

/// The entries of an httpd table.
fn table_entries<'a>(t: *const apr_table_t) -> Vec<(&'a [u8], &'a [u8])> {
    if t.is_null() {
        return Vec::new();
    }
    // SAFETY: apr_table_elts exposes the table's array of apr_table_entry_t, live with the
    // request pool; NULL keys/values are skipped.
    unsafe {
        let arr = apr_table_elts(t);
        let elts = (*arr).elts as *const apr_table_entry_t;
        (0..(*arr).nelts as usize)
            .filter_map(|i| {
                let e = &*elts.add(i);
                Some((bytes(e.key)?, bytes(e.val)?))
            })
            .collect()
    }
}

/// A request pointer that may cross into `py.detach` closures and log callbacks.
#[derive(Clone, Copy)]
struct ReqPtr(*mut request_rec);

// SAFETY: the request is only used by the thread running its handler (or one the application
// starts and waits for); every object holding a ReqPtr is detached when the handler returns
// (`Input::end`, `Log::end`, the response state's `ended`).
unsafe impl Send for ReqPtr {}
// SAFETY: as above; httpd's request functions are not called concurrently for one request by us.
unsafe impl Sync for ReqPtr {}

impl ReqPtr {
    fn get(self) -> *mut request_rec {
        self.0
    }
}

// ------------------------------------------------------------------------------------------
// Process-wide facts computed once per child

static MULTITHREAD: AtomicBool = AtomicBool::new(false);
static MULTIPROCESS: AtomicBool = AtomicBool::new(false);
static MAX_THREADS: AtomicI32 = AtomicI32::new(1);
static MAX_DAEMONS: AtomicI32 = AtomicI32::new(1);

fn mpm_query(q: c_int) -> c_int {
    let mut v: c_int = 0;
    // SAFETY: ap_mpm_query writes one int for a valid query code.
    unsafe { ap_mpm_query(q, &mut v) };
    v
}

pub(crate) fn child_init_process_info() {
    let threaded = mpm_query(AP_MPMQ_IS_THREADED) != AP_MPMQ_NOT_SUPPORTED;
    let threads = if threaded {
        mpm_query(AP_MPMQ_MAX_THREADS).max(1)
    } else {
        1
    };
    let daemons = mpm_query(AP_MPMQ_MAX_DAEMONS).max(1);
    MAX_THREADS.store(threads, Ordering::Relaxed);
    MAX_DAEMONS.store(daemons, Ordering::Relaxed);
    MULTITHREAD.store(threads > 1, Ordering::Relaxed);
    MULTIPROCESS.store(daemons > 1, Ordering::Relaxed);
}

thread_local! {
    /// The request this thread is running, for `sys.stdout`/`sys.stderr`.
    static CURRENT: Cell<*mut request_rec> = const { Cell::new(ptr::null_mut()) };
}

/// Log function of the running request's virtual host, else the server: `print()` and
/// `sys.stderr` as they are, Python `logging` records (`with_id`) with the request id at the
/// start of the line.
fn thread_routed_log(with_id: bool) -> LogFn {
    Arc::new(move |l, msg| {
        let r = CURRENT.with(Cell::get);
        if r.is_null() {
            return log_server(ptr::null_mut(), apache_level(l), msg);
        }
        if !with_id {
            return log_request(r, apache_level(l), msg);
        }
        // SAFETY: CURRENT is only set while `r` is the live request of this thread; its
        // log_id was generated when the environ was built.
        let id = text(unsafe { bytes((*r).log_id) });
        log_request(r, apache_level(l), &format!("[{id}] {msg}"))
    })
}

/// Sets up Python in a new child: bootstrap objects, then `WSGIImportScript` preloads.
pub(crate) fn bootstrap_child(g: &GlobalConfig, s: *mut server_rec) {
    let info = python::ProcessInfo {
        threads_per_process: MAX_THREADS.load(Ordering::Relaxed),
        maximum_processes: MAX_DAEMONS.load(Ordering::Relaxed),
    };
    python::ensure_thread_state();
    Python::attach(|py| {
        if let Err(e) = python::bootstrap(
            py,
            g,
            &info,
            thread_routed_log(false),
            thread_routed_log(false),
            thread_routed_log(true),
        ) {
            adapter::log_exception(
                py,
                &e,
                &crate::httpd::main_log(),
                &format!(
                    "{}: mod_rwsgi could not set up Python",
                    Code::PythonInit.as_str()
                ),
            );
            return;
        }
        // Scripts for a daemon group are preloaded by that group's daemons, not here.
        for imp in g
            .import_scripts
            .iter()
            .filter(|i| i.process_group == "%{GLOBAL}")
        {
            match python::load_script(py, &imp.path, None, true, g.case_sensitive) {
                Ok(_) => log_server(
                    s,
                    APLOG_INFO,
                    &format!("imported WSGI script '{}'", imp.path),
                ),
                Err(e) => adapter::log_exception(
                    py,
                    &e,
                    &crate::httpd::main_log(),
                    &format!(
                        "{}: failed to import WSGI script '{}' (WSGIImportScript)",
                        Code::ScriptLoad.as_str(),
                        imp.path
                    ),
                ),
            }
        }
    });
}

// ------------------------------------------------------------------------------------------
// translate_name: claim URLs under a WSGIScriptAlias

pub(crate) unsafe extern "C" fn translate_name(r: *mut request_rec) -> c_int {
    guard("translate_name", DECLINED, || {
        // SAFETY: httpd passes a live request; its server's config slot holds our ServerState.
        let (state, uri, pool, notes) = unsafe {
            let s = (*r).server;
            (
                module_config::<ServerState>((*s).module_config),
                bytes((*r).uri),
                (*r).pool,
                (*r).notes,
            )
        };
        let (Some(state), Some(uri)) = (state, uri) else {
            return DECLINED;
        };
        if state.cfg.aliases.is_empty() || (!uri.is_empty() && uri[0] != b'/') {
            return DECLINED;
        }
        for alias in &state.cfg.aliases {
            let filename: Vec<u8> = match (&alias.pattern, alias.regex_slot) {
                (AliasPattern::Prefix(loc), _) => {
                    let l = environ::alias_matches(uri, loc.as_bytes());
                    if l == 0 {
                        continue;
                    }
                    let rest = if loc == "/" { uri } else { &uri[l..] };
                    [alias.target.as_bytes(), rest].concat()
                }
                (AliasPattern::Regex(_), Some(re)) => {
                    let mut m = [ap_regmatch_t::default(); 10];
                    let t = crate::httpd::cstring(&alias.target);
                    // SAFETY: `re` was compiled by ap_pregcomp in the configuration pool; the
                    // match array has room for the 10 groups we pass.
                    let (target, end) = unsafe {
                        let (re, uri_c) = (re as *const ap_regex_t, (*r).uri);
                        if ap_regexec(re, uri_c, m.len(), m.as_mut_ptr(), 0) != 0 {
                            continue;
                        }
                        let sub = ap_pregsub(pool, t.as_ptr(), uri_c, m.len(), m.as_mut_ptr());
                        match bytes(sub) {
                            Some(b) => (b, m[0].rm_eo.max(0) as usize),
                            None => continue,
                        }
                    };
                    // What the regex matched is SCRIPT_NAME; the rest of the URL follows the
                    // target so httpd's directory walk turns it into PATH_INFO (as mod_wsgi).
                    let end = end.min(uri.len());
                    let rest = if &uri[..end] == b"/" {
                        uri
                    } else {
                        &uri[end..]
                    };
                    [target, rest].concat()
                }
                _ => continue,
            };
            // SAFETY: strings handed to httpd are pool copies; notes is the request's table.
            unsafe {
                (*r).filename = pstr(pool, &filename);
                (*r).handler = HANDLER.as_ptr();
                apr_table_setn(notes, c"alias-forced-type".as_ptr(), HANDLER.as_ptr());
                let o = &alias.options;
                for (key, val) in [
                    (c"mod_wsgi.process_group", &o.process_group),
                    (c"mod_wsgi.application_group", &o.application_group),
                    (c"mod_wsgi.callable_object", &o.callable_object),
                ] {
                    if let Some(v) = val {
                        apr_table_setn(notes, key.as_ptr(), pstr(pool, v.as_bytes()));
                    }
                }
                if let Some(p) = o.pass_authorization {
                    let v = if p { c"1" } else { c"0" };
                    apr_table_setn(notes, c"mod_wsgi.pass_authorization".as_ptr(), v.as_ptr());
                }
            }
            return OK;
        }
        DECLINED
    })
}

// ------------------------------------------------------------------------------------------
// The body source and response sink

struct ApacheBody {
    r: ReqPtr,
}

impl BodySource for ApacheBody {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        read_client_body(self.r.get(), buf)
    }

    fn read_into(&mut self, out: &mut crate::pybytes::BytesWriter) -> io::Result<usize> {
        // SAFETY: ap_get_client_block writes at most `len` bytes at `ptr` and returns how many
        // it wrote (or -1, writing nothing counted); exactly that count is committed. The
        // request is live while its handler runs (see ReqPtr).
        unsafe {
            let (ptr, len) = out.spare_raw();
            let n = body_read_count(rwsgi_shim_read_body(self.r.get(), ptr.cast(), len))?.min(len);
            out.commit_raw(n);
            Ok(n)
        }
    }
}

/// The result of the shim's body read: a count, or -1 for a failed read.
fn body_read_count(n: std::os::raw::c_long) -> io::Result<usize> {
    if n < 0 {
        Err(io::Error::other(
            "the client went away or sent a malformed body",
        ))
    } else {
        Ok(n as usize)
    }
}

/// Reads the next part of the request body (dechunked, never past its end); 0 at the end.
pub(crate) fn read_client_body(r: *mut request_rec, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: the request is live while its handler runs (see ReqPtr); `buf` is writable for
    // its length. ap_get_client_block never reads past the body.
    body_read_count(unsafe { rwsgi_shim_read_body(r, buf.as_mut_ptr().cast(), buf.len()) })
}

pub(crate) struct ApacheResponse {
    r: ReqPtr,
    bb: *mut apr_bucket_brigade,
    sendfile: bool,
    /// Small unflushed body bytes, passed down the filter chain with the next write or
    /// together with the end of the response (one pass of the filters for a small response).
    pending: Vec<u8>,
}

/// Unflushed writes are collected up to this many bytes.
const PENDING_MAX: usize = 8192;

// SAFETY: the brigade belongs to the request (see ReqPtr) and is used by one thread at a time
// (the response state hands the sink out exclusively).
unsafe impl Send for ApacheResponse {}

impl ApacheResponse {
    pub(crate) fn new(r: *mut request_rec, bb: *mut apr_bucket_brigade, sendfile: bool) -> Self {
        ApacheResponse {
            r: ReqPtr(r),
            bb,
            sendfile,
            pending: Vec::new(),
        }
    }

    fn check(&self, rv: apr_status_t) -> io::Result<()> {
        // SAFETY: the request and its connection are live while the handler runs.
        let aborted = unsafe { (*(*self.r.get()).connection).aborted } != 0;
        if rv != APR_SUCCESS as apr_status_t || aborted {
            Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                format!("client connection closed (apr status {rv})"),
            ))
        } else {
            Ok(())
        }
    }
}

impl ApacheResponse {
    /// Sends `len` bytes from `offset` of a file received from a daemon process; the request
    /// takes the descriptor over (closed when the request ends).
    /// Passes buffered body bytes down the filter chain (without flushing).
    fn pass_pending(&mut self) -> io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let data = std::mem::take(&mut self.pending);
        // SAFETY: the request and brigade are live; `data` outlives the call.
        let rv = unsafe {
            rwsgi_shim_pass_data(self.r.get(), self.bb, data.as_ptr().cast(), data.len(), 0)
        };
        self.check(rv)
    }

    pub(crate) fn send_owned_file(
        &mut self,
        fd: std::os::fd::OwnedFd,
        offset: u64,
        len: u64,
    ) -> io::Result<()> {
        use std::os::fd::IntoRawFd;
        self.pass_pending()?;
        let fd = fd.into_raw_fd();
        // SAFETY: the request and brigade are live; the shim owns `fd` from here on (it is
        // closed by a request-pool cleanup, or at once if APR cannot wrap it).
        let rv = unsafe {
            rwsgi_shim_pass_fd(
                self.r.get(),
                self.bb,
                fd,
                offset as apr_off_t,
                len as apr_off_t,
                self.sendfile as c_int,
            )
        };
        self.check(rv)
    }
}

impl ResponseSink for ApacheResponse {
    fn set_head(&mut self, head: &Head) {
        let r = self.r.get();
        // SAFETY: the request is live; every string handed to httpd is a pool copy.
        unsafe {
            let pool = (*r).pool;
            (*r).status = head.status as c_int;
            (*r).status_line = pstr(pool, &latin1_bytes(&head.status_line));
            for (n, v) in &head.headers {
                if n.eq_ignore_ascii_case("content-type") {
                    ap_set_content_type(r, pstr(pool, &latin1_bytes(v)));
                } else if n.eq_ignore_ascii_case("content-length") {
                    if let Some(cl) = head.content_length {
                        ap_set_content_length(r, cl as apr_off_t);
                    }
                } else {
                    apr_table_add(
                        (*r).headers_out,
                        pstr(pool, n.as_bytes()),
                        pstr(pool, &latin1_bytes(v)),
                    );
                }
            }
        }
    }

    fn buffers(&self, len: usize, flush: bool) -> bool {
        !flush && self.pending.len() + len <= PENDING_MAX
    }

    fn write(&mut self, data: &[u8], flush: bool) -> io::Result<()> {
        if self.buffers(data.len(), flush) {
            self.pending.extend_from_slice(data);
            return Ok(());
        }
        self.pass_pending()?;
        // SAFETY: the request and brigade are live; `data` stays valid for the call (the
        // transient bucket is copied by any filter that keeps it).
        let rv = unsafe {
            rwsgi_shim_pass_data(
                self.r.get(),
                self.bb,
                data.as_ptr().cast(),
                data.len(),
                flush as c_int,
            )
        };
        self.check(rv)
    }

    fn send_file(&mut self, fd: RawFd, offset: u64, len: u64) -> io::Result<()> {
        self.pass_pending()?;
        let r = self.r.get();
        // Reopen the file through /proc so httpd owns its own descriptor (with a pool cleanup),
        // which may outlive the Python file object when output is finished asynchronously.
        let path = crate::httpd::cstring(&format!("/proc/self/fd/{fd}"));
        let mut file: *mut apr_file_t = ptr::null_mut();
        let flags = APR_READ
            | if self.sendfile {
                APR_SENDFILE_ENABLED
            } else {
                0
            };
        // SAFETY: apr_file_open writes a new apr_file_t owned by the request pool.
        let rv =
            unsafe { apr_file_open(&mut file, path.as_ptr(), flags, APR_OS_DEFAULT, (*r).pool) };
        if rv != APR_SUCCESS as apr_status_t {
            return Err(io::Error::other(format!(
                "cannot reopen file descriptor {fd} (apr status {rv})"
            )));
        }
        // SAFETY: the request, brigade and file are live; the shim inserts file buckets.
        let rv = unsafe {
            rwsgi_shim_pass_file(r, self.bb, file, offset as apr_off_t, len as apr_off_t)
        };
        self.check(rv)
    }

    fn finish(&mut self, abort: bool) -> io::Result<()> {
        let data = std::mem::take(&mut self.pending);
        // SAFETY: the request and brigade are live; `data` outlives the call (its transient
        // bucket is copied by any filter that keeps it).
        let rv = unsafe {
            rwsgi_shim_finish(
                self.r.get(),
                self.bb,
                data.as_ptr().cast(),
                data.len(),
                abort as c_int,
            )
        };
        if abort { Ok(()) } else { self.check(rv) }
    }
}

/// Header values were validated as latin-1: send them as latin-1 bytes.
fn latin1_bytes(v: &str) -> Vec<u8> {
    v.chars().map(|c| c as u32 as u8).collect()
}

// ------------------------------------------------------------------------------------------
// The handler

/// Settings that apply to this request after the alias options override the directory's.
struct RequestSettings {
    process_group: String,
    application_group: String,
    callable_object: String,
    pass_authorization: bool,
    script_reloading: bool,
    chunked_request: bool,
    map_head_to_get: HeadMode,
    enable_sendfile: bool,
    ignore_activity: bool,
}

fn settings(r: *mut request_rec, d: &DirConfig, facts: &GroupFacts<'_>) -> RequestSettings {
    // SAFETY: the request's notes table is live.
    let notes = unsafe { (*r).notes };
    let note = |k: &CStr| table_get(notes, k).map(|v| String::from_utf8_lossy(v).into_owned());
    let pg = note(c"mod_wsgi.process_group").or_else(|| d.process_group.clone());
    let ag = note(c"mod_wsgi.application_group").or_else(|| d.application_group.clone());
    let co = note(c"mod_wsgi.callable_object").or_else(|| d.callable_object.clone());
    let pa = note(c"mod_wsgi.pass_authorization")
        .map(|v| v == "1")
        .or(d.pass_authorization);
    RequestSettings {
        process_group: environ::expand_group(pg.as_deref().unwrap_or("%{GLOBAL}"), facts),
        // mod_rwsgi's default is the main interpreter, as mod_wsgi-express configures it.
        application_group: environ::expand_group(ag.as_deref().unwrap_or("%{GLOBAL}"), facts),
        callable_object: match co.as_deref() {
            Some(c) if c.starts_with("%{ENV:") => {
                let v = environ::expand_group(c, facts);
                if v.is_empty() {
                    "application".into()
                } else {
                    v
                }
            }
            Some(c) => c.to_string(),
            None => "application".into(),
        },
        pass_authorization: pa.unwrap_or(false),
        script_reloading: d.script_reloading.unwrap_or(true),
        chunked_request: d.chunked_request.unwrap_or(false),
        map_head_to_get: d.map_head_to_get.unwrap_or(HeadMode::Auto),
        enable_sendfile: d.enable_sendfile.unwrap_or(false),
        ignore_activity: d.ignore_activity.unwrap_or(false),
    }
}

fn refuse(r: *mut request_rec, status: c_int, msg: &str) -> c_int {
    log_request(
        r,
        APLOG_ERR,
        &format!("{}: {msg}", Code::RequestRefused.as_str()),
    );
    status
}

pub(crate) unsafe extern "C" fn handler(r: *mut request_rec) -> c_int {
    guard("handler", HTTP_INTERNAL_SERVER_ERROR, || {
        // SAFETY: httpd passes a live request for the duration of the handler hook.
        let h = unsafe { bytes((*r).handler) };
        match h {
            Some(b"wsgi-script") | Some(b"application/x-httpd-wsgi") => handle(r),
            _ => DECLINED,
        }
    })
}

fn handle(r: *mut request_rec) -> c_int {
    // SAFETY: `r` is the live request of this handler call, and its tables, strings,
    // connection and server outlive it.
    let (notes, headers_in, finfo_type, mtime, used_path_info, path_info, filename, per_dir) = unsafe {
        (
            (*r).notes,
            (*r).headers_in,
            (*r).finfo.filetype,
            (*r).finfo.mtime,
            (*r).used_path_info,
            bytes((*r).path_info),
            text(bytes((*r).filename)),
            (*r).per_dir_config,
        )
    };
    let aliased = table_get(notes, c"alias-forced-type") == Some(HANDLER.to_bytes());
    // SAFETY: ap_allow_options reads the request's merged core options.
    if !aliased && unsafe { ap_allow_options(r) } & OPT_EXECCGI == 0 {
        return refuse(
            r,
            HTTP_FORBIDDEN,
            "Options ExecCGI is off in this directory",
        );
    }
    if finfo_type == apr_filetype_e_APR_NOFILE {
        return refuse(
            r,
            HTTP_NOT_FOUND,
            &format!("target WSGI script '{filename}' not found or unable to stat"),
        );
    }
    if finfo_type == apr_filetype_e_APR_DIR {
        return refuse(
            r,
            HTTP_FORBIDDEN,
            &format!("attempt to invoke directory '{filename}' as WSGI application"),
        );
    }
    if used_path_info == AP_REQ_REJECT_PATH_INFO && path_info.is_some_and(|p| !p.is_empty()) {
        return refuse(
            r,
            HTTP_NOT_FOUND,
            "AcceptPathInfo Off disallows the extra path in the URL",
        );
    }
    let no_dir_config = DirConfig::default();
    // SAFETY: per_dir_config is the request's merged directory vector, alive for the request.
    let dcfg: &DirConfig = unsafe { module_config::<DirConfig>(per_dir) }.unwrap_or(&no_dir_config);
    let g = global();

    // Request facts for %{...} expansion.
    let (uri, script_name, path_info_v) = {
        // SAFETY: the request's uri is live.
        let uri = unsafe { bytes((*r).uri) }.unwrap_or(b"").to_vec();
        let (sn, pi) = environ::script_name_and_path_info(&uri, path_info);
        (uri, sn, pi)
    };
    let _ = &uri;
    // SAFETY: the request's server is live.
    let (server_hostname, server_port) = unsafe {
        (
            text(bytes((*(*r).server).server_hostname)),
            ap_get_server_port(r),
        )
    };
    let host_header =
        table_get(headers_in, c"Host").map(|h| String::from_utf8_lossy(h).into_owned());
    // SAFETY: tables of the live request.
    let subprocess_env = unsafe { (*r).subprocess_env };
    let env_lookup = |k: &str| -> Option<String> {
        let key = crate::httpd::cstring(k);
        table_get(notes, &key)
            .or_else(|| table_get(subprocess_env, &key))
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .or_else(|| std::env::var(k).ok())
    };
    let facts = GroupFacts {
        server_hostname: &server_hostname,
        server_port,
        host_header: host_header.as_deref(),
        script_name: &script_name,
        env: &env_lookup,
    };
    let set = settings(r, dcfg, &facts);

    // Request body policy (mod_wsgi's rules).
    if let Some(te) = table_get(headers_in, c"Transfer-Encoding") {
        if !te.eq_ignore_ascii_case(b"chunked") {
            return refuse(
                r,
                HTTP_NOT_IMPLEMENTED,
                &format!(
                    "unexpected Transfer-Encoding '{}'; only chunked is supported",
                    text(Some(te))
                ),
            );
        }
        if !set.chunked_request {
            return refuse(
                r,
                HTTP_LENGTH_REQUIRED,
                "the request body uses chunked transfer encoding, which is off; enable it with \
                 WSGIChunkedRequest On",
            );
        }
    }
    if let Some(cl) = table_get(headers_in, c"Content-Length") {
        let Some(len) = std::str::from_utf8(cl)
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
        else {
            return refuse(
                r,
                HTTP_BAD_REQUEST,
                &format!("invalid Content-Length '{}'", text(Some(cl))),
            );
        };
        // SAFETY: a plain query of the request's LimitRequestBody.
        let limit = unsafe { ap_get_limit_req_body(r) } as u64;
        if limit > 0 && len > limit {
            // Let httpd's own input filter produce the 413.
            // SAFETY: the live request.
            unsafe { ap_discard_request_body(r) };
            return OK;
        }
    }

    if let Some(allowed) = &dcfg.restrict_process
        && !allowed.contains(&set.process_group)
    {
        return refuse(
            r,
            HTTP_INTERNAL_SERVER_ERROR,
            &format!(
                "process group '{}' is not allowed here by WSGIRestrictProcess",
                if set.process_group.is_empty() {
                    "%{GLOBAL}"
                } else {
                    &set.process_group
                }
            ),
        );
    }
    if !set.process_group.is_empty() {
        return serve_remote(r, &set, dcfg, &script_name, &path_info_v, mtime);
    }
    if g.restrict_embedded {
        log_request(
            r,
            APLOG_ERR,
            &format!(
                "{}: embedded mode is disabled by WSGIRestrictEmbedded On",
                Code::EmbeddedRestricted.as_str()
            ),
        );
        return HTTP_INTERNAL_SERVER_ERROR;
    }
    if !python::ready() {
        log_request(
            r,
            APLOG_ERR,
            &format!(
                "{}: Python is not initialised in this httpd child (see the error log at \
                 start-up)",
                Code::PythonInit.as_str()
            ),
        );
        return HTTP_INTERNAL_SERVER_ERROR;
    }
    let req = match prepare(r, &set, dcfg, &script_name, &path_info_v, mtime) {
        Ok(v) => v,
        Err(rc) => return rc,
    };

    python::ensure_thread_state();
    CURRENT.with(|c| c.set(r));
    let rp = ReqPtr(r);
    let req_log: LogFn = Arc::new(move |l, msg| log_request(rp.get(), apache_level(l), msg));
    let (outcome, finish) =
        Python::attach(|py| run_python(py, r, &g, &set, &filename, req, req_log));
    // The end of the response goes through the output filters without the GIL.
    if let Some(f) = finish {
        f.run();
    }
    CURRENT.with(|c| c.set(ptr::null_mut()));
    match outcome {
        Outcome::ServerError => HTTP_INTERNAL_SERVER_ERROR,
        Outcome::Done | Outcome::Aborted => OK,
    }
}

/// Readies the request body and builds the request both modes run: the CGI part of the
/// environ with the trusted proxy headers applied (the `HTTPS` variable is taken out: it
/// becomes `wsgi.url_scheme`) and the typed facts.
fn prepare(
    r: *mut request_rec,
    set: &RequestSettings,
    dcfg: &DirConfig,
    script_name: &[u8],
    path_info: &[u8],
    mtime: apr_time_t,
) -> Result<Request<String>, c_int> {
    // SAFETY: the live request; DECHUNK makes httpd's input filter remove chunk framing.
    let rc = unsafe { ap_setup_client_block(r, REQUEST_CHUNKED_DECHUNK) };
    if rc != OK {
        return Err(rc);
    }
    let mut env = build_environ(r, set, script_name, path_info);
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
    // SAFETY: reads of the live request: its start time, HEAD flag and server identity.
    let (started, head_request, server_id) = unsafe {
        (
            (*r).request_time,
            (*r).header_only != 0,
            (*r).server as usize,
        )
    };
    let meta = RequestMeta {
        head_request,
        https,
        server_id: server_id as u64,
        script_mtime: mtime,
        request_start: started,
        queue_start: started,
        apache_version: running_apache_version(),
    };
    Ok(Request { env, meta })
}

/// Daemon mode: the same request, sent to the group's daemon.
fn serve_remote(
    r: *mut request_rec,
    set: &RequestSettings,
    dcfg: &DirConfig,
    script_name: &[u8],
    path_info: &[u8],
    mtime: apr_time_t,
) -> c_int {
    let Some((generation, index)) = crate::parent::supervisor::group(&set.process_group) else {
        return refuse(
            r,
            HTTP_INTERNAL_SERVER_ERROR,
            &format!(
                "no WSGIDaemonProcess defines process group '{}' (selected by WSGIProcessGroup \
                 or process-group=)",
                set.process_group
            ),
        );
    };
    let req = match prepare(r, set, dcfg, script_name, path_info, mtime) {
        Ok(v) => v,
        Err(rc) => return rc,
    };
    // SAFETY: reading the live request's server's Timeout.
    let timeout = unsafe { (*(*r).server).timeout };
    let timeout = std::time::Duration::from_micros(timeout.max(0) as u64);
    let error_override = dcfg.error_override.unwrap_or(false);
    let group = &generation.groups[index];
    super::daemon_client::run(
        r,
        group,
        generation.secret,
        generation.number,
        req,
        timeout,
        error_override,
        set.enable_sendfile,
    )
}

fn run_python(
    py: Python<'_>,
    r: *mut request_rec,
    g: &GlobalConfig,
    set: &RequestSettings,
    script: &str,
    req: Request<String>,
    log: LogFn,
) -> (Outcome, Option<adapter::Finish>) {
    let Some(app) = python::load_app(
        py,
        script,
        req.script_mtime(),
        set.script_reloading,
        g.case_sensitive,
        &set.callable_object,
        &log,
    ) else {
        return (Outcome::ServerError, None);
    };
    let process = ProcessFacts {
        multithread: MULTITHREAD.load(Ordering::Relaxed),
        multiprocess: MULTIPROCESS.load(Ordering::Relaxed),
        run_once: false,
        daemon: false,
    };
    let body = Box::new(ApacheBody { r: ReqPtr(r) });
    let built = build::environ(py, &req, &process, body, &log, crate::httpd::main_log());
    let head_request = req.meta.head_request;
    recycle_environ(req.env);
    let built = match built {
        Ok(v) => v,
        Err(e) => {
            adapter::log_exception(
                py,
                &e,
                &log,
                &format!("{}: cannot build the environ", Code::AppException.as_str()),
            );
            return (Outcome::ServerError, None);
        }
    };
    // SAFETY: a brigade from the request pool, reused for every write of this response.
    let bb = unsafe { apr_brigade_create((*r).pool, (*(*r).connection).bucket_alloc) };
    let io = RequestIo {
        sink: Box::new(ApacheResponse::new(r, bb, set.enable_sendfile)),
        input: built.input,
        errors: built.errors,
        log,
        script: script.to_string(),
        stream_flush: true,
        head_request,
    };
    adapter::run(py, &app, built.environ, io)
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

pub(crate) fn recycle_environ(mut env: Environ) {
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
    static VERSION: std::sync::OnceLock<[u16; 3]> = std::sync::OnceLock::new();
    *VERSION.get_or_init(|| {
        // SAFETY: reading the running server's description string.
        let desc = text(unsafe { bytes(ap_get_server_description()) });
        let (a, b, c) = environ::apache_version(&desc);
        [a, b, c].map(|v| v.min(u16::MAX as u32) as u16)
    })
}

/// The CGI part of the environ, as mod_wsgi 6 builds it (no PATH_TRANSLATED sub-request, no
/// REMOTE_HOST/REMOTE_IDENT look-ups), plus the `mod_wsgi.*` keys.
fn build_environ(
    r: *mut request_rec,
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
    // SAFETY: `r` is the live request; every pointer read here belongs to it, its connection or
    // its server and outlives this call.
    unsafe {
        let c = (*r).connection;
        let s = (*r).server;
        // Anything other modules put into subprocess_env (SetEnv, mod_rewrite, mod_ssl ...).
        for (k, v) in table_entries((*r).subprocess_env) {
            let k = String::from_utf8_lossy(k);
            if k != "PATH" {
                put(&k, v);
            }
        }
        let from_subprocess_env = len.get();
        for (k, v) in table_entries((*r).headers_in) {
            if let HeaderKey::Key(key) = environ::header_key(k, set.pass_authorization) {
                put(&key, v);
            }
        }
        searched.set(from_subprocess_env);
        put(
            "SERVER_SOFTWARE",
            bytes(ap_get_server_banner()).unwrap_or(b""),
        );
        put(
            "SERVER_NAME",
            bytes(ap_get_server_name_for_url(r)).unwrap_or(b""),
        );
        put("SERVER_ADDR", bytes((*c).local_ip).unwrap_or(b""));
        put("SERVER_PORT", ap_get_server_port(r).to_string().as_bytes());
        put("REMOTE_ADDR", bytes((*r).useragent_ip).unwrap_or(b""));
        put("DOCUMENT_ROOT", bytes(ap_document_root(r)).unwrap_or(b""));
        put(
            "REQUEST_SCHEME",
            bytes(ap_run_http_scheme(r)).unwrap_or(b"http"),
        );
        put("CONTEXT_PREFIX", bytes(ap_context_prefix(r)).unwrap_or(b""));
        put(
            "CONTEXT_DOCUMENT_ROOT",
            bytes(ap_context_document_root(r)).unwrap_or(b""),
        );
        if let Some(a) = bytes((*s).server_admin) {
            put("SERVER_ADMIN", a);
        }
        put("SCRIPT_FILENAME", bytes((*r).filename).unwrap_or(b""));
        put(
            "REMOTE_PORT",
            (*(*c).client_addr).port.to_string().as_bytes(),
        );
        if let Some(u) = bytes((*r).user) {
            put("REMOTE_USER", u);
        }
        if let Some(t) = bytes((*r).ap_auth_type) {
            put("AUTH_TYPE", t);
        }
        let mut first = r;
        while !(*first).prev.is_null() {
            first = (*first).prev;
        }
        if first != r {
            if let Some(u) = bytes((*(*r).prev).uri) {
                put("REDIRECT_URL", u);
            }
            if let Some(a) = bytes((*(*r).prev).args) {
                put("REDIRECT_QUERY_STRING", a);
            }
        }
        put(
            "SERVER_PROTOCOL",
            bytes((*r).protocol).unwrap_or(b"HTTP/1.0"),
        );
        let method = bytes((*r).method).unwrap_or(b"GET");
        let head_to_get = (*r).method_number == M_GET
            && (*r).header_only != 0
            && match set.map_head_to_get {
                HeadMode::On => true,
                HeadMode::Off => false,
                HeadMode::Auto => {
                    let f = (*r).output_filters;
                    !f.is_null()
                        && !(*f).frec.is_null()
                        && (*(*f).frec).ftype < ap_filter_type_AP_FTYPE_PROTOCOL
                }
            };
        put("REQUEST_METHOD", if head_to_get { b"GET" } else { method });
        put("QUERY_STRING", bytes((*r).args).unwrap_or(b""));
        put("REQUEST_URI", bytes((*first).unparsed_uri).unwrap_or(b""));
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
        put(
            "mod_wsgi.request_handler",
            bytes((*r).handler).unwrap_or(b""),
        );
        put("mod_wsgi.handler_script", b"");
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
        put(
            "mod_wsgi.listener_host",
            bytes((*(*c).local_addr).hostname).unwrap_or(b""),
        );
        put(
            "mod_wsgi.listener_port",
            (*(*c).local_addr).port.to_string().as_bytes(),
        );
        put(
            "mod_wsgi.server_pid",
            std::process::id().to_string().as_bytes(),
        );
        if (*r).log_id.is_null() {
            ap_run_generate_log_id(c, r, &mut (*r).log_id);
        }
        put("mod_wsgi.request_id", bytes((*r).log_id).unwrap_or(b""));
        put("mod_wsgi.connection_id", bytes((*c).log_id).unwrap_or(b""));
    }
    env
}
