//! `Pool`: a safe handle on an APR pool that httpd hands us (pconf, or the process pool), used
//! by the httpd parent: closures run at the pool's cleanup, paths resolved into the pool, and
//! byte slots kept in the process pool's userdata (which survives restarts and the module's
//! unload). Runs in the httpd parent (post_config, check_config, pool cleanups).

use std::ffi::{CStr, c_char, c_void};
use std::marker::PhantomData;
use std::ptr;

use super::base::{cstring, guard};
use super::ffi::*;

/// A pool that lives at least as long as every copy of the handle is used: httpd's pconf (one
/// configuration generation) or its process pool (the whole parent). Not `Send`: APR pools are
/// not synchronised.
#[derive(Clone, Copy)]
pub(crate) struct Pool {
    raw: *mut apr_pool_t,
    _not_send: PhantomData<*mut ()>,
}

impl Pool {
    /// # Safety
    /// `raw` must be a live pool that outlives every use of the returned handle and of its
    /// copies (httpd's pconf inside the configuration hooks, whose handles end up only in
    /// values that pconf itself owns, or the process pool).
    pub(crate) unsafe fn from_raw(raw: *mut apr_pool_t) -> Pool {
        Pool {
            raw,
            _not_send: PhantomData,
        }
    }

    pub(super) fn as_ptr(self) -> *mut apr_pool_t {
        self.raw
    }

    /// Runs `f` once when the pool is cleared or destroyed (cleanups run last-registered
    /// first). A panic in `f` is logged as a panic in `what`, never unwound into httpd.
    pub(crate) fn on_cleanup(self, what: &'static str, f: impl FnOnce() + Send + 'static) {
        let boxed: Box<Cleanup> = Box::new(Cleanup {
            what,
            f: Box::new(f),
        });
        let data = Box::into_raw(boxed) as *const c_void;
        // SAFETY: the pool is live (type invariant); `run_cleanup` is the only consumer of
        // `data`, and APR calls a registered cleanup at most once (at clear or destroy). The
        // child-cleanup is the no-op, so a fork (exec-less) never runs it twice.
        unsafe {
            apr_pool_cleanup_register(
                self.raw,
                data,
                Some(run_cleanup),
                Some(apr_pool_cleanup_null),
            )
        };
    }

    /// `path` resolved against ServerRoot (`ap_server_root_relative`), as text.
    pub(crate) fn server_root_relative(self, path: &str) -> String {
        let c = cstring(path);
        // SAFETY: the pool is live (type invariant); `c` is NUL-terminated and outlives the
        // call; the result is a NUL-terminated string in the pool (or NULL), copied at once.
        text(unsafe { ap_server_root_relative(self.raw, c.as_ptr()) })
    }

    /// `name` resolved inside DefaultRuntimeDir (`ap_runtime_dir_relative`), as text.
    pub(crate) fn runtime_dir_relative(self, name: &str) -> String {
        let c = cstring(name);
        // SAFETY: as in `server_root_relative`.
        text(unsafe { ap_runtime_dir_relative(self.raw, c.as_ptr()) })
    }
}

/// A NUL-terminated string returned by httpd (or NULL), copied.
fn text(p: *const c_char) -> String {
    if p.is_null() {
        return String::new();
    }
    // SAFETY: `p` is non-NULL and httpd returns NUL-terminated strings from these functions;
    // the bytes are copied before the caller's pool can be cleared.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

/// A closure registered by `Pool::on_cleanup`, with the name its panic is logged under.
struct Cleanup {
    what: &'static str,
    f: Box<dyn FnOnce() + Send>,
}

unsafe extern "C" fn run_cleanup(data: *mut c_void) -> apr_status_t {
    // SAFETY: `data` is the Box<Cleanup> leaked by `on_cleanup` for this cleanup; APR runs a
    // registered cleanup once, so it is reclaimed exactly once.
    let cleanup = unsafe { Box::from_raw(data as *mut Cleanup) };
    let Cleanup { what, f } = *cleanup;
    guard(what, APR_SUCCESS as apr_status_t, || {
        f();
        APR_SUCCESS as apr_status_t
    })
}

/// A fixed-size byte buffer kept under a key in a pool's userdata. Every key and its size are
/// declared here (the constructor is private), so one key never meets two sizes.
pub(crate) struct UserdataSlot<const N: usize> {
    key: &'static CStr,
}

/// This generation's daemon secret (16 bytes) and generation number (4 bytes, big-endian).
pub(crate) const CREDENTIALS: UserdataSlot<20> = UserdataSlot {
    key: c"mod_rwsgi.credentials",
};
/// The daemon groups' listening sockets kept across restarts: "fd path" lines, NUL-terminated.
pub(crate) const KEPT_LISTENERS: UserdataSlot<8192> = UserdataSlot {
    key: c"mod_rwsgi.listeners",
};

impl<const N: usize> UserdataSlot<N> {
    /// The slot's size in bytes.
    pub(crate) const fn len(&self) -> usize {
        N
    }

    /// The slot's address in `pool`, or NULL if it was never stored.
    fn find(&self, pool: Pool) -> *mut u8 {
        let mut data: *mut c_void = ptr::null_mut();
        // SAFETY: the pool is live (type invariant); apr_pool_userdata_get writes one pointer
        // into `data` (NULL when the key is unknown); the key is a static C string.
        unsafe { apr_pool_userdata_get(&mut data, self.key.as_ptr(), pool.as_ptr()) };
        data as *mut u8
    }

    /// A copy of the slot's N bytes, or `None` if nothing was ever stored in `pool`.
    pub(crate) fn load(&self, pool: Pool) -> Option<Vec<u8>> {
        let p = self.find(pool);
        if p.is_null() {
            return None;
        }
        // SAFETY: a non-NULL value under this key is the N-byte buffer `store` allocated in
        // this pool and zero-filled (only this type's constants name the key, each with one
        // N); it lives as long as the pool; the parent is single-threaded, nothing writes it
        // during the copy.
        Some(unsafe { std::slice::from_raw_parts(p, N) }.to_vec())
    }

    /// Copies `bytes` (at most N) to the start of the slot, allocating it zero-filled in `pool`
    /// the first time.
    pub(crate) fn store(&self, pool: Pool, bytes: &[u8]) {
        let mut p = self.find(pool);
        if p.is_null() {
            // SAFETY: the pool is live; apr_palloc returns N writable bytes (aborting on
            // failure), zero-filled here before anything reads them; userdata_set keeps the
            // pointer (no cleanup) under the static key for the pool's life.
            unsafe {
                p = apr_palloc(pool.as_ptr(), N) as *mut u8;
                ptr::write_bytes(p, 0, N);
                apr_pool_userdata_set(p as *const c_void, self.key.as_ptr(), None, pool.as_ptr());
            }
        }
        let n = bytes.len().min(N);
        // SAFETY: `p` is this slot's N-byte buffer (see `load`); `n <= N`; `bytes` is a
        // separate Rust slice, so the regions do not overlap.
        unsafe { ptr::copy_nonoverlapping(bytes.as_ptr(), p, n) };
    }
}
