//! Application groups as sub-interpreters: the process's table of them (created on first use,
//! capped, kept for the process's life), one thread state per (thread × sub-interpreter) kept
//! for the thread's life so `threading.local` survives between requests, entering one for a
//! request, and ending them all before Python is finalised. Runs in the httpd child (embedded
//! mode) and in daemon processes.
//!
//! How a thread enters a sub-interpreter: it attaches to the main interpreter as every request
//! does (its main thread state is always its first, which keeps `PyGILState_*` on the main
//! interpreter on Python 3.11), then swaps its thread state for its own in the
//! sub-interpreter and swaps back afterwards, also on unwind. pyo3 stays attached throughout,
//! so `py.detach` and object drops act on the sub-interpreter while it is current, and a later
//! `%{GLOBAL}` request on the same thread runs in the main interpreter (on 3.12+ the swap back
//! re-binds the thread's `PyGILState` slot to it).

use std::cell::RefCell;
use std::mem::ManuallyDrop;
use std::sync::{Arc, Mutex, OnceLock};

use pyo3::ffi;
use pyo3::prelude::*;

use super::{Interp, ensure_thread_state, main_interp};
use crate::error::Code;
use crate::wsgi::adapter::{Level, log_exception};

/// At most this many sub-interpreters per process: a group name can come from a request
/// (`%{HOST}`, `%{ENV:...}` set from a header), and each interpreter costs megabytes.
pub const MAX_INTERPRETERS: usize = 32;

/// Which interpreter runs something.
#[derive(Clone, Copy, Debug)]
pub enum Which<'a> {
    /// The main interpreter (`%{GLOBAL}`, or the process's one group).
    Main,
    /// The sub-interpreter of this application group (a non-empty name).
    Group(&'a str),
}

impl<'a> Which<'a> {
    /// The interpreter of a request: `main` (the request core's decision) or its group's.
    pub fn for_request(main: bool, group: &'a str) -> Which<'a> {
        if main || group.is_empty() {
            Which::Main
        } else {
            Which::Group(group)
        }
    }
}

struct Sub {
    interp: *mut ffi::PyInterpreterState,
    /// Dropped only by `end_all`, with this interpreter current.
    state: ManuallyDrop<Interp>,
}

// SAFETY: `interp` is only used with the GIL held (creating thread states, ending the
// interpreter), and `state`'s Python objects only while this interpreter is current; the
// interpreter lives until `end_all`, after the threads that could use it are gone.
unsafe impl Send for Sub {}
// SAFETY: as above; shared access never touches Python without the GIL.
unsafe impl Sync for Sub {}

type Slot = Arc<OnceLock<Result<Arc<Sub>, String>>>;

/// Held while a sub-interpreter is created (never while the GIL is held or awaited).
static CREATING: Mutex<()> = Mutex::new(());

/// The sub-interpreters by group name. Never locked while the GIL is held or awaited.
static REGISTRY: Mutex<Vec<(String, Slot)>> = Mutex::new(Vec::new());

thread_local! {
    /// This thread's thread state in each sub-interpreter it has entered (by interpreter).
    static THREAD_STATES: RefCell<Vec<(usize, usize)>> = const { RefCell::new(Vec::new()) };
}

fn registry() -> std::sync::MutexGuard<'static, Vec<(String, Slot)>> {
    REGISTRY.lock().unwrap_or_else(|p| p.into_inner())
}

/// Runs `f` in the interpreter `which`, attached (the caller must not be attached: a group
/// created here waits for its creator without the GIL). `Err` says why the group's
/// interpreter is not available (already logged when it failed to start).
pub fn enter<R>(which: Which<'_>, f: impl FnOnce(Python<'_>, &Interp) -> R) -> Result<R, String> {
    ensure_thread_state();
    match which {
        Which::Main => {
            let main = main_interp().ok_or("mod_rwsgi: Python is not set up in this process")?;
            Ok(Python::attach(|py| f(py, main)))
        }
        Which::Group(name) => {
            let sub = lookup_or_create(name)?;
            Ok(Python::attach(|py| {
                let ts = thread_state_for(&sub);
                // SAFETY: attached to the main interpreter (shared GIL held); `ts` is this
                // thread's thread state of a live sub-interpreter. The guard swaps back.
                let main = unsafe { ffi::PyThreadState_Swap(ts) };
                let _back = SwapBack(main);
                f(py, &sub.state)
            }))
        }
    }
}

/// Runs `f` in every interpreter this process has: the main one, then each sub-interpreter
/// that was created (none is created here). The caller must not be attached.
pub fn each(mut f: impl FnMut(Python<'_>, &Interp)) {
    if main_interp().is_some() {
        let _ = enter(Which::Main, &mut f);
    }
    let names: Vec<String> = registry()
        .iter()
        .filter(|(_, slot)| matches!(slot.get(), Some(Ok(_))))
        .map(|(name, _)| name.clone())
        .collect();
    for name in names {
        let _ = enter(Which::Group(&name), &mut f);
    }
}

/// An interpreter's state, if it exists already (never creates one; no GIL needed): for
/// checks that only matter where a script was loaded before.
pub fn existing(which: Which<'_>) -> Option<Existing> {
    match which {
        Which::Main => main_interp().map(Existing::Main),
        Which::Group(name) => {
            let slot = registry()
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, s)| Arc::clone(s))?;
            let sub = slot.get()?.as_ref().ok()?;
            Some(Existing::Sub(Arc::clone(sub)))
        }
    }
}

/// A reference to an interpreter's state that keeps it alive.
pub enum Existing {
    Main(&'static Interp),
    #[allow(private_interfaces)]
    Sub(Arc<Sub>),
}

impl std::ops::Deref for Existing {
    type Target = Interp;
    fn deref(&self) -> &Interp {
        match self {
            Existing::Main(i) => i,
            Existing::Sub(s) => &s.state,
        }
    }
}

/// Swaps the thread's main thread state back in when dropped (after a request, or a panic).
struct SwapBack(*mut ffi::PyThreadState);

impl Drop for SwapBack {
    fn drop(&mut self) {
        // SAFETY: the GIL is held (the sub-interpreter shares it); `self.0` is the main
        // thread state this thread was attached with.
        unsafe { ffi::PyThreadState_Swap(self.0) };
    }
}

fn lookup_or_create(name: &str) -> Result<Arc<Sub>, String> {
    let slot = {
        let mut reg = registry();
        match reg.iter().find(|(n, _)| n == name) {
            Some((_, s)) => Arc::clone(s),
            None => {
                if reg.len() >= MAX_INTERPRETERS {
                    return Err(format!(
                        "{}: application group '{name}' needs a new sub-interpreter, but this \
                         process already has {MAX_INTERPRETERS}, its limit; name fewer groups \
                         (WSGIApplicationGroup) or give groups their own daemon processes",
                        Code::InterpreterLimit.as_str()
                    ));
                }
                let s: Slot = Arc::new(OnceLock::new());
                reg.push((name.to_string(), Arc::clone(&s)));
                s
            }
        }
    };
    slot.get_or_init(|| {
        // One creation at a time in the process, as mod_wsgi does: a new interpreter's
        // start-up runs Python code, which may hand the GIL to another thread in the middle.
        // Taken without the GIL (the caller is not attached), so waiting here blocks no one.
        let _one = CREATING.lock().unwrap_or_else(|p| p.into_inner());
        Python::attach(|py| create(py, name))
    })
    .clone()
}

/// This thread's thread state in `sub`, created on first use and kept for the thread's life.
fn thread_state_for(sub: &Sub) -> *mut ffi::PyThreadState {
    let key = sub.interp as usize;
    THREAD_STATES.with(|t| {
        let mut t = t.borrow_mut();
        if let Some(&(_, ts)) = t.iter().find(|(i, _)| *i == key) {
            return ts as *mut ffi::PyThreadState;
        }
        // SAFETY: the GIL is held and `sub.interp` is a live interpreter.
        let ts = unsafe { ffi::PyThreadState_New(sub.interp) };
        t.push((key, ts as usize));
        ts
    })
}

/// Creates and sets up the sub-interpreter of group `name` (attached to the main one).
fn create(py: Python<'_>, name: &str) -> Result<Arc<Sub>, String> {
    let setup = super::PROCESS
        .get()
        .ok_or("mod_rwsgi: Python is not set up in this process")?;
    let log = Arc::clone(&setup.log);
    // `WSGIPerInterpreterGIL` for this group (never `On` on a build before 3.12: apachectl -t
    // refuses it there).
    let own_gil = setup.options(name).own_gil;
    // SAFETY: attached to the main interpreter, so its thread state is current and the GIL
    // held; new_interpreter leaves the new interpreter's first thread state current.
    let (main, ts) = unsafe {
        let main = ffi::PyThreadState_Get();
        (main, new_interpreter(own_gil))
    };
    if ts.is_null() {
        // SAFETY: back to this thread's main thread state, GIL held.
        unsafe { ffi::PyThreadState_Swap(main) };
        let msg = format!(
            "{}: cannot create the sub-interpreter of application group '{name}'",
            Code::Interpreter.as_str()
        );
        log(Level::Error, &msg);
        return Err(msg);
    }
    // Now in the new interpreter; `threading` is imported by the bootstrap on this thread, so
    // ending the interpreter later does not wait for a thread state that is gone.
    let made = super::bootstrap(py, name);
    let result = match made {
        Ok(state) => {
            // SAFETY: `ts` is current; reading its interpreter.
            let interp = unsafe { ffi::PyThreadState_GetInterpreter(ts) };
            THREAD_STATES.with(|t| t.borrow_mut().push((interp as usize, ts as usize)));
            let gil = if own_gil { " with its own GIL" } else { "" };
            log(
                Level::Info,
                &format!("created the sub-interpreter of application group '{name}'{gil}"),
            );
            Ok(Arc::new(Sub {
                interp,
                state: ManuallyDrop::new(state),
            }))
        }
        Err(e) => {
            let msg = format!(
                "{}: cannot set up the sub-interpreter of application group '{name}'",
                Code::Interpreter.as_str()
            );
            log_exception(py, &e, &log, &msg);
            drop(e);
            // SAFETY: `ts` is current and the interpreter's only thread state.
            unsafe { ffi::Py_EndInterpreter(ts) };
            Err(msg)
        }
    };
    // SAFETY: back to this thread's main thread state, GIL held.
    unsafe { ffi::PyThreadState_Swap(main) };
    result
}

/// Creates a sub-interpreter and makes its first thread state current (NULL on failure, the
/// caller's thread state then still current). On Python 3.12+ as mod_wsgi: from
/// `_PyInterpreterConfig_INIT` (own GIL, isolated: multi-phase extensions only, no fork/exec,
/// no daemon threads) when `own_gil`, else `_PyInterpreterConfig_LEGACY_INIT` (what
/// `Py_NewInterpreter` gives). `PyThreadState_Swap` moves between the two GILs (3.12+ releases
/// the old thread state's GIL and takes the new one's), so `enter` works unchanged.
///
/// # Safety
/// Attached to the main interpreter: its thread state current, the GIL held.
unsafe fn new_interpreter(own_gil: bool) -> *mut ffi::PyThreadState {
    #[cfg(rwsgi_py312)]
    {
        let config = if own_gil {
            ffi::_PyInterpreterConfig_INIT
        } else {
            ffi::_PyInterpreterConfig_LEGACY_INIT
        };
        let mut ts: *mut ffi::PyThreadState = std::ptr::null_mut();
        // SAFETY: the caller holds the GIL with a thread state current; `config` outlives
        // the call, `ts` receives the new thread state.
        let st = unsafe { ffi::Py_NewInterpreterFromConfig(&mut ts, &config) };
        // SAFETY: `st` is a PyStatus just returned by Python.
        if unsafe { ffi::PyStatus_Exception(st) } != 0 {
            return std::ptr::null_mut();
        }
        ts
    }
    #[cfg(not(rwsgi_py312))]
    {
        // The configuration refuses WSGIPerInterpreterGIL On on this build.
        debug_assert!(!own_gil);
        // SAFETY: the caller holds the GIL with a thread state current.
        unsafe { ffi::Py_NewInterpreter() }
    }
}

/// Ends every sub-interpreter (their `atexit` callbacks run) before the main interpreter is
/// finalised. Runs at process exit on one thread, after the request threads are gone.
///
/// Newest first: an interpreter that imports a single-phase extension module (`_ctypes`) after
/// an older one gets a copy of the older one's module dict, whose objects live in the older
/// interpreter. Ending the older one first crashes CPython 3.12.0-3.12.6 (gh-116510).
pub fn end_all() {
    let subs: Vec<Arc<Sub>> = registry()
        .drain(..)
        .rev()
        .filter_map(|(_, slot)| slot.get().and_then(|r| r.as_ref().ok().cloned()))
        .collect();
    if subs.is_empty() {
        return;
    }
    ensure_thread_state();
    Python::attach(|_py| {
        for sub in subs {
            let ts = thread_state_for(&sub);
            // SAFETY: attached to main (GIL held); `ts` is this thread's state in `sub`.
            let main = unsafe { ffi::PyThreadState_Swap(ts) };
            // One still referenced by a request in flight is left to the process's exit.
            if let Ok(mut sub) = Arc::try_unwrap(sub) {
                // SAFETY: dropped once, with its own interpreter current.
                unsafe { ManuallyDrop::drop(&mut sub.state) };
                // SAFETY: GIL held; every other thread state of the interpreter belongs
                // to a thread that has finished its requests. Each is cleared with
                // itself current (as CPython requires), then deleted; Py_EndInterpreter
                // needs `ts` to be the last one left.
                unsafe {
                    let mut t = ffi::PyInterpreterState_ThreadHead(sub.interp);
                    while !t.is_null() {
                        let next = ffi::PyThreadState_Next(t);
                        if t != ts {
                            ffi::PyThreadState_Swap(t);
                            ffi::PyThreadState_Clear(t);
                            ffi::PyThreadState_Swap(ts);
                            ffi::PyThreadState_Delete(t);
                        }
                        t = next;
                    }
                    ffi::Py_EndInterpreter(ts);
                }
            }
            // SAFETY: back to the main thread state, GIL held.
            unsafe { ffi::PyThreadState_Swap(main) };
        }
    });
}
