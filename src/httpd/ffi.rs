//! Raw FFI to httpd and APR (bindgen output over `apache/wrapper.h`) plus the C shim's
//! functions. Used by the httpd parent (configuration) and the httpd child (requests).
#![allow(
    non_camel_case_types,
    non_snake_case,
    non_upper_case_globals,
    dead_code
)]
#![allow(
    clippy::all,
    unsafe_op_in_unsafe_fn,
    clippy::undocumented_unsafe_blocks
)]

include!(concat!(env!("OUT_DIR"), "/bindings.rs"));

unsafe extern "C" {
    pub fn rwsgi_shim_pass_data(
        r: *mut request_rec,
        bb: *mut apr_bucket_brigade,
        data: *const std::os::raw::c_char,
        len: apr_size_t,
        flush: std::os::raw::c_int,
    ) -> apr_status_t;
    pub fn rwsgi_shim_pass_file(
        r: *mut request_rec,
        bb: *mut apr_bucket_brigade,
        file: *mut apr_file_t,
        offset: apr_off_t,
        len: apr_off_t,
    ) -> apr_status_t;
    pub fn rwsgi_shim_pass_fd(
        r: *mut request_rec,
        bb: *mut apr_bucket_brigade,
        fd: std::os::raw::c_int,
        offset: apr_off_t,
        len: apr_off_t,
        sendfile: std::os::raw::c_int,
    ) -> apr_status_t;
    pub fn rwsgi_shim_finish(
        r: *mut request_rec,
        bb: *mut apr_bucket_brigade,
        data: *const std::os::raw::c_char,
        len: apr_size_t,
        abort: std::os::raw::c_int,
    ) -> apr_status_t;
    pub fn rwsgi_shim_read_body(
        r: *mut request_rec,
        buf: *mut std::os::raw::c_char,
        len: apr_size_t,
    ) -> std::os::raw::c_long;
    pub fn rwsgi_shim_client_fd(r: *mut request_rec) -> std::os::raw::c_int;
    pub fn rwsgi_shim_ws_switch(
        r: *mut request_rec,
        accept: *const std::os::raw::c_char,
        protocol: *const std::os::raw::c_char,
    );
    pub fn rwsgi_shim_ws_read(
        r: *mut request_rec,
        bb: *mut apr_bucket_brigade,
        buf: *mut std::os::raw::c_char,
        len: apr_size_t,
    ) -> std::os::raw::c_long;
    pub fn rwsgi_shim_ws_write(
        r: *mut request_rec,
        bb: *mut apr_bucket_brigade,
        data: *const std::os::raw::c_char,
        len: apr_size_t,
    ) -> apr_status_t;
    pub fn rwsgi_shim_sizeof_request_rec() -> apr_size_t;
    pub fn rwsgi_shim_sizeof_server_rec() -> apr_size_t;
    pub fn rwsgi_shim_sizeof_conn_rec() -> apr_size_t;
    pub fn rwsgi_shim_sizeof_sockaddr() -> apr_size_t;
    pub fn rwsgi_shim_sizeof_finfo() -> apr_size_t;
    pub fn rwsgi_shim_sizeof_table_entry() -> apr_size_t;
    pub fn rwsgi_shim_sizeof_worker_score() -> apr_size_t;
    pub fn rwsgi_shim_sizeof_process_score() -> apr_size_t;
    pub fn rwsgi_shim_sizeof_global_score() -> apr_size_t;
    pub fn rwsgi_shim_hook_status(
        f: Option<
            unsafe extern "C" fn(*mut request_rec, std::os::raw::c_int) -> std::os::raw::c_int,
        >,
    );
    pub fn rwsgi_shim_rwrite(
        r: *mut request_rec,
        data: *const std::os::raw::c_char,
        len: apr_size_t,
    ) -> std::os::raw::c_int;
    pub fn rwsgi_shim_status_short() -> std::os::raw::c_int;
}
