//! What every part of the httpd side shares, below the hook entries: this module's index and
//! config slots, the panic guard, error-log helpers, the interpreter-wide configuration
//! (`global()`) and pool-owned Rust values. Runs in the httpd parent (configuration) and the
//! httpd children (requests); daemons inherit it through fork (their log functions).

use std::ffi::{CString, c_int, c_void};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::ptr;
use std::sync::atomic::{AtomicPtr, Ordering};
use std::sync::{Arc, Mutex};

use super::ffi::*;
use crate::config::{GlobalConfig, ServerConfig};
use crate::error::Code;
use crate::wsgi::adapter::{Level, LogFn};

/// This module's `module` record, published by `register_hooks` (httpd has assigned its
/// `module_index` by then); null before that.
static MODULE: AtomicPtr<module> = AtomicPtr::new(ptr::null_mut());

/// Called once per load of the module, from its `register_hooks`.
pub(super) fn set_module(m: *mut module) {
    MODULE.store(m, Ordering::Release);
}

/// This module's index in httpd's per-module vectors (`APLOG_NO_MODULE` before registration).
fn module_index() -> c_int {
    let m = MODULE.load(Ordering::Acquire);
    if m.is_null() {
        return -1;
    }
    // SAFETY: `m` is the module record httpd registered; httpd assigns module_index once at
    // load time, before register_hooks, and never writes it again.
    unsafe { (*m).module_index }
}

fn module_ptr() -> *const module {
    MODULE.load(Ordering::Acquire)
}

// ------------------------------------------------------------------------------------------
// Panic guard: no panic may unwind into httpd.

/// Runs `f`, turning a panic into a logged `RW0999` and `default`.
pub(crate) fn guard<T>(what: &str, default: T, f: impl FnOnce() -> T) -> T {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(v) => v,
        Err(payload) => {
            let msg = crate::error::panic_message(payload.as_ref());
            log_server(
                ptr::null_mut(),
                APLOG_CRIT,
                &format!("{}: panic in {what}: {msg}", Code::Panic.as_str()),
            );
            default
        }
    }
}

// ------------------------------------------------------------------------------------------
// Logging

pub(crate) fn cstring(msg: &str) -> CString {
    CString::new(msg.replace('\0', "\\0")).unwrap_or_default()
}

/// Logs to a server's error log (`s` null: the main server).
pub(crate) fn log_server(s: *mut server_rec, level: c_int, msg: &str) {
    let m = cstring(msg);
    // httpd drops lines below warning when no server is given: name the main one.
    // SAFETY: reading httpd's exported pointer to the main server (NULL before it exists).
    let main = unsafe { ap_server_conf };
    let s = if s.is_null() { main } else { s };
    // SAFETY: ap_log_error_ accepts a null server (main server); "%s" with one C string
    // argument matches the variadic call; `m` outlives it.
    unsafe {
        ap_log_error_(
            c"mod_rwsgi".as_ptr(),
            0,
            module_index(),
            level,
            0,
            s,
            c"%s".as_ptr(),
            m.as_ptr(),
        )
    };
}

/// Logs against a request (its virtual host's error log, with the request id).
pub(crate) fn log_request(r: *const request_rec, level: c_int, msg: &str) {
    let m = cstring(msg);
    // SAFETY: `r` is the live request of the calling hook; "%s" matches one C string argument.
    unsafe {
        ap_log_rerror_(
            c"mod_rwsgi".as_ptr(),
            0,
            module_index(),
            level,
            0,
            r,
            c"%s".as_ptr(),
            m.as_ptr(),
        )
    };
}

pub(crate) fn apache_level(l: Level) -> c_int {
    match l {
        Level::Critical => APLOG_CRIT,
        Level::Error => APLOG_ERR,
        Level::Warning => APLOG_WARNING,
        Level::Notice => APLOG_NOTICE,
        Level::Info => APLOG_INFO,
        Level::Debug => APLOG_DEBUG,
    }
}

/// A log function for the virtual host whose `server_rec` address is `id`, if `id` is one of
/// this configuration's servers. A daemon, forked from the same parent, shares those
/// addresses with the httpd children; anything else is refused (never dereferenced).
pub(crate) fn vhost_log(id: usize) -> Option<LogFn> {
    // SAFETY: walking httpd's list of configured servers (read-only after configuration).
    let mut s = unsafe { ap_server_conf };
    while !s.is_null() {
        if s as usize == id {
            return Some(Arc::new(move |l, msg| {
                log_server(id as *mut server_rec, apache_level(l), msg)
            }));
        }
        // SAFETY: `s` is a live server_rec of the list.
        s = unsafe { (*s).next };
    }
    None
}

/// A log function for the main server's error log.
fn server_log_fn() -> LogFn {
    Arc::new(|l, msg| log_server(ptr::null_mut(), apache_level(l), msg))
}

// ------------------------------------------------------------------------------------------
// Configuration objects (Rust values owned by an httpd pool)

/// Per-server state: the parsed config plus the compiled regexes it points at.
pub(crate) struct ServerState {
    pub cfg: ServerConfig,
}

/// Interpreter-wide settings, reset at the start of every configuration read (pre_config).
/// Shared (`Arc`) so each request takes a reference, not a copy of every setting.
pub(super) static GLOBAL: Mutex<Option<Arc<GlobalConfig>>> = Mutex::new(None);

pub(crate) fn global() -> Arc<GlobalConfig> {
    GLOBAL
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone()
        .unwrap_or_default()
}

unsafe extern "C" fn drop_boxed<T>(data: *mut c_void) -> apr_status_t {
    guard("pool cleanup", APR_SUCCESS as apr_status_t, || {
        // SAFETY: `data` is the Box<T> leaked by `pool_box` for this cleanup, dropped once.
        drop(unsafe { Box::from_raw(data as *mut T) });
        APR_SUCCESS as apr_status_t
    })
}

/// Moves `value` into memory owned by `pool`: it is dropped when the pool is cleared.
pub(crate) fn pool_box<T>(pool: *mut apr_pool_t, value: T) -> *mut c_void {
    let raw = Box::into_raw(Box::new(value)) as *mut c_void;
    // SAFETY: `pool` is a live pool handed to us by httpd; the cleanup frees `raw` exactly once.
    unsafe {
        apr_pool_cleanup_register(
            pool,
            raw,
            Some(drop_boxed::<T>),
            Some(apr_pool_cleanup_null),
        )
    };
    raw
}
/// This module's config in a per-module vector (`server_rec::module_config` or
/// `request_rec::per_dir_config`).
///
/// # Safety
/// `vector` must be a live httpd config vector, and `T` the type stored there for this module.
pub(crate) unsafe fn module_config<'a, T>(vector: *mut ap_conf_vector_t) -> Option<&'a T> {
    // SAFETY: per the contract; ap_get_module_config reads one slot of the vector.
    let p = unsafe { ap_get_module_config(vector, module_ptr()) } as *const T;
    // SAFETY: a non-null slot holds the T our create/merge functions stored.
    unsafe { p.as_ref() }
}

pub(crate) fn main_log() -> LogFn {
    server_log_fn()
}
