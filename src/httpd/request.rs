//! Safe handles over one httpd request (`request_rec`), its tables, its connection and its
//! response output: every raw-pointer access the httpd child's request code needs, each with
//! its invariant stated once here. The code in `child/` is safe Rust over these types. Runs in
//! the httpd child.

use std::ffi::{CStr, c_char, c_int};
use std::io;
use std::marker::PhantomData;
use std::os::fd::{IntoRawFd, OwnedFd, RawFd};
use std::ptr::{self, NonNull};

use super::base::{ServerState, apache_level, cstring, module_config};
use super::ffi::*;
use crate::config::DirConfig;
use crate::wsgi::adapter::Level;

/// Bytes of a C string, or `None` for NULL.
///
/// # Safety
/// `p` must be NULL or a NUL-terminated string that outlives `'a`.
unsafe fn bytes<'a>(p: *const c_char) -> Option<&'a [u8]> {
    // SAFETY: per the contract.
    (!p.is_null()).then(|| unsafe { CStr::from_ptr(p) }.to_bytes())
}

/// The running server's description (`Apache/2.4.71 (Debian) ...`).
pub fn server_description() -> String {
    // SAFETY: httpd's description string is static once the server runs (or NULL before).
    let d = unsafe { bytes(ap_get_server_description()) };
    String::from_utf8_lossy(d.unwrap_or(b"")).into_owned()
}

/// The server banner (`SERVER_SOFTWARE`).
fn server_banner() -> &'static [u8] {
    // SAFETY: httpd's banner string is static once the server runs (or NULL before).
    unsafe { bytes(ap_get_server_banner()) }.unwrap_or(b"")
}

/// What the MPM of this child says about threads and processes: (max threads per process,
/// max processes), each at least 1 (threads 1 for an unthreaded MPM).
pub fn mpm_sizes() -> (i32, i32) {
    let query = |q: c_int| {
        let mut v: c_int = 0;
        // SAFETY: ap_mpm_query writes one int for a valid query code.
        unsafe { ap_mpm_query(q, &mut v) };
        v
    };
    let threaded = query(AP_MPMQ_IS_THREADED) != AP_MPMQ_NOT_SUPPORTED;
    let threads = if threaded {
        query(AP_MPMQ_MAX_THREADS).max(1)
    } else {
        1
    };
    (threads, query(AP_MPMQ_MAX_DAEMONS).max(1))
}

/// Whether this child's MPM is stopping (a graceful restart or a stop): long-lived work such
/// as a WebSocket tunnel should end.
pub fn mpm_stopping() -> bool {
    let mut v: c_int = 0;
    // SAFETY: ap_mpm_query writes one int for a valid query code.
    unsafe { ap_mpm_query(AP_MPMQ_MPM_STATE, &mut v) };
    v == AP_MPMQ_STOPPING
}

/// What `r->finfo` says the target is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileType {
    Missing,
    Directory,
    Other,
}

/// A handle on the request of the running hook (`translate_name` or `handler`).
///
/// It is `Copy` and may cross into the application's threads (`wsgi.input`, log callbacks),
/// but every copy is used only while the hook that created it runs: the objects that outlive
/// it (the WSGI input, the error stream, the response state) are detached when the request
/// ends, and the handler waits for what it started. That is the one invariant every method
/// below relies on; httpd's request functions are never called for one request from two
/// threads at once by this module.
#[derive(Clone, Copy)]
pub struct Request(NonNull<request_rec>);

// SAFETY: see the type's invariant: used only while its hook runs, one thread at a time.
unsafe impl Send for Request {}
// SAFETY: as above.
unsafe impl Sync for Request {}

impl Request {
    /// # Safety
    /// `r` must be the live request handed to the calling hook, and the handle (and its
    /// copies) used only while that hook runs (see the type's invariant).
    pub(crate) unsafe fn from_raw(r: *mut request_rec) -> Option<Request> {
        NonNull::new(r).map(Request)
    }

    fn rec(&self) -> &request_rec {
        // SAFETY: the request is live while its hook runs (the type's invariant).
        unsafe { self.0.as_ref() }
    }

    fn ptr(&self) -> *mut request_rec {
        self.0.as_ptr()
    }

    /// The `request_rec`'s address, for `environ['apache.request_rec']`
    /// (`WSGIPassApacheRequest On`): code that uses it must do so while the request runs.
    pub fn address(&self) -> *mut std::ffi::c_void {
        self.ptr().cast()
    }

    /// A C string field of the request (or its connection/server), as bytes.
    fn field(&self, p: *const c_char) -> Option<&[u8]> {
        // SAFETY: the request's strings live in its pool (or its connection's/server's),
        // which outlives the hook and so any borrow of `self`.
        unsafe { bytes(p) }
    }

    /// A pool copy of `s`, for strings httpd keeps a pointer to.
    fn pool_copy(&self, s: &[u8]) -> *mut c_char {
        // SAFETY: apr_pstrmemdup copies `s.len()` bytes into the live request pool and
        // NUL-terminates the copy.
        unsafe { apr_pstrmemdup(self.rec().pool, s.as_ptr().cast(), s.len()) }
    }

    fn conn(&self) -> &conn_rec {
        // SAFETY: a live request always has its live connection.
        unsafe { &*self.rec().connection }
    }

    fn server(&self) -> &server_rec {
        // SAFETY: a live request always has its (configuration-lifetime) server.
        unsafe { &*self.rec().server }
    }

    // --- the client and its authentication

    /// Sets the timeout of the client connection's socket for the writes that follow
    /// (`response-socket-timeout`); returns the previous one for [`Self::restore_client_timeout`].
    pub fn set_client_timeout(&self, timeout: std::time::Duration) -> Option<i64> {
        let us = i64::try_from(timeout.as_micros()).unwrap_or(i64::MAX);
        // SAFETY: the request's live connection; ap_get_conn_socket returns its socket (or
        // NULL), whose timeout APR reads and sets.
        unsafe {
            let sock = ap_get_conn_socket(self.rec().connection);
            if sock.is_null() {
                return None;
            }
            let mut old: apr_interval_time_t = 0;
            if apr_socket_timeout_get(sock, &mut old) != APR_SUCCESS as apr_status_t {
                return None;
            }
            apr_socket_timeout_set(sock, us);
            Some(old)
        }
    }

    /// Puts back the client socket's timeout [`Self::set_client_timeout`] replaced.
    pub fn restore_client_timeout(&self, old: i64) {
        // SAFETY: as in set_client_timeout.
        unsafe {
            let sock = ap_get_conn_socket(self.rec().connection);
            if !sock.is_null() {
                apr_socket_timeout_set(sock, old);
            }
        }
    }

    /// The authenticated user (`r->user`), if any.
    pub fn user(&self) -> Option<&[u8]> {
        self.field(self.rec().user)
    }

    /// Sets the authenticated user (an authn provider's answer; `REMOTE_USER` from then on).
    pub fn set_user(&self, name: &[u8]) {
        let copy = self.pool_copy(name);
        // SAFETY: the request is live and this hook's alone (the type's invariant); the copy
        // lives in the request pool, as httpd expects of r->user.
        unsafe { (*self.ptr()).user = copy };
    }

    /// A copy of `s` in the request pool that httpd may keep (an authn provider's realm hash).
    pub(crate) fn pool_string(&self, s: &[u8]) -> *mut c_char {
        self.pool_copy(s)
    }

    /// The client's host name when `HostnameLookups` found one, else its address (what
    /// mod_wsgi hands `allow_access`).
    pub fn remote_host(&self) -> Vec<u8> {
        // SAFETY: a live request's connection and per-directory configuration; REMOTE_HOST
        // returns NULL or a string in the connection pool.
        let host = unsafe {
            ap_get_remote_host(
                self.rec().connection,
                self.rec().per_dir_config.cast(),
                REMOTE_HOST,
                ptr::null_mut(),
            )
        };
        self.field(host)
            .or_else(|| self.field(self.rec().useragent_ip))
            .unwrap_or(b"")
            .to_vec()
    }

    // --- identity and logging

    /// The virtual host's identity (its `server_rec` address), for routing a daemon's lines.
    pub fn server_id(&self) -> usize {
        self.rec().server as usize
    }

    /// Logs against the request (its virtual host's error log, with the request id).
    pub fn log(&self, level: Level, msg: &str) {
        super::base::log_request(self.ptr(), apache_level(level), msg);
    }

    /// Logs `[request id] msg` against the request (Python `logging` records).
    pub fn log_with_id(&self, level: Level, msg: &str) {
        let id = String::from_utf8_lossy(self.field(self.rec().log_id).unwrap_or(b""));
        self.log(level, &format!("[{id}] {msg}"));
    }

    // --- configuration

    /// This module's per-server state for the request's virtual host.
    pub fn server_state(&self) -> Option<&ServerState> {
        // SAFETY: the server's config vector is live for the configuration's life; our slot
        // holds the ServerState create/merge_server_config stored.
        unsafe { module_config::<ServerState>(self.server().module_config) }
    }

    /// This module's merged per-directory configuration for the request.
    pub fn dir_config(&self) -> Option<&DirConfig> {
        // SAFETY: per_dir_config is the request's merged vector; our slot holds the DirConfig
        // create/merge_dir_config stored.
        unsafe { module_config::<DirConfig>(self.rec().per_dir_config) }
    }

    /// `Options ExecCGI` is on for the request's directory.
    pub fn exec_cgi_allowed(&self) -> bool {
        // SAFETY: ap_allow_options reads the live request's merged core options.
        (unsafe { ap_allow_options(self.ptr()) } & OPT_EXECCGI) != 0
    }

    /// `LimitRequestBody` for the request (0: none).
    pub fn body_limit(&self) -> u64 {
        // SAFETY: a plain query of the live request's configuration.
        unsafe { ap_get_limit_req_body(self.ptr()) as u64 }
    }

    /// The virtual host's `Timeout`, in microseconds.
    pub fn server_timeout_us(&self) -> i64 {
        self.server().timeout
    }

    /// The virtual host's `ServerName`.
    pub fn server_hostname(&self) -> Option<&[u8]> {
        self.field(self.server().server_hostname)
    }

    // --- request fields

    pub fn uri(&self) -> Option<&[u8]> {
        self.field(self.rec().uri)
    }

    /// The host the client asked for, as httpd parsed it (lower case, without the port).
    pub fn hostname(&self) -> Option<&[u8]> {
        self.field(self.rec().hostname)
    }

    pub fn filename(&self) -> Option<&[u8]> {
        self.field(self.rec().filename)
    }

    pub fn path_info(&self) -> Option<&[u8]> {
        self.field(self.rec().path_info)
    }

    pub fn handler(&self) -> Option<&[u8]> {
        self.field(self.rec().handler)
    }

    /// A HEAD request (httpd sends no body).
    pub fn header_only(&self) -> bool {
        self.rec().header_only != 0
    }

    /// The response status httpd has for the request so far (`r->status`).
    pub fn status(&self) -> c_int {
        self.rec().status
    }

    /// When httpd read the request line (µs since the epoch).
    pub fn request_time(&self) -> i64 {
        self.rec().request_time
    }

    /// Writes `data` into the response the way mod_status's own sections do (`ap_rwrite`).
    pub fn rwrite(&self, data: &[u8]) {
        // SAFETY: the live request, on its handler's thread; `data` outlives the call (httpd
        // copies it into its buffer).
        unsafe { rwsgi_shim_rwrite(self.ptr(), data.as_ptr().cast(), data.len()) };
    }

    /// Response body bytes httpd has sent so far (`r->bytes_sent`).
    pub fn bytes_sent(&self) -> u64 {
        u64::try_from(self.rec().bytes_sent).unwrap_or(0)
    }

    /// Request body bytes read so far (`r->read_length`).
    pub fn read_length(&self) -> u64 {
        u64::try_from(self.rec().read_length).unwrap_or(0)
    }

    /// What the target file is, from httpd's stat.
    pub fn file_type(&self) -> FileType {
        let t = self.rec().finfo.filetype;
        if t == apr_filetype_e_APR_NOFILE {
            FileType::Missing
        } else if t == apr_filetype_e_APR_DIR {
            FileType::Directory
        } else {
            FileType::Other
        }
    }

    /// The target file's modification time (µs since the epoch).
    pub fn file_mtime(&self) -> i64 {
        self.rec().finfo.mtime
    }

    /// `AcceptPathInfo Off` applies to the request.
    pub fn rejects_path_info(&self) -> bool {
        self.rec().used_path_info == AP_REQ_REJECT_PATH_INFO
    }

    /// The server port as httpd reports it for the request (`UseCanonicalName` rules).
    pub fn server_port(&self) -> u16 {
        // SAFETY: a plain query of the live request.
        unsafe { ap_get_server_port(self.ptr()) }
    }

    // --- tables

    fn table(&self, t: *mut apr_table_t) -> Table<'_> {
        Table(NonNull::new(t), PhantomData)
    }

    pub fn notes(&self) -> Table<'_> {
        self.table(self.rec().notes)
    }

    pub fn headers_in(&self) -> Table<'_> {
        self.table(self.rec().headers_in)
    }

    pub fn subprocess_env(&self) -> Table<'_> {
        self.table(self.rec().subprocess_env)
    }

    /// Sets a note httpd and later hooks read (the value is copied into the request pool).
    pub fn set_note(&self, key: &'static CStr, value: &[u8]) {
        let v = self.pool_copy(value);
        // SAFETY: notes is the live request's table; the key is static and the value a pool
        // copy, both outliving the table.
        unsafe { apr_table_setn(self.rec().notes, key.as_ptr(), v) };
    }

    /// Points the request at `filename` with `handler` (translate_name's claim).
    pub fn claim(&self, filename: &[u8], handler: &'static CStr) {
        let f = self.pool_copy(filename);
        // SAFETY: only this hook writes the request now; the strings outlive the request.
        unsafe {
            (*self.ptr()).filename = f;
            (*self.ptr()).handler = handler.as_ptr();
        }
    }

    /// Runs an alias regex (compiled by `ap_pregcomp` into the configuration pool; its address
    /// is what the configuration stored) against the URI. On a match: `template` with `$N`
    /// substituted, and where the match ends in the URI.
    pub fn alias_regex(&self, regex: usize, template: &str) -> Option<(&[u8], usize)> {
        let mut m = [ap_regmatch_t::default(); 10];
        let t = cstring(template);
        let uri = self.rec().uri;
        if uri.is_null() {
            return None;
        }
        let re = regex as *const ap_regex_t;
        // SAFETY: `re` is a regex compiled into the configuration pool (alive while the
        // configuration is); the match array has room for the groups passed; the URI is the
        // request's NUL-terminated string.
        if unsafe { ap_regexec(re, uri, m.len(), m.as_mut_ptr(), 0) } != 0 {
            return None;
        }
        // SAFETY: as above; ap_pregsub allocates the result in the live request pool.
        let sub = unsafe { ap_pregsub(self.rec().pool, t.as_ptr(), uri, m.len(), m.as_mut_ptr()) };
        Some((self.field(sub)?, m[0].rm_eo.max(0) as usize))
    }

    // --- request body

    /// Prepares reading the body (dechunked by httpd's input filter); Err: the status to
    /// answer.
    pub fn setup_body(&self) -> Result<(), c_int> {
        // SAFETY: the live request; DECHUNK makes httpd's input filter remove chunk framing.
        let rc = unsafe { ap_setup_client_block(self.ptr(), REQUEST_CHUNKED_DECHUNK) };
        if rc == OK { Ok(()) } else { Err(rc) }
    }

    /// Lets httpd read and drop the body (its input filter answers 413 past the limit).
    pub fn discard_body(&self) {
        // SAFETY: the live request.
        unsafe { ap_discard_request_body(self.ptr()) };
    }

    /// Reads the next part of the body (never past its end); 0 at the end.
    pub fn read_body(&self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: the live request; `buf` is writable for its length. ap_get_client_block never
        // reads past the body.
        body_read_count(unsafe {
            rwsgi_shim_read_body(self.ptr(), buf.as_mut_ptr().cast(), buf.len())
        })
    }

    /// Reads the next part of the body (at most `max` bytes) onto the end of `out`, into its
    /// spare capacity (nothing is zeroed first); the count, `Ok(0)` at the end.
    pub fn read_body_append(&self, out: &mut Vec<u8>, max: usize) -> io::Result<usize> {
        out.reserve(max);
        let spare = out.spare_capacity_mut();
        let len = spare.len().min(max);
        // SAFETY: ap_get_client_block writes at most `len` bytes into the vector's spare
        // capacity and returns how many it wrote (or -1, counted as nothing); exactly that
        // count becomes part of the vector.
        unsafe {
            let n = body_read_count(rwsgi_shim_read_body(
                self.ptr(),
                spare.as_mut_ptr().cast(),
                len,
            ))?
            .min(len);
            out.set_len(out.len() + n);
            Ok(n)
        }
    }

    /// Reads the next part of the body into the unwritten part of a new `bytes` object.
    pub fn read_body_into(&self, out: &mut crate::pybytes::BytesWriter) -> io::Result<usize> {
        // SAFETY: ap_get_client_block writes at most `len` bytes at `p` (the writer's spare
        // part, borrowed for the call) and returns how many it wrote, or -1 having written
        // nothing counted; exactly that count is committed.
        unsafe {
            let (p, len) = out.spare_raw();
            let n = body_read_count(rwsgi_shim_read_body(self.ptr(), p.cast(), len))?.min(len);
            out.commit_raw(n);
            Ok(n)
        }
    }

    // --- what the environ is built from

    /// The facts of the request's connection, server and request chain that the CGI part of
    /// the environ is built from (mod_wsgi 6's set).
    pub fn cgi(&self) -> Cgi<'_> {
        let p = self.ptr();
        // Before any reference to the request is taken: httpd writes the field.
        // SAFETY: generates the live request's log id into its own field (pool memory); no
        // reference to the request is alive during the write.
        unsafe {
            if (*p).log_id.is_null() {
                ap_run_generate_log_id((*p).connection, p, &mut (*p).log_id);
            }
        }
        let (r, c, s) = (self.rec(), self.conn(), self.server());
        let mut first = r as *const request_rec;
        // SAFETY: the chain of earlier requests (internal redirects) is live with this one.
        unsafe {
            while !(*first).prev.is_null() {
                first = (*first).prev;
            }
        }
        // SAFETY: as above: `first` and `r.prev` are live requests of the chain.
        let (first_uri, prev) = unsafe {
            (
                bytes((*first).unparsed_uri),
                (!r.prev.is_null()).then(|| (bytes((*r.prev).uri), bytes((*r.prev).args))),
            )
        };
        let output_below_protocol = {
            let f = r.output_filters;
            // SAFETY: the request's output filter chain and its filter records are live.
            unsafe {
                !f.is_null()
                    && !(*f).frec.is_null()
                    && (*(*f).frec).ftype < ap_filter_type_AP_FTYPE_PROTOCOL
            }
        };
        // SAFETY: these httpd functions only read the live request and return strings in
        // its pool or static ones; the addresses are the connection's live sockaddrs.
        unsafe {
            Cgi {
                server_software: server_banner(),
                server_name: bytes(ap_get_server_name_for_url(p)),
                server_addr: bytes(c.local_ip),
                server_port: ap_get_server_port(p),
                remote_addr: bytes(r.useragent_ip),
                document_root: bytes(ap_document_root(p)),
                request_scheme: bytes(ap_run_http_scheme(p)),
                context_prefix: bytes(ap_context_prefix(p)),
                context_document_root: bytes(ap_context_document_root(p)),
                server_admin: bytes(s.server_admin),
                script_filename: bytes(r.filename),
                remote_port: (*c.client_addr).port,
                remote_user: bytes(r.user),
                auth_type: bytes(r.ap_auth_type),
                redirected: prev.is_some(),
                redirect_url: prev.and_then(|p| p.0),
                redirect_query: prev.and_then(|p| p.1),
                protocol: bytes(r.protocol),
                method: bytes(r.method),
                method_is_get: r.method_number == M_GET,
                header_only: r.header_only != 0,
                output_below_protocol,
                query: bytes(r.args),
                request_uri: first_uri,
                handler: bytes(r.handler),
                listener_host: bytes((*c.local_addr).hostname),
                listener_port: (*c.local_addr).port,
                request_id: bytes(r.log_id),
                connection_id: bytes(c.log_id),
                _req: PhantomData,
            }
        }
    }

    // --- response

    /// The client socket's descriptor, to watch for the client going away (`None` on an
    /// HTTP/2 stream, which has no socket of its own).
    pub fn client_fd(&self) -> Option<std::os::fd::RawFd> {
        // SAFETY: the live request; the shim only reads its connection's fields.
        let fd = unsafe { rwsgi_shim_client_fd(self.ptr()) };
        (fd >= 0).then_some(fd)
    }

    /// The client has gone away.
    pub fn aborted(&self) -> bool {
        self.conn().aborted != 0
    }

    /// Sets the status, reason and headers (values as latin-1 bytes; copied into the pool).
    pub fn set_head(&self, status: u16, status_line: &[u8], headers: &[(&str, Vec<u8>)]) {
        let p = self.ptr();
        let line = self.pool_copy(status_line);
        // SAFETY: only the handler's thread writes the response head; every string handed
        // to httpd is a pool copy.
        unsafe {
            (*p).status = c_int::from(status);
            (*p).status_line = line;
        }
        if !headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case("content-type"))
        {
            // The application gave none: none is sent (not the script file's MIME type, which
            // mod_mime set while httpd mapped the URL to the script).
            // SAFETY: as below; a NULL type is how httpd says "no Content-Type".
            unsafe { ap_set_content_type(p, std::ptr::null()) };
        }
        for (name, value) in headers {
            let v = self.pool_copy(value);
            // SAFETY: as above; headers_out is the request's table.
            unsafe {
                if name.eq_ignore_ascii_case("content-type") {
                    ap_set_content_type(p, v);
                } else {
                    apr_table_add((*p).headers_out, self.pool_copy(name.as_bytes()), v);
                }
            }
        }
    }

    /// Sets the response's Content-Length.
    pub fn set_content_length(&self, len: u64) {
        // SAFETY: the live request, written by the handler's thread only.
        unsafe { ap_set_content_length(self.ptr(), len as apr_off_t) };
    }
}

/// Reads of `rwsgi_shim_read_body`: a count, or -1 for a failed read.
fn body_read_count(n: std::os::raw::c_long) -> io::Result<usize> {
    if n < 0 {
        Err(io::Error::other(
            "the client went away or sent a malformed body",
        ))
    } else {
        Ok(n as usize)
    }
}

/// The request facts the CGI environ is built from (see `Request::cgi`); strings borrow the
/// request's pool.
pub struct Cgi<'r> {
    pub server_software: &'r [u8],
    pub server_name: Option<&'r [u8]>,
    pub server_addr: Option<&'r [u8]>,
    pub server_port: u16,
    pub remote_addr: Option<&'r [u8]>,
    pub document_root: Option<&'r [u8]>,
    pub request_scheme: Option<&'r [u8]>,
    pub context_prefix: Option<&'r [u8]>,
    pub context_document_root: Option<&'r [u8]>,
    pub server_admin: Option<&'r [u8]>,
    pub script_filename: Option<&'r [u8]>,
    pub remote_port: u16,
    pub remote_user: Option<&'r [u8]>,
    pub auth_type: Option<&'r [u8]>,
    /// An internal redirect: the earlier request's URL and query follow.
    pub redirected: bool,
    pub redirect_url: Option<&'r [u8]>,
    pub redirect_query: Option<&'r [u8]>,
    pub protocol: Option<&'r [u8]>,
    pub method: Option<&'r [u8]>,
    pub method_is_get: bool,
    pub header_only: bool,
    /// The first output filter is below the protocol level (no filter would turn a GET body
    /// into a HEAD answer): `WSGIMapHEADToGET Auto` maps HEAD to GET then.
    pub output_below_protocol: bool,
    pub query: Option<&'r [u8]>,
    /// The unparsed URI of the first request of the chain.
    pub request_uri: Option<&'r [u8]>,
    pub handler: Option<&'r [u8]>,
    pub listener_host: Option<&'r [u8]>,
    pub listener_port: u16,
    pub request_id: Option<&'r [u8]>,
    pub connection_id: Option<&'r [u8]>,
    _req: PhantomData<&'r Request>,
}

/// An httpd table of the request (notes, headers, subprocess_env); absent tables are empty.
#[derive(Clone, Copy)]
pub struct Table<'r>(Option<NonNull<apr_table_t>>, PhantomData<&'r Request>);

impl<'r> Table<'r> {
    /// The first value of `key` (case-insensitive, as httpd's tables are).
    pub fn get(&self, key: &CStr) -> Option<&'r [u8]> {
        let t = self.0?;
        // SAFETY: a live table of the request; its values live as long as the request pool.
        unsafe { bytes(apr_table_get(t.as_ptr(), key.as_ptr())) }
    }

    /// The first value of `key` given as text.
    pub fn get_str(&self, key: &str) -> Option<&'r [u8]> {
        self.get(&cstring(key))
    }

    /// Every entry, in order (entries with a NULL key or value are skipped).
    pub fn entries(&self) -> Vec<(&'r [u8], &'r [u8])> {
        let Some(t) = self.0 else {
            return Vec::new();
        };
        // SAFETY: apr_table_elts exposes the live table's array of apr_table_entry_t, live
        // with the request pool.
        unsafe {
            let arr = apr_table_elts(t.as_ptr());
            let elts = (*arr).elts as *const apr_table_entry_t;
            (0..(*arr).nelts as usize)
                .filter_map(|i| {
                    let e = &*elts.add(i);
                    Some((bytes(e.key)?, bytes(e.val)?))
                })
                .collect()
        }
    }
}

/// The response body's way down httpd's output filters: one reused brigade of the request.
pub struct Output {
    req: Request,
    bb: NonNull<apr_bucket_brigade>,
}

// SAFETY: the brigade belongs to the request and follows the request's invariant (used by one
// thread at a time while the handler runs: the response state hands the output out
// exclusively).
unsafe impl Send for Output {}

impl Output {
    pub fn new(req: Request) -> Output {
        let r = req.rec();
        // SAFETY: a brigade from the live request's pool and its connection's allocator.
        let bb = unsafe { apr_brigade_create(r.pool, (*r.connection).bucket_alloc) };
        Output {
            req,
            bb: NonNull::new(bb).expect("apr_brigade_create never returns NULL"),
        }
    }

    fn check(&self, rv: apr_status_t) -> io::Result<()> {
        if rv != APR_SUCCESS as apr_status_t || self.req.aborted() {
            Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                format!("client connection closed (apr status {rv})"),
            ))
        } else {
            Ok(())
        }
    }

    /// Passes `data` (then a flush bucket if `flush`) down the filters.
    pub fn pass_data(&mut self, data: &[u8], flush: bool) -> io::Result<()> {
        // SAFETY: the request and brigade are live; `data` stays valid for the call (the
        // transient bucket is copied by any filter that keeps it).
        let rv = unsafe {
            rwsgi_shim_pass_data(
                self.req.ptr(),
                self.bb.as_ptr(),
                data.as_ptr().cast(),
                data.len(),
                c_int::from(flush),
            )
        };
        self.check(rv)
    }

    /// Sends `len` bytes from `offset` of the open file `fd` (which the caller keeps): httpd
    /// reopens it through /proc so it owns its own descriptor, which may outlive the caller's.
    pub fn pass_file(
        &mut self,
        fd: RawFd,
        offset: u64,
        len: u64,
        sendfile: bool,
    ) -> io::Result<()> {
        let path = cstring(&format!("/proc/self/fd/{fd}"));
        let mut file: *mut apr_file_t = ptr::null_mut();
        let flags = APR_READ | if sendfile { APR_SENDFILE_ENABLED } else { 0 };
        // SAFETY: apr_file_open writes a new apr_file_t owned by the live request pool.
        let rv = unsafe {
            apr_file_open(
                &mut file,
                path.as_ptr(),
                flags,
                APR_OS_DEFAULT,
                self.req.rec().pool,
            )
        };
        if rv != APR_SUCCESS as apr_status_t {
            return Err(io::Error::other(format!(
                "cannot reopen file descriptor {fd} (apr status {rv})"
            )));
        }
        // SAFETY: the request, brigade and file are live; the shim inserts file buckets.
        let rv = unsafe {
            rwsgi_shim_pass_file(
                self.req.ptr(),
                self.bb.as_ptr(),
                file,
                offset as apr_off_t,
                len as apr_off_t,
            )
        };
        self.check(rv)
    }

    /// Sends `len` bytes from `offset` of a file received from a daemon process; the request
    /// takes the descriptor over (closed when the request ends).
    pub fn pass_owned_file(
        &mut self,
        fd: OwnedFd,
        offset: u64,
        len: u64,
        sendfile: bool,
    ) -> io::Result<()> {
        let fd = fd.into_raw_fd();
        // SAFETY: the request and brigade are live; the shim owns `fd` from here on (closed by
        // a request-pool cleanup, or at once if APR cannot wrap it).
        let rv = unsafe {
            rwsgi_shim_pass_fd(
                self.req.ptr(),
                self.bb.as_ptr(),
                fd,
                offset as apr_off_t,
                len as apr_off_t,
                c_int::from(sendfile),
            )
        };
        self.check(rv)
    }

    /// Ends the response after the last `data`: a clean end, or (`abort`) one the client sees
    /// as truncated.
    pub fn finish(&mut self, data: &[u8], abort: bool) -> io::Result<()> {
        // SAFETY: the request and brigade are live; `data` outlives the call (its transient
        // bucket is copied by any filter that keeps it).
        let rv = unsafe {
            rwsgi_shim_finish(
                self.req.ptr(),
                self.bb.as_ptr(),
                data.as_ptr().cast(),
                data.len(),
                c_int::from(abort),
            )
        };
        if abort { Ok(()) } else { self.check(rv) }
    }
}

/// A WebSocket's tunnel over the request's connection, after the 101: bytes from the client
/// read through the connection's input filters without waiting, bytes to it written through
/// its output filters and flushed (mod_ssl and the like stay in the path). Its brigade and
/// error check are the response `Output`'s.
pub struct Tunnel {
    out: Output,
}

impl Request {
    /// Answers the WebSocket handshake with the 101 (`accept`, the chosen subprotocol and the
    /// application's headers) and turns the connection into a tunnel.
    pub fn switch_to_websocket(
        &self,
        accept: &str,
        protocol: Option<&[u8]>,
        headers: &[(Vec<u8>, Vec<u8>)],
    ) -> Tunnel {
        let p = self.ptr();
        for (name, value) in headers {
            // SAFETY: the live request, written by the handler's thread only; pool copies.
            unsafe {
                apr_table_add(
                    (*p).headers_out,
                    self.pool_copy(name),
                    self.pool_copy(value),
                )
            };
        }
        let accept = self.pool_copy(accept.as_bytes());
        let protocol = protocol.map_or(ptr::null_mut(), |v| self.pool_copy(v));
        // SAFETY: the live request; NUL-terminated pool copies.
        unsafe { rwsgi_shim_ws_switch(p, accept, protocol) };
        Tunnel {
            out: Output::new(*self),
        }
    }
}

impl Tunnel {
    /// What the client has sent, without waiting: `Ok(0)` when nothing is there yet,
    /// `UnexpectedEof` when the client closed the connection (or reading failed).
    pub fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: the live request and its brigade; `buf` is writable for its length.
        let n = unsafe {
            rwsgi_shim_ws_read(
                self.out.req.ptr(),
                self.out.bb.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        };
        if n < 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the client closed the connection",
            ));
        }
        Ok(n as usize)
    }

    /// Writes `data` to the client and flushes it.
    pub fn write(&mut self, data: &[u8]) -> io::Result<()> {
        // SAFETY: the live request and its brigade; `data` outlives the call (transient
        // bucket, written before the brigade is emptied).
        let rv = unsafe {
            rwsgi_shim_ws_write(
                self.out.req.ptr(),
                self.out.bb.as_ptr(),
                data.as_ptr().cast(),
                data.len(),
            )
        };
        self.out.check(rv)
    }

    /// The client socket's descriptor, to poll.
    pub fn client_fd(&self) -> Option<RawFd> {
        self.out.req.client_fd()
    }

    /// The tunnel is over: nothing more goes to the client on this connection (httpd's end
    /// of the request writes no response after the 101; the connection closes).
    pub fn finish(self) {
        // SAFETY: the live request's connection, written by the handler's thread only.
        unsafe { (*self.out.req.rec().connection).aborted = 1 };
    }
}
