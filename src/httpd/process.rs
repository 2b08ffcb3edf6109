//! Processes as httpd sees them, for the httpd parent's daemon supervisor: forking a child with a
//! typed result, watching it through APR's other-child mechanism with a Rust callback, httpd's
//! own state (MPM state, main state, `User`/`Group`), and closing httpd's listening sockets in a
//! forked daemon. Runs in the httpd parent (fork, other-child callbacks) and in the forked
//! daemon process (`InChild`, `close_listeners`).

use std::ffi::{c_int, c_void};
use std::os::fd::RawFd;
use std::os::unix::net::UnixListener;
use std::ptr;

use super::base::{guard, pool_box};
use super::ffi::*;
use super::pool::Pool;

/// httpd's `User` and `Group` (uid, gid): whom its children run as.
pub(crate) fn httpd_identity() -> (u32, u32) {
    // SAFETY: ap_unixd_config is httpd's exported record, filled while the configuration is
    // read and not written afterwards; two integer fields are copied out.
    unsafe { (ap_unixd_config.user_id, ap_unixd_config.group_id) }
}

/// Whether the MPM reports itself running (`AP_MPMQ_MPM_STATE == AP_MPMQ_RUNNING`): false while
/// it starts, restarts or stops.
pub(crate) fn mpm_running() -> bool {
    let mut state: c_int = 0;
    // SAFETY: ap_mpm_query writes one int through the pointer, which points at `state`.
    unsafe { ap_mpm_query(AP_MPMQ_MPM_STATE, &mut state) };
    state == AP_MPMQ_RUNNING
}

/// The MPM's ServerLimit (`AP_MPMQ_HARD_LIMIT_DAEMONS`): how many child slots its scoreboard
/// has (0 if the MPM does not say).
pub(crate) fn server_limit() -> usize {
    let mut n: c_int = 0;
    // SAFETY: ap_mpm_query writes one int through the pointer, which points at `n`.
    unsafe { ap_mpm_query(AP_MPMQ_HARD_LIMIT_DAEMONS, &mut n) };
    usize::try_from(n).unwrap_or(0)
}

/// httpd's configuration generation (`AP_SQ_CONFIG_GEN`: 0 at start, one more per restart;
/// what mod_status calls the parent server's generation).
pub(crate) fn config_generation() -> u64 {
    // SAFETY: ap_state_query only reads httpd's state variables.
    let g = unsafe { ap_state_query(AP_SQ_CONFIG_GEN as c_int) };
    u64::try_from(g).unwrap_or(0)
}

/// Whether httpd is exiting (`ap_state_query(AP_SQ_MAIN_STATE) == AP_SQ_MS_EXITING`), as
/// opposed to restarting.
pub(crate) fn httpd_exiting() -> bool {
    // SAFETY: ap_state_query only reads httpd's state variables.
    unsafe { ap_state_query(AP_SQ_MAIN_STATE) == AP_SQ_MS_EXITING }
}

/// Closes httpd's listening sockets (`ap_close_listeners`) in this process: for a daemon
/// forked from the parent, which must not hold httpd's ports.
pub(crate) fn close_listeners() {
    // SAFETY: ap_close_listeners closes the sockets of httpd's listener records and marks them
    // closed; no Rust object owns those descriptors.
    unsafe { ap_close_listeners() }
}

/// The result of `fork`, in each of the two processes.
pub(crate) enum Forked {
    /// In the new process.
    Child(InChild),
    /// In the parent: the new process, not yet watched.
    Parent(Spawned),
}

/// Forks this process (`apr_proc_fork`), the `apr_proc_t` allocated in `pool`. Err: the APR
/// status of a failed fork. Meant for httpd's parent, which runs no other threads.
pub(crate) fn fork(pool: Pool) -> Result<Forked, apr_status_t> {
    // SAFETY: apr_palloc returns pool memory big and aligned enough for an apr_proc_t (it
    // aborts instead of returning NULL), zero-filled before use; it lives as long as the pool.
    let proc_ = unsafe {
        let p = apr_palloc(pool.as_ptr(), std::mem::size_of::<apr_proc_t>()) as *mut apr_proc_t;
        ptr::write_bytes(p, 0, 1);
        p
    };
    // SAFETY: `proc_` is a valid apr_proc_t in a live pool; apr_proc_fork only fills it and
    // calls fork(2). httpd's parent is single-threaded, so the child is a full copy of it.
    let rv = unsafe { apr_proc_fork(proc_, pool.as_ptr()) };
    match rv {
        APR_INCHILD => Ok(Forked::Child(InChild(()))),
        APR_INPARENT => Ok(Forked::Parent(Spawned { proc_, pool })),
        e => Err(e),
    }
}

/// Proof of being the process `fork` just created (not constructible elsewhere).
pub(crate) struct InChild(());

impl InChild {
    /// Takes ownership of a listening socket this process inherited. `fd` must be a descriptor
    /// the parent holds only as a number (as the supervisor does with its groups' sockets:
    /// made with `into_raw_fd`, never wrapped again); consuming the proof makes it once per
    /// fork.
    pub(crate) fn adopt_listener(self, fd: RawFd) -> UnixListener {
        // SAFETY: per the contract above: in the new process nothing else owns `fd` (the
        // parent kept it as a bare number), and this consumes the one `InChild` of this fork,
        // so no second owner can be made this way.
        unsafe { crate::sys::listener_from_fd(fd) }
    }
}

/// A process just forked, seen from the parent.
pub(crate) struct Spawned {
    proc_: *mut apr_proc_t,
    pool: Pool,
}

/// Why APR calls an other-child callback (`APR_OC_REASON_*`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Reason {
    /// The process exited and was reaped; `status` is its exit code or signal.
    Death,
    /// The process is gone and could not be reaped (`status` -1).
    Lost,
    /// httpd restarts or stops (the process still runs).
    Restart,
    /// The registration goes away (`apr_proc_other_child_unregister`, or its pool's cleanup).
    Unregister,
    /// Any other reason (unwritable pipe, running): nothing to do.
    Other,
}

impl Reason {
    fn from_apr(reason: c_int) -> Reason {
        match reason {
            APR_OC_REASON_DEATH => Reason::Death,
            APR_OC_REASON_LOST => Reason::Lost,
            APR_OC_REASON_RESTART => Reason::Restart,
            APR_OC_REASON_UNREGISTER => Reason::Unregister,
            _ => Reason::Other,
        }
    }
}

/// The registration an other-child callback runs for.
pub(crate) struct OtherChild {
    data: *mut c_void,
}

impl OtherChild {
    /// Ends the registration (`apr_proc_other_child_unregister`). APR calls the callback again
    /// at once, with `Reason::Unregister`, before this returns; a second call does nothing.
    pub(crate) fn unregister(&self) {
        // SAFETY: `data` is the key this registration was made with; APR looks it up in its
        // list, and a key no longer there is ignored. The callback re-entered from here only
        // takes shared references (it is a `Fn`).
        unsafe { apr_proc_other_child_unregister(self.data) }
    }
}

/// A watch's callback, owned by the pool the process was forked with. Never zero-sized: its
/// address is the registration's key in APR's list, so each must be distinct.
struct Watch<F> {
    callback: F,
    _unique: u8,
}

impl Spawned {
    pub(crate) fn pid(&self) -> i32 {
        // SAFETY: `proc_` is the apr_proc_t that apr_proc_fork filled in the parent; it lives
        // in the (live) pool and nothing else writes it yet.
        unsafe { (*self.proc_).pid }
    }

    /// Registers `callback` as the process's other-child callback
    /// (`apr_proc_other_child_register`): httpd calls it, on its main thread, when the
    /// process dies, on restart and stop, and when the registration ends (at the latest when
    /// the pool is cleared). It may be called re-entrantly (see `OtherChild::unregister`).
    pub(crate) fn watch<F>(self, callback: F)
    where
        F: Fn(&OtherChild, Reason, c_int) + 'static,
    {
        // Owned by the pool, and registered with it *before* APR's own cleanup for the
        // registration: cleanups run last-registered first, so the registration (and its final
        // Unregister call) is gone before the callback is dropped.
        let data = pool_box(
            self.pool.as_ptr(),
            Watch {
                callback,
                _unique: 0,
            },
        );
        // SAFETY: `proc_` and `data` live in / are owned by the live pool passed as the
        // registration's pool, so both outlive the registration (see above);
        // `maintenance::<F>` reads `data` as the Watch<F> it is.
        unsafe {
            apr_proc_other_child_register(
                self.proc_,
                Some(maintenance::<F>),
                data,
                ptr::null_mut(),
                self.pool.as_ptr(),
            )
        };
    }
}

/// APR's other-child callback: hands the event to the Rust callback registered by `watch`.
unsafe extern "C" fn maintenance<F>(reason: c_int, data: *mut c_void, status: c_int)
where
    F: Fn(&OtherChild, Reason, c_int) + 'static,
{
    guard("daemon maintenance", (), || {
        // SAFETY: APR passes back the `data` of a live registration, which `watch::<F>` made
        // with a Watch<F> owned by the registration's pool (alive while registered). Only a shared
        // reference is made, so re-entrant calls do not alias a unique one.
        let watch = unsafe { &*(data as *const Watch<F>) };
        (watch.callback)(&OtherChild { data }, Reason::from_apr(reason), status);
    })
}
