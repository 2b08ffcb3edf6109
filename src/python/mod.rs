//! The embedded Python interpreter of an httpd child: initialisation through `PyConfig` (never in
//! the httpd parent), one persistent thread state per httpd worker thread, the bootstrap
//! helpers, script loading, and finalisation when the child exits. Runs in the httpd child.

use std::cell::Cell;
use std::ffi::{CStr, CString};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use once_cell::sync::OnceCell;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyModule, PyTuple};

use crate::config::{GlobalConfig, HashSeed};
use crate::error::Code;
use crate::wsgi::adapter::{
    FileWrapper, Input, Level, Log, LogFn, StartResponse, Write, log_exception,
};
use crate::wsgi::route;

static READY: AtomicBool = AtomicBool::new(false);
static BOOTSTRAP: OnceCell<Py<PyModule>> = OnceCell::new();

/// The interpreter the module was built against (pyo3's `PYO3_PYTHON`).
pub const BUILD_EXECUTABLE: &str = env!("RWSGI_PYTHON_EXECUTABLE");
pub const BUILD_VERSION: &str = env!("RWSGI_PYTHON_VERSION");

/// Whether Python is up in this process.
pub fn ready() -> bool {
    READY.load(Ordering::Acquire)
}

/// Sets a `PyConfig` string field from UTF-8 text.
///
/// # Safety
/// `cfg` must be an initialised `PyConfig` and `field` one of its `wchar_t*` fields.
unsafe fn set_string(
    cfg: *mut ffi::PyConfig,
    field: *mut *mut libc::wchar_t,
    value: &str,
) -> Result<(), String> {
    let c = CString::new(value).map_err(|_| format!("'{value}' contains a NUL byte"))?;
    // SAFETY: the caller guarantees `cfg`/`field`; `c` outlives the call (Python copies it).
    let st = unsafe { ffi::PyConfig_SetBytesString(cfg, field, c.as_ptr()) };
    // SAFETY: `st` is a PyStatus just returned by Python.
    if unsafe { ffi::PyStatus_Exception(st) } != 0 {
        return Err(status_message(&st));
    }
    Ok(())
}

fn status_message(st: &ffi::PyStatus) -> String {
    if st.err_msg.is_null() {
        return "unknown error".into();
    }
    // SAFETY: a non-null err_msg of a PyStatus is a static NUL-terminated string.
    let msg = unsafe { CStr::from_ptr(st.err_msg) }
        .to_string_lossy()
        .into_owned();
    if st.func.is_null() {
        msg
    } else {
        // SAFETY: as above, func is a static C string when set.
        let func = unsafe { CStr::from_ptr(st.func) }.to_string_lossy();
        format!("{func}: {msg}")
    }
}

/// Which `program_name`/`home` a `WSGIPythonHome` value means: a virtual environment is
/// entered through its own `bin/python` (so `pyvenv.cfg` is honoured), a prefix through `home`.
fn interpreter_paths(home: Option<&str>) -> (String, Option<String>) {
    match home {
        Some(h) if Path::new(h).join("pyvenv.cfg").exists() => {
            let exe = ["python3", "python"]
                .iter()
                .map(|n| Path::new(h).join("bin").join(n))
                .find(|p| p.exists())
                .unwrap_or_else(|| Path::new(h).join("bin/python3"));
            (exe.to_string_lossy().into_owned(), None)
        }
        Some(h) => (BUILD_EXECUTABLE.to_string(), Some(h.to_string())),
        None => (BUILD_EXECUTABLE.to_string(), None),
    }
}

/// Initialises Python in this (httpd child) process. Must run once, before any thread uses it.
pub fn initialize(g: &GlobalConfig) -> Result<(), String> {
    // SAFETY: called once per process from child_init, before worker threads touch Python.
    if unsafe { ffi::Py_IsInitialized() } != 0 {
        return Err("Python is already initialised in this process".into());
    }
    if let Some(eggs) = &g.python_eggs {
        // SAFETY: child_init runs before the worker threads start, so nothing reads the
        // environment concurrently.
        unsafe { std::env::set_var("PYTHON_EGG_CACHE", eggs) };
    }
    let (program, home) = interpreter_paths(g.python_home.as_deref());
    let mut cfg = std::mem::MaybeUninit::<ffi::PyConfig>::uninit();
    let cfg = cfg.as_mut_ptr();
    // SAFETY: PyConfig_InitPythonConfig fully initialises the struct it is given.
    unsafe { ffi::PyConfig_InitPythonConfig(cfg) };
    let result = (|| -> Result<(), String> {
        // SAFETY: `cfg` was initialised above; the fields are plain ints or wchar_t* owned by it.
        unsafe {
            (*cfg).install_signal_handlers = 0; // httpd owns signals
            (*cfg).parse_argv = 0;
            (*cfg).optimization_level = g.optimize as i32;
            (*cfg).write_bytecode = if g.dont_write_bytecode { 0 } else { 1 };
            match g.hash_seed {
                HashSeed::Random => (*cfg).use_hash_seed = 0,
                HashSeed::Fixed(n) => {
                    (*cfg).use_hash_seed = 1;
                    (*cfg).hash_seed = n as libc::c_ulong;
                }
            }
            set_string(cfg, &raw mut (*cfg).program_name, &program)?;
            if let Some(h) = &home {
                set_string(cfg, &raw mut (*cfg).home, h)?;
            }
            for w in &g.warnings {
                let c =
                    CString::new(w.as_str()).map_err(|_| "NUL in a warning filter".to_string())?;
                let wide = ffi::Py_DecodeLocale(c.as_ptr(), std::ptr::null_mut());
                if wide.is_null() {
                    return Err(format!("cannot decode warning filter '{w}'"));
                }
                let st = ffi::PyWideStringList_Append(&raw mut (*cfg).warnoptions, wide);
                ffi::PyMem_RawFree(wide.cast());
                if ffi::PyStatus_Exception(st) != 0 {
                    return Err(status_message(&st));
                }
            }
            let st = ffi::Py_InitializeFromConfig(cfg);
            if ffi::PyStatus_Exception(st) != 0 {
                return Err(status_message(&st));
            }
        }
        Ok(())
    })();
    // SAFETY: `cfg` is initialised; PyConfig_Clear frees what it owns.
    unsafe { ffi::PyConfig_Clear(cfg) };
    result?;
    // Release the GIL; request threads take it through PyGILState (pyo3's attach).
    // SAFETY: Python was just initialised on this thread, which holds the GIL.
    unsafe { ffi::PyEval_SaveThread() };
    READY.store(true, Ordering::Release);
    Ok(())
}

thread_local! {
    static THREAD_STATE: Cell<bool> = const { Cell::new(false) };
}

/// Gives the calling httpd worker thread one Python thread state for its whole life, so
/// `threading.local` data survives from one request to the next (as under mod_wsgi).
pub fn ensure_thread_state() {
    THREAD_STATE.with(|t| {
        if !t.get() {
            // SAFETY: Python is initialised (checked by the caller through `ready()`). Ensure
            // creates this thread's state and takes the GIL; SaveThread releases the GIL but
            // keeps the state (its gilstate counter stays at 1, so later Ensure/Release pairs
            // never destroy it).
            unsafe {
                ffi::PyGILState_Ensure();
                ffi::PyEval_SaveThread();
            }
            t.set(true);
        }
    });
}

/// Finalises Python when the child exits (`WSGIDestroyInterpreter On`).
pub fn finalize() {
    if !READY.swap(false, Ordering::AcqRel) {
        return;
    }
    // SAFETY: runs in the child's pool cleanup after the worker threads are gone; Ensure takes
    // the GIL for this thread, as Py_FinalizeEx requires.
    unsafe {
        ffi::PyGILState_Ensure();
        ffi::Py_FinalizeEx();
    }
}

/// Process-wide values the bootstrap publishes as `mod_wsgi.*` attributes.
pub struct ProcessInfo {
    pub threads_per_process: i32,
    pub maximum_processes: i32,
}

fn py_log(log: LogFn) -> impl Fn(String) + Send + Sync + 'static {
    move |msg: String| {
        for line in msg.lines() {
            log(Level::Warning, line);
        }
    }
}

/// What a process runs once Python is up, the same in an httpd child and a daemon: the
/// bootstrap (Python's output follows the thread's `wsgi::route`, else goes to `log`); for a
/// daemon group, its name as `mod_wsgi.process_group` and an explicit `home=` first on
/// `sys.path` (as mod_wsgi, like a script's directory under the command-line interpreter);
/// then the `WSGIImportScript`s of `group` (`%{GLOBAL}`: embedded mode). False if the
/// bootstrap failed (logged).
pub fn start_process(
    g: &GlobalConfig,
    info: &ProcessInfo,
    group: &str,
    home: Option<&str>,
    log: &LogFn,
) -> bool {
    ensure_thread_state();
    Python::attach(|py| {
        let plain = route::routed(Arc::clone(log), false);
        let with_id = route::routed(Arc::clone(log), true);
        if let Err(e) = bootstrap(py, g, info, Arc::clone(&plain), plain, with_id) {
            log_exception(
                py,
                &e,
                log,
                &format!(
                    "{}: mod_rwsgi could not set up Python",
                    Code::PythonInit.as_str()
                ),
            );
            return false;
        }
        if group != "%{GLOBAL}" {
            if let Ok(m) = py.import("mod_wsgi") {
                let _ = m.setattr("process_group", group);
            }
            if let Some(home) = home
                && let Err(e) = py
                    .import("sys")
                    .and_then(|sys| sys.getattr("path"))
                    .and_then(|path| path.call_method1("insert", (0, home)))
            {
                log_exception(py, &e, log, "mod_rwsgi could not put home= on sys.path");
            }
        }
        for imp in g.import_scripts.iter().filter(|i| i.process_group == group) {
            match load_script(py, &imp.path, None, true, g.case_sensitive) {
                Ok(_) => log(Level::Info, &format!("imported WSGI script '{}'", imp.path)),
                Err(e) => log_exception(
                    py,
                    &e,
                    log,
                    &format!(
                        "{}: failed to import WSGI script '{}' (WSGIImportScript)",
                        Code::ScriptLoad.as_str(),
                        imp.path
                    ),
                ),
            }
        }
        true
    })
}

/// Runs once after `initialize`: publishes the `mod_wsgi` module, routes stdout/stderr to the
/// error log, applies the restrictions and `WSGIPythonPath`, and preloads `WSGIImportScript`s.
pub fn bootstrap(
    py: Python<'_>,
    g: &GlobalConfig,
    info: &ProcessInfo,
    stdout: LogFn,
    stderr: LogFn,
    logging: LogFn,
) -> PyResult<()> {
    let code = CString::new(include_str!("bootstrap.py")).expect("no NUL in bootstrap.py");
    let boot = PyModule::from_code(
        py,
        &code,
        c"mod_rwsgi/bootstrap.py",
        c"_mod_rwsgi_bootstrap",
    )?;
    let sys = py.import("sys")?;
    let modules = sys.getattr("modules")?;

    for name in ["mod_wsgi", "mod_rwsgi"] {
        let m = PyModule::new(py, name)?;
        m.add("version", (6, 0, 5))?;
        m.add("rwsgi_version", version_tuple())?;
        m.add("process_group", "")?;
        m.add("application_group", "")?;
        m.add("maximum_processes", info.maximum_processes)?;
        m.add("threads_per_process", info.threads_per_process)?;
        m.add_class::<FileWrapper>()?;
        m.add_class::<Input>()?;
        m.add_class::<Log>()?;
        m.add_class::<StartResponse>()?;
        m.add_class::<Write>()?;
        modules.set_item(name, m)?;
    }

    sys.setattr("argv", vec!["mod_wsgi"])?;
    let out = if g.restrict_stdout {
        Log::restricted(stdout, "sys.stdout access restricted by mod_wsgi")
    } else {
        Log::new(None, stdout, Level::Error)
    };
    sys.setattr("stdout", Bound::new(py, out)?)?;
    sys.setattr(
        "stderr",
        Bound::new(py, Log::new(None, Arc::clone(&stderr), Level::Error))?,
    )?;
    // Python `logging` records nobody else handles go to the error log at their own level.
    let write = pyo3::types::PyCFunction::new_closure(
        py,
        None,
        None,
        move |args: &Bound<'_, PyTuple>, _kw: Option<&Bound<'_, PyDict>>| -> PyResult<()> {
            let level = Level::from_python(args.get_item(0)?.extract::<i64>()?);
            let msg: String = args.get_item(1)?.extract()?;
            for line in msg.lines() {
                logging(level, line);
            }
            Ok(())
        },
    )?;
    let handler = boot.getattr("install_logging")?.call1((write,))?;
    modules
        .get_item("mod_rwsgi")?
        .setattr("LogHandler", handler)?;
    if g.restrict_stdin {
        sys.setattr("stdin", boot.getattr("RestrictedStdin")?.call0()?)?;
    }
    if g.restrict_signal {
        let log = pyo3::types::PyCFunction::new_closure(py, None, None, {
            let f = py_log(Arc::clone(&stderr));
            move |args: &Bound<'_, PyTuple>, _kw: Option<&Bound<'_, PyDict>>| -> PyResult<()> {
                f(args.get_item(0)?.str()?.to_string());
                Ok(())
            }
        })?;
        boot.getattr("restrict_signal")?.call1((log,))?;
    }
    if let Some(x) = g.switch_interval {
        sys.call_method1("setswitchinterval", (x,))?;
    }
    if !g.python_path.is_empty() {
        boot.getattr("add_site_dirs")?
            .call1((g.python_path.clone(),))?;
    }
    BOOTSTRAP
        .set(boot.unbind())
        .map_err(|_| pyo3::exceptions::PyRuntimeError::new_err("bootstrapped twice"))?;
    Ok(())
}

fn version_tuple() -> (u32, u32, u32) {
    let mut it = crate::VERSION.split('.').map(|p| p.parse().unwrap_or(0));
    (
        it.next().unwrap_or(0),
        it.next().unwrap_or(0),
        it.next().unwrap_or(0),
    )
}

/// Loads (or reloads after a change of `mtime_us`) the WSGI script's module.
pub fn load_script<'py>(
    py: Python<'py>,
    path: &str,
    mtime_us: Option<i64>,
    reloading: bool,
    case_sensitive: bool,
) -> PyResult<Bound<'py, PyAny>> {
    let boot = BOOTSTRAP.get().ok_or_else(|| {
        pyo3::exceptions::PyRuntimeError::new_err("mod_rwsgi is not bootstrapped")
    })?;
    boot.bind(py)
        .getattr("load_script")?
        .call1((path, mtime_us, reloading, case_sensitive))
}

/// A loaded script module, kept on the Rust side so that a request for an unchanged script
/// does not go through `bootstrap.load_script` (a Python call hashing the path) at all.
struct CachedScript {
    path: String,
    case_sensitive: bool,
    /// The modification time the module was executed for (`module.__mtime__`).
    mtime: Option<i64>,
    module: Py<PyAny>,
}

/// A handful of entries: one per script this process serves.
static SCRIPTS: std::sync::Mutex<Vec<CachedScript>> = std::sync::Mutex::new(Vec::new());
const SCRIPT_CACHE_MAX: usize = 64;

fn scripts() -> std::sync::MutexGuard<'static, Vec<CachedScript>> {
    SCRIPTS.lock().unwrap_or_else(|p| p.into_inner())
}

/// The cached module for `path` when it is certainly current: loaded for this modification
/// time (or reloading is off), and without a `reload_required` hook (which must be asked on
/// every request, so such scripts always take the Python path).
fn cached_script<'py>(
    py: Python<'py>,
    path: &str,
    mtime_us: Option<i64>,
    reloading: bool,
    case_sensitive: bool,
) -> Option<Bound<'py, PyAny>> {
    if reloading && mtime_us.is_none() {
        return None;
    }
    let list = scripts();
    let e = list
        .iter()
        .find(|e| e.path == path && e.case_sensitive == case_sensitive)?;
    if reloading && e.mtime != mtime_us {
        return None;
    }
    Some(e.module.bind(py).clone())
}

/// Whether this process loaded `path` for exactly `mtime_us` (from the cache, without the GIL):
/// then the script has certainly not changed since.
pub fn script_loaded_at(path: &str, mtime_us: Option<i64>, case_sensitive: bool) -> bool {
    mtime_us.is_some()
        && scripts()
            .iter()
            .any(|e| e.path == path && e.case_sensitive == case_sensitive && e.mtime == mtime_us)
}

fn remember_script(
    py: Python<'_>,
    module: &Bound<'_, PyAny>,
    path: &str,
    reloading: bool,
    case_sensitive: bool,
) {
    let hook = module
        .getattr(pyo3::intern!(py, "reload_required"))
        .is_ok_and(|f| f.is_callable());
    let mtime = module
        .getattr(pyo3::intern!(py, "__mtime__"))
        .and_then(|m| m.extract::<i64>())
        .ok();
    let mut list = scripts();
    list.retain(|e| !(e.path == path && e.case_sensitive == case_sensitive));
    if (hook && reloading) || list.len() >= SCRIPT_CACHE_MAX {
        return;
    }
    list.push(CachedScript {
        path: path.to_string(),
        case_sensitive,
        mtime,
        module: module.clone().unbind(),
    });
}

/// Whether a script this process has loaded has changed on disk since (daemon-mode restart).
pub fn script_changed(
    py: Python<'_>,
    path: &str,
    mtime_us: Option<i64>,
    case_sensitive: bool,
) -> bool {
    let Some(boot) = BOOTSTRAP.get() else {
        return false;
    };
    boot.bind(py)
        .getattr("script_changed")
        .and_then(|f| f.call1((path, mtime_us, case_sensitive)))
        .and_then(|r| r.extract::<bool>())
        .unwrap_or(false)
}

/// Loads (or reloads) a WSGI script and looks up its callable; failures are logged (with the
/// traceback) and give `None`.
pub fn load_app<'py>(
    py: Python<'py>,
    script: &str,
    mtime_us: Option<i64>,
    reloading: bool,
    case_sensitive: bool,
    callable: &str,
    log: &LogFn,
) -> Option<Bound<'py, PyAny>> {
    use crate::error::Code;
    let cached = cached_script(py, script, mtime_us, reloading, case_sensitive);
    let module = match cached.map_or_else(
        || {
            let m = load_script(py, script, mtime_us, reloading, case_sensitive)?;
            remember_script(py, &m, script, reloading, case_sensitive);
            Ok::<_, PyErr>(m)
        },
        Ok,
    ) {
        Ok(m) => m,
        Err(e) => {
            // A script this process may not open: say which directory or mode stops whom.
            if e.is_instance_of::<pyo3::exceptions::PyPermissionError>(py)
                && let Err(why) = crate::diag::access_problem(
                    Path::new(script),
                    &crate::sys::current_identity(),
                    crate::diag::Need::Read,
                )
            {
                log(
                    Level::Error,
                    &format!(
                        "{}: the WSGI script '{script}' cannot be read by this process: {why}. {}",
                        Code::PathAccess.as_str(),
                        crate::diag::ACCESS_FIX
                    ),
                );
                return None;
            }
            crate::wsgi::adapter::log_exception(
                py,
                &e,
                log,
                &format!(
                    "{}: failed to exec Python script file '{script}'",
                    Code::ScriptLoad.as_str()
                ),
            );
            return None;
        }
    };
    let name = if callable.is_empty() {
        "application"
    } else {
        callable
    };
    match module.getattr(name) {
        Ok(app) => Some(app),
        Err(_) => {
            log(
                Level::Error,
                &format!(
                    "{}: target WSGI script '{script}' does not contain WSGI application '{name}'",
                    Code::NoCallable.as_str()
                ),
            );
            None
        }
    }
}
