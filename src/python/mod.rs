//! Python in an httpd child or a daemon process (never the httpd parent): initialisation
//! through `PyConfig`, one persistent main-interpreter thread state per thread, the bootstrap
//! every interpreter runs (`bootstrap.py`, the `mod_wsgi` module, log routing, restrictions),
//! each interpreter's script cache and script loading, and finalisation when the process
//! exits. Application groups other than the main interpreter's live in `interp`.

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
use crate::wsgi::front::{Key, Kit};
use crate::wsgi::route;

pub mod interp;
pub mod slow;

static READY: AtomicBool = AtomicBool::new(false);
/// The main interpreter's state, once bootstrapped.
static MAIN: OnceCell<Interp> = OnceCell::new();
/// What `start_process` was given: a sub-interpreter's bootstrap repeats it.
static PROCESS: OnceCell<ProcessSetup> = OnceCell::new();

/// One interpreter's state: its `bootstrap.py` module, the scripts it has loaded and the
/// objects its requests use. Everything in it belongs to that interpreter.
pub struct Interp {
    /// The application group it runs (`""`: the main interpreter).
    pub name: String,
    bootstrap: Py<PyModule>,
    scripts: std::sync::Mutex<Vec<CachedScript>>,
    pub kit: Kit,
    /// Its `mod_wsgi.subscribe_events` subscribers (the bootstrap's list).
    event_callbacks: Py<pyo3::types::PyList>,
}

impl Interp {
    /// The bootstrap module while this interpreter has event subscribers: a request then
    /// publishes its events through it (`adapter::RequestIo::events`).
    pub fn events(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        (!self.event_callbacks.bind(py).is_empty()).then(|| self.bootstrap.clone_ref(py).into_any())
    }

    /// Publishes `process_stopping` with mod_wsgi's `shutdown_reason` to this interpreter's
    /// subscribers (`subscribe_events` and `subscribe_shutdown`).
    pub fn process_stopping(&self, py: Python<'_>, reason: &str, log: &LogFn) {
        if let Err(e) = self
            .bootstrap
            .bind(py)
            .call_method1("process_stopping", (reason,))
        {
            log_exception(
                py,
                &e,
                log,
                &format!(
                    "{}: publishing mod_wsgi event 'process_stopping' failed",
                    Code::EventSubscriber.as_str()
                ),
            );
        }
    }
}

/// The main interpreter's state (`None` before the bootstrap).
pub fn main_interp() -> Option<&'static Interp> {
    MAIN.get()
}

struct ProcessSetup {
    g: GlobalConfig,
    info: ProcessInfo,
    group: String,
    home: Option<String>,
    log: LogFn,
}

impl ProcessSetup {
    /// The process as `<WSGIInterpreterOptions process-group=>` matches it (`""`: embedded).
    fn process_name(&self) -> &str {
        if self.group == "%{GLOBAL}" {
            ""
        } else {
            &self.group
        }
    }

    /// The `<WSGIInterpreterOptions>` in force for the interpreter of `app_group` (`""`: the
    /// main one, which also answers to the group the one-group rule runs there).
    fn options(&self, app_group: &str) -> crate::config::interp_options::Effective {
        let process = self.process_name();
        let mut names = vec![app_group];
        if app_group.is_empty()
            && let Some(sole) = self.g.groups_plan.main_group_of(process)
        {
            names.push(sole);
        }
        crate::config::interp_options::resolve(&self.g, process, &names)
    }
}

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
    slow::stop();
    // Sub-interpreters first (their atexit callbacks run), as mod_wsgi ends them.
    interp::end_all();
    // SAFETY: runs in the child's pool cleanup after the worker threads are gone; Ensure takes
    // the GIL for this thread, as Py_FinalizeEx requires.
    unsafe {
        ffi::PyGILState_Ensure();
        ffi::Py_FinalizeEx();
    }
}

/// Publishes mod_wsgi's `process_stopping` event, with `reason` as its `shutdown_reason`, in
/// every interpreter of this process (their subscribers of `subscribe_events` and
/// `subscribe_shutdown`). Call once, when the process starts to stop, not attached.
pub fn process_stopping(reason: &str) {
    let Some(setup) = PROCESS.get() else {
        return;
    };
    if !ready() {
        return;
    }
    interp::each(|py, it| it.process_stopping(py, reason, &setup.log));
}

/// Process-wide values the bootstrap publishes as `mod_wsgi.*` attributes.
#[derive(Clone, Copy)]
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
/// bootstrap of the main interpreter (Python's output follows the thread's `wsgi::route`, else
/// goes to `log`); for a daemon group, its name as `mod_wsgi.process_group` and an explicit
/// `home=` first on `sys.path` (as mod_wsgi, like a script's directory under the command-line
/// interpreter); then the `WSGIImportScript`s of `group` (`%{GLOBAL}`: embedded mode), each in
/// its application group's interpreter. Sub-interpreters created later repeat the same
/// bootstrap. False if the main bootstrap failed (logged).
pub fn start_process(
    g: &GlobalConfig,
    info: &ProcessInfo,
    group: &str,
    home: Option<&str>,
    log: &LogFn,
) -> bool {
    let _ = PROCESS.set(ProcessSetup {
        g: g.clone(),
        info: *info,
        group: group.to_string(),
        home: home.map(str::to_string),
        log: Arc::clone(log),
    });
    ensure_thread_state();
    let ok = Python::attach(|py| {
        // pyo3 creates its panic exception type once per process: let that be in the main
        // interpreter, before any sub-interpreter could be the first to need it.
        let _ = py.get_type::<pyo3::panic::PanicException>();
        match bootstrap(py, "") {
            Ok(state) => MAIN.set(state).is_ok(),
            Err(e) => {
                log_exception(
                    py,
                    &e,
                    log,
                    &format!(
                        "{}: mod_rwsgi could not set up Python",
                        Code::PythonInit.as_str()
                    ),
                );
                false
            }
        }
    });
    if !ok {
        return false;
    }
    for imp in g.import_scripts.iter().filter(|i| i.process_group == group) {
        let which = if g.import_in_main(imp) {
            interp::Which::Main
        } else {
            interp::Which::Group(&imp.application_group)
        };
        let done = interp::enter(which, |py, it| {
            match load_script(py, it, &imp.path, None, true, g.case_sensitive) {
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
        });
        if let Err(why) = done {
            log(
                Level::Error,
                &format!(
                    "{why}; WSGI script '{}' was not imported (WSGIImportScript)",
                    imp.path
                ),
            );
        }
    }
    true
}

/// Sets up the current interpreter (the main one, or a sub-interpreter just created for
/// application group `app_group`): `bootstrap.py`, the `mod_wsgi`/`mod_rwsgi` modules, stdout
/// and stderr to the error log, `logging` routing, the restrictions and `WSGIPythonPath`; in a
/// daemon process also its group name and `home=`.
pub(crate) fn bootstrap(py: Python<'_>, app_group: &str) -> PyResult<Interp> {
    crate::request::metrics::mark_process_start();
    let setup = PROCESS.get().ok_or_else(|| {
        pyo3::exceptions::PyRuntimeError::new_err("mod_rwsgi: process not set up")
    })?;
    let g = &setup.g;
    let main = app_group.is_empty();
    let plain = route::routed(Arc::clone(&setup.log), false);
    let with_id = route::routed(Arc::clone(&setup.log), true);
    let (stdout, stderr, logging) = (Arc::clone(&plain), plain, with_id);
    let code = CString::new(include_str!("bootstrap.py")).expect("no NUL in bootstrap.py");
    let boot = PyModule::from_code(
        py,
        &code,
        c"mod_rwsgi/bootstrap.py",
        c"_mod_rwsgi_bootstrap",
    )?;
    let kit = if main {
        Kit::main(py)
    } else {
        Kit::sub(py, &boot)?
    };
    let sys = py.import("sys")?;
    let modules = sys.getattr("modules")?;

    let process_group = setup.process_name();
    let opts = setup.options(app_group);
    for name in ["mod_wsgi", "mod_rwsgi"] {
        let m = PyModule::new(py, name)?;
        // setattr, not add: `add` also updates `__all__` through a process-wide interned
        // string, which a sub-interpreter must not touch.
        m.setattr("version", (6, 0, 5))?;
        m.setattr("rwsgi_version", version_tuple())?;
        m.setattr("process_group", process_group)?;
        m.setattr("application_group", app_group)?;
        m.setattr("maximum_processes", setup.info.maximum_processes)?;
        m.setattr("threads_per_process", setup.info.threads_per_process)?;
        // One class per interpreter, under both module names.
        m.setattr("RequestTimeout", boot.getattr("RequestTimeout")?)?;
        m.setattr("server_metrics", wrap_pyfunction!(server_metrics, &m)?)?;
        m.setattr(
            "start_recording_metrics",
            wrap_pyfunction!(start_recording_metrics, &m)?,
        )?;
        m.setattr("process_metrics", wrap_pyfunction!(process_metrics, &m)?)?;
        m.setattr("request_metrics", wrap_pyfunction!(request_metrics, &m)?)?;
        m.setattr("request_data", wrap_pyfunction!(request_data, &m)?)?;
        for name in [
            "subscribe_events",
            "subscribe_shutdown",
            "event_callbacks",
            "shutdown_callbacks",
        ] {
            m.setattr(name, boot.getattr(name)?)?;
        }
        if main {
            m.setattr("FileWrapper", py.get_type::<FileWrapper>())?;
            m.setattr("Input", py.get_type::<Input>())?;
            m.setattr("Log", py.get_type::<Log>())?;
            m.setattr("StartResponse", py.get_type::<StartResponse>())?;
            m.setattr("Write", py.get_type::<Write>())?;
        } else {
            for class in ["FileWrapper", "Input", "Log", "StartResponse"] {
                m.setattr(class, boot.getattr(class)?)?;
            }
        }
        modules.set_item(name, m)?;
    }

    sys.setattr("argv", vec!["mod_wsgi"])?;
    let out = if opts.restrict_stdout {
        Log::restricted(stdout, "sys.stdout access restricted by mod_wsgi")
    } else {
        Log::new(None, stdout, Level::Error)
    };
    sys.setattr("stdout", kit.log(py, out)?.0)?;
    sys.setattr(
        "stderr",
        kit.log(py, Log::new(None, Arc::clone(&stderr), Level::Error))?
            .0,
    )?;
    // Python's collections in this interpreter count in the process's figures.
    let count = pyo3::types::PyCFunction::new_closure(
        py,
        None,
        None,
        |args: &Bound<'_, PyTuple>, _kw: Option<&Bound<'_, PyDict>>| -> PyResult<()> {
            crate::request::metrics::gc_collected(
                args.get_item(0)?.extract()?,
                args.get_item(1)?.extract()?,
            );
            Ok(())
        },
    )?;
    boot.getattr("count_collections")?.call1((count,))?;
    // Python `logging` records nobody else handles go to the error log at their own level
    // (and so do the failures of event subscribers).
    let write = log_function(py, logging)?;
    boot.setattr("report", &write)?;
    boot.setattr("EVENT_CODE", Code::EventSubscriber.as_str())?;
    let handler = boot.getattr("install_logging")?.call1((write,))?;
    modules
        .get_item("mod_rwsgi")?
        .setattr("LogHandler", handler)?;
    if opts.restrict_stdin {
        sys.setattr("stdin", boot.getattr("RestrictedStdin")?.call0()?)?;
    }
    if opts.restrict_signal {
        let log = pyo3::types::PyCFunction::new_closure(py, None, None, {
            let f = py_log(Arc::clone(&stderr));
            move |args: &Bound<'_, PyTuple>, _kw: Option<&Bound<'_, PyDict>>| -> PyResult<()> {
                f(args.get_item(0)?.str()?.to_string());
                Ok(())
            }
        })?;
        boot.getattr("restrict_signal")?.call1((log,))?;
    }
    // Under a shared GIL the switch interval is the process's: set by the main interpreter;
    // an own-GIL interpreter sets its own. One scoped to a named group is skipped (as mod_wsgi;
    // the start-up log says so once, from the parent).
    match opts.switch_interval_here(main) {
        Ok(Some(x)) => {
            sys.call_method1("setswitchinterval", (x,))?;
        }
        Ok(None) => {}
        Err((x, group)) => (setup.log)(
            Level::Info,
            &format!(
                "WSGISwitchInterval {x} of <WSGIInterpreterOptions application-group={group}> \
                 not set in this interpreter: it shares the process's GIL"
            ),
        ),
    }
    if !g.python_path.is_empty() {
        boot.getattr("add_site_dirs")?
            .call1((g.python_path.clone(),))?;
    }
    if let Some(home) = &setup.home
        && !process_group.is_empty()
    {
        sys.getattr("path")?.call_method1("insert", (0, home))?;
    }
    // <WSGIInterpreterOptions> WSGIPythonPath: this interpreter's own additions, least
    // specific section first, each put in front of what is there.
    for layer in &opts.python_path_layers {
        boot.getattr("add_site_dirs_first")?
            .call1((layer.clone(),))?;
    }
    let event_callbacks = boot
        .getattr("event_callbacks")?
        .cast_into::<pyo3::types::PyList>()?
        .unbind();
    Ok(Interp {
        name: app_group.to_string(),
        bootstrap: boot.unbind(),
        scripts: std::sync::Mutex::new(Vec::new()),
        kit,
        event_callbacks,
    })
}

/// A Python callable `f(levelno, message)` that writes each line of `message` to `log` at the
/// level of Python's `levelno` (what Python-side helpers log through).
pub(crate) fn log_function(
    py: Python<'_>,
    log: LogFn,
) -> PyResult<Bound<'_, pyo3::types::PyCFunction>> {
    pyo3::types::PyCFunction::new_closure(
        py,
        None,
        None,
        move |args: &Bound<'_, PyTuple>, _kw: Option<&Bound<'_, PyDict>>| -> PyResult<()> {
            let level = Level::from_python(args.get_item(0)?.extract::<i64>()?);
            let msg: String = args.get_item(1)?.extract()?;
            for line in msg.lines() {
                log(level, line);
            }
            Ok(())
        },
    )
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
    it: &Interp,
    path: &str,
    mtime_us: Option<i64>,
    reloading: bool,
    case_sensitive: bool,
) -> PyResult<Bound<'py, PyAny>> {
    it.bootstrap
        .bind(py)
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

/// A handful of entries per interpreter: one per script it serves.
const SCRIPT_CACHE_MAX: usize = 64;

impl Interp {
    fn scripts(&self) -> std::sync::MutexGuard<'_, Vec<CachedScript>> {
        self.scripts.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The cached module for `path` when it is certainly current: loaded for this modification
/// time (or reloading is off), and without a `reload_required` hook (which must be asked on
/// every request, so such scripts always take the Python path).
fn cached_script<'py>(
    py: Python<'py>,
    it: &Interp,
    path: &str,
    mtime_us: Option<i64>,
    reloading: bool,
    case_sensitive: bool,
) -> Option<Bound<'py, PyAny>> {
    if reloading && mtime_us.is_none() {
        return None;
    }
    let list = it.scripts();
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
pub fn script_loaded_at(
    it: &Interp,
    path: &str,
    mtime_us: Option<i64>,
    case_sensitive: bool,
) -> bool {
    mtime_us.is_some()
        && it
            .scripts()
            .iter()
            .any(|e| e.path == path && e.case_sensitive == case_sensitive && e.mtime == mtime_us)
}

fn remember_script(
    py: Python<'_>,
    it: &Interp,
    module: &Bound<'_, PyAny>,
    path: &str,
    reloading: bool,
    case_sensitive: bool,
) {
    let hook = module
        .getattr(it.kit.key(py, Key::ReloadRequired))
        .is_ok_and(|f| f.is_callable());
    let mtime = module
        .getattr(it.kit.key(py, Key::Mtime))
        .and_then(|m| m.extract::<i64>())
        .ok();
    let mut list = it.scripts();
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

/// The interface `app` speaks, as `bootstrap.interface_of` tells it: `asgi`, `asgi2` or `wsgi`.
pub fn app_interface(py: Python<'_>, it: &Interp, app: &Bound<'_, PyAny>) -> PyResult<String> {
    it.bootstrap
        .bind(py)
        .getattr("interface_of")?
        .call1((app,))?
        .extract()
}

/// Whether a script this process has loaded has changed on disk since (daemon-mode restart).
pub fn script_changed(
    py: Python<'_>,
    it: &Interp,
    path: &str,
    mtime_us: Option<i64>,
    case_sensitive: bool,
) -> bool {
    it.bootstrap
        .bind(py)
        .getattr("script_changed")
        .and_then(|f| f.call1((path, mtime_us, case_sensitive)))
        .and_then(|r| r.extract::<bool>())
        .unwrap_or(false)
}

/// What the log says when an extension module refused the sub-interpreter `it` (PyO3-built
/// packages, modules without multi-interpreter support): the group, and the two ways out.
fn extension_hint(py: Python<'_>, it: &Interp, e: &PyErr) -> Option<String> {
    const REFUSALS: [&str; 3] = [
        "do not yet support subinterpreters",
        "does not support loading in subinterpreters",
        "may only be initialized once per interpreter process",
    ];
    if it.name.is_empty() || !e.is_instance_of::<pyo3::exceptions::PyImportError>(py) {
        return None;
    }
    let msg = e.value(py).str().ok()?.to_string();
    REFUSALS.iter().any(|r| msg.contains(r)).then(|| {
        format!(
            "{}: an extension module refused to load in the sub-interpreter of application \
             group '{}' ({msg}); run this application in the main interpreter with \
             WSGIApplicationGroup %{{GLOBAL}} (application-group=%{{GLOBAL}}), or in a daemon \
             process group of its own, where it is the only group",
            Code::SubinterpreterExtension.as_str(),
            it.name
        )
    })
}

/// Loads (or reloads) a WSGI script and looks up its callable; failures are logged (with the
/// traceback) and give `None`.
#[allow(clippy::too_many_arguments)]
pub fn load_app<'py>(
    py: Python<'py>,
    it: &Interp,
    script: &str,
    mtime_us: Option<i64>,
    reloading: bool,
    case_sensitive: bool,
    callable: &str,
    log: &LogFn,
) -> Option<Bound<'py, PyAny>> {
    use crate::error::Code;
    let module = load_module(py, it, script, mtime_us, reloading, case_sensitive, log)?;
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

/// `mod_wsgi.start_recording_metrics()`: turns on this process's request counters (mod_wsgi 6's
/// opt-in; idempotent, process-wide, whichever interpreter calls it).
#[pyfunction]
fn start_recording_metrics() {
    let (user, system, _) = crate::sys::resource_usage();
    crate::request::metrics::start_recording((user, system));
}

/// `mod_wsgi.request_data()`: the current request's scratch dict (the events' `request_data`).
#[pyfunction]
fn request_data(py: Python<'_>) -> PyResult<Bound<'_, PyDict>> {
    crate::wsgi::adapter::request_data(py)
}

/// `mod_wsgi.request_metrics()`: what this process did since the previous call (or since
/// `start_recording_metrics()`), with mod_wsgi 6's keys: rates, per-phase means, minimums,
/// maximums and histograms, status classes, bytes, CPU and memory, per-thread lists. `None`
/// until recording has started. mod_rwsgi does not measure GIL waits: `gil_wait_*` are `None`.
#[pyfunction]
fn request_metrics(py: Python<'_>) -> PyResult<Py<PyAny>> {
    use crate::request::metrics::Phase;
    let (user, system, max_rss) = crate::sys::resource_usage();
    let Some(r) = crate::request::metrics::drain((user, system)) else {
        return Ok(py.None());
    };
    let daemon = PROCESS.get().is_some_and(|s| !s.process_name().is_empty());
    let maximum = PROCESS
        .get()
        .map_or(1, |s| s.info.threads_per_process.max(1) as usize)
        .max(r.threads.len());
    let d = PyDict::new(py);
    d.set_item("pid", crate::sys::pids().0)?;
    d.set_item("start_time", r.start_time)?;
    d.set_item("stop_time", r.stop_time)?;
    d.set_item("sample_period", r.sample_period)?;
    let cpu = r.cpu_user_utilization + r.cpu_system_utilization;
    for (k, v) in [
        ("cpu_user_utilization", r.cpu_user_utilization),
        ("cpu_user_time", r.cpu_user_utilization),
        ("cpu_system_utilization", r.cpu_system_utilization),
        ("cpu_system_time", r.cpu_system_utilization),
        ("cpu_utilization", cpu),
        ("cpu_time", cpu),
    ] {
        d.set_item(k, v)?;
    }
    let rss = crate::sys::resident_bytes().unwrap_or(0);
    d.set_item("memory_max_rss", max_rss.max(rss))?;
    d.set_item("memory_rss", rss)?;
    d.set_item("request_threads_maximum", maximum)?;
    d.set_item("request_threads_started", r.threads.len())?;
    let active = r
        .threads
        .iter()
        .filter(|t| t.completed > 0 || t.current_elapsed > 0.0)
        .count();
    d.set_item("request_threads_active", active)?;
    d.set_item(
        "capacity_utilization",
        r.request_busy_time / r.sample_period / maximum as f64,
    )?;
    d.set_item("request_count", r.request_count)?;
    d.set_item(
        "request_throughput",
        r.request_count as f64 / r.sample_period,
    )?;
    for (i, n) in r.status.iter().enumerate() {
        d.set_item(format!("status_{}xx", i + 1), n)?;
    }
    d.set_item("input_bytes", r.input_bytes)?;
    d.set_item("input_reads", r.input_reads)?;
    d.set_item("output_bytes", r.output_bytes)?;
    d.set_item("output_writes", r.output_writes)?;
    for (phase, t) in &r.phases {
        let name = phase.name();
        // The queue and daemon phases exist in daemon processes only (None elsewhere).
        let here = daemon || !matches!(phase, Phase::Queue | Phase::Daemon);
        if here {
            d.set_item(name, t.mean())?;
        } else {
            d.set_item(name, py.None())?;
        }
        let (min, max) = match t.min_max_us().filter(|_| here) {
            Some((a, b)) => (
                a.into_pyobject(py)?.into_any(),
                b.into_pyobject(py)?.into_any(),
            ),
            None => (py.None().into_bound(py), py.None().into_bound(py)),
        };
        d.set_item(format!("{name}_min_us"), min)?;
        d.set_item(format!("{name}_max_us"), max)?;
        d.set_item(format!("{name}_buckets"), t.buckets.to_vec())?;
    }
    for k in [
        "gil_wait_time",
        "gil_wait_count",
        "gil_wait_time_min_us",
        "gil_wait_time_max_us",
    ] {
        d.set_item(k, py.None())?;
    }
    // Per-thread lists, indexed by mod_rwsgi's thread number - 1, `maximum` long.
    let mut completed = vec![0u64; maximum];
    let mut busy = vec![0.0f64; maximum];
    let mut cpu_time = vec![0.0f64; maximum];
    let mut elapsed = vec![0.0f64; maximum];
    let mut longest = vec![0.0f64; maximum];
    for t in &r.threads {
        let i = (t.thread as usize).saturating_sub(1);
        if i < maximum {
            completed[i] = t.completed;
            busy[i] = t.busy_time;
            cpu_time[i] = t.cpu_time;
            elapsed[i] = t.current_elapsed;
            longest[i] = t.max_duration;
        }
    }
    d.set_item("request_threads_completed", completed.clone())?;
    d.set_item("request_threads_buckets", completed)?;
    d.set_item("request_threads_busy_time", busy)?;
    d.set_item("request_threads_cpu_time", cpu_time)?;
    d.set_item("request_threads_current_elapsed", elapsed)?;
    d.set_item("request_threads_max_duration", longest)?;
    Ok(d.into_any().unbind())
}

/// `mod_wsgi.process_metrics()`: this process's cumulative figures as mod_wsgi 6 returns them
/// (requests since recording started, busy time, CPU, memory, per-thread counts), or `None`
/// until `start_recording_metrics()` has been called.
#[pyfunction]
fn process_metrics(py: Python<'_>) -> PyResult<Py<PyAny>> {
    let Some(s) = crate::request::metrics::snapshot() else {
        return Ok(py.None());
    };
    let (user, system, max_rss) = crate::sys::resource_usage();
    let d = PyDict::new(py);
    d.set_item("pid", crate::sys::pids().0)?;
    d.set_item("request_busy_time", s.request_busy_time)?;
    d.set_item("request_count", s.request_count)?;
    let rss = crate::sys::resident_bytes().unwrap_or(0);
    // The kernel updates the peak lazily: never report it below the current size.
    d.set_item("memory_max_rss", max_rss.max(rss))?;
    d.set_item("memory_rss", rss)?;
    d.set_item("cpu_user_time", user)?;
    d.set_item("cpu_system_time", system)?;
    d.set_item("cpu_time", user + system)?;
    d.set_item("restart_time", s.restart_time)?;
    d.set_item("current_time", s.restart_time + s.running_time)?;
    d.set_item("running_time", s.running_time as u64)?;
    d.set_item("request_threads", s.threads.len())?;
    d.set_item("active_requests", s.active_requests)?;
    let threads = pyo3::types::PyList::empty(py);
    for (thread_id, request_count) in s.threads {
        let t = PyDict::new(py);
        t.set_item("thread_id", thread_id)?;
        t.set_item("request_count", request_count)?;
        threads.append(t)?;
    }
    d.set_item("threads", threads)?;
    Ok(d.into_any().unbind())
}

/// `mod_wsgi.server_metrics()`: httpd's scoreboard as mod_wsgi returns it (the server's limits
/// and times, each child process and its workers' mod_status letter, counts, client, request
/// and virtual host) under `WSGIServerMetrics On` (a daemon group's `server-metrics=On`);
/// `None` otherwise.
#[pyfunction]
fn server_metrics(py: Python<'_>) -> PyResult<Py<PyAny>> {
    let on = PROCESS.get().is_some_and(|s| s.g.server_metrics);
    let Some(sb) = on.then(crate::httpd::scoreboard::snapshot).flatten() else {
        return Ok(py.None());
    };
    let d = PyDict::new(py);
    d.set_item("server_limit", sb.server_limit)?;
    d.set_item("thread_limit", sb.thread_limit)?;
    d.set_item("running_generation", sb.running_generation)?;
    d.set_item("restart_time", sb.restart_time)?;
    d.set_item("current_time", sb.current_time)?;
    d.set_item("running_time", sb.running_time)?;
    let processes = pyo3::types::PyList::empty(py);
    for p in &sb.processes {
        let pd = PyDict::new(py);
        pd.set_item("process_num", p.process_num)?;
        pd.set_item("pid", p.pid)?;
        pd.set_item("generation", p.generation)?;
        pd.set_item("quiescing", p.quiescing)?;
        let workers = pyo3::types::PyList::empty(py);
        for w in &p.workers {
            let wd = PyDict::new(py);
            wd.set_item("thread_num", w.thread_num)?;
            wd.set_item("generation", w.generation)?;
            wd.set_item("status", w.status.to_string())?;
            wd.set_item("access_count", w.access_count)?;
            wd.set_item("bytes_served", w.bytes_served)?;
            wd.set_item("start_time", w.start_time)?;
            wd.set_item("stop_time", w.stop_time)?;
            wd.set_item("last_used", w.last_used)?;
            wd.set_item("client", &w.client)?;
            wd.set_item("request", &w.request)?;
            wd.set_item("vhost", &w.vhost)?;
            workers.append(wd)?;
        }
        pd.set_item("workers", workers)?;
        processes.append(pd)?;
    }
    d.set_item("processes", processes)?;
    Ok(d.into_any().unbind())
}

/// The calling thread's Python thread id (`threading.get_ident()`).
pub fn thread_ident() -> u64 {
    // SAFETY: PyThread_get_thread_ident only reads the calling thread's id.
    let id = unsafe { ffi::PyThread_get_thread_ident() };
    #[allow(clippy::unnecessary_cast)] // c_ulong is 32 bits on some targets
    let id = id as u64;
    id
}

/// Raises `mod_wsgi.RequestTimeout` in the thread `ident` of the current interpreter the next
/// time it runs Python code (`PyThreadState_SetAsyncExc`). Whether a thread was found.
pub fn interrupt_thread(py: Python<'_>, ident: u64) -> PyResult<bool> {
    let class = py.import("mod_wsgi")?.getattr("RequestTimeout")?;
    // CPython takes an `unsigned long`; pyo3 declares it `long`: the same bits.
    let id = ident as std::ffi::c_long;
    // SAFETY: the GIL is held (`py`) and `class` is a live exception class; the call only
    // sets the pending exception of the matching thread state of this interpreter.
    let n = unsafe { ffi::PyThreadState_SetAsyncExc(id, class.as_ptr()) };
    Ok(n == 1)
}

/// A `PyCapsule` (no name, no destructor) holding `pointer`, as mod_wsgi hands the
/// `request_rec` to applications (`apache.request_rec`). It owns nothing: what it points at
/// must outlive its use, which is the user's contract (the request, while it runs).
pub fn pointer_capsule<'py>(
    py: Python<'py>,
    pointer: *mut std::ffi::c_void,
) -> PyResult<Bound<'py, PyAny>> {
    // SAFETY: the GIL is held (`py`); PyCapsule_New copies the pointer, with a NULL name and
    // no destructor, and returns a new reference or NULL with an exception set.
    unsafe { Bound::from_owned_ptr_or_err(py, ffi::PyCapsule_New(pointer, std::ptr::null(), None)) }
}

/// The script's module, loaded (or reloaded after a change of `mtime_us`) in `it` as mod_wsgi
/// loads WSGI scripts; a failure is logged (`RW0005`, or `RW0042` for a script this process
/// may not read) and is `None`.
pub fn load_module<'py>(
    py: Python<'py>,
    it: &Interp,
    script: &str,
    mtime_us: Option<i64>,
    reloading: bool,
    case_sensitive: bool,
    log: &LogFn,
) -> Option<Bound<'py, PyAny>> {
    use crate::error::Code;
    let cached = cached_script(py, it, script, mtime_us, reloading, case_sensitive);
    let module = match cached.map_or_else(
        || {
            let m = load_script(py, it, script, mtime_us, reloading, case_sensitive)?;
            remember_script(py, it, &m, script, reloading, case_sensitive);
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
            if let Some(hint) = extension_hint(py, it, &e) {
                log(Level::Error, &hint);
            }
            return None;
        }
    };
    Some(module)
}
