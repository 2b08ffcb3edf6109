//! The hook layer: the exported `rwsgi_module`, the directive table, the per-server and
//! per-directory configuration objects, and every `extern "C"` entry httpd calls (each under
//! the panic guard), handing over to `parent/` and `child/`. Directives and pre/post_config run
//! in the httpd parent; child_init, translate_name and the handler in the httpd children.

use std::ffi::{CStr, c_char, c_int, c_void};
use std::ptr;
use std::sync::Arc;

use super::base::{GLOBAL, ServerState, cstring, global, guard, log_server, pool_box, set_module};
use super::ffi::*;
use super::{pool, request, server};
use crate::config::{self, Applied, Context, DirConfig, ServerConfig, Targets};
use crate::error::Code;
use crate::python;

// ------------------------------------------------------------------------------------------
// The module structure and directive table

const N_DIRECTIVES: usize = config::DIRECTIVES.len();

const fn build_commands() -> [command_rec; N_DIRECTIVES + 1] {
    let mut out = [command_rec {
        name: ptr::null(),
        func: cmd_func { raw_args: None },
        cmd_data: ptr::null_mut(),
        req_override: 0,
        args_how: 0,
        errmsg: ptr::null(),
    }; N_DIRECTIVES + 1];
    let mut i = 0;
    while i < N_DIRECTIVES {
        let d = &config::DIRECTIVES[i];
        out[i] = command_rec {
            name: d.c_name.as_ptr(),
            func: cmd_func {
                raw_args: Some(directive_entry),
            },
            // The directive's index in the table travels as the command's data pointer.
            cmd_data: ptr::without_provenance_mut(i),
            req_override: match d.context {
                Context::Server => RSRC_CONF,
                Context::ServerDir => RSRC_CONF | ACCESS_CONF,
                Context::FileInfo => OR_FILEINFO,
                Context::AuthCfg => OR_AUTHCFG,
            },
            args_how: cmd_how_RAW_ARGS,
            errmsg: d.c_usage.as_ptr(),
        };
        i += 1;
    }
    out
}

/// httpd keeps pointers into this table and never writes it; `static mut` only because
/// `command_rec` holds raw pointers (not `Sync`).
static mut COMMANDS: [command_rec; N_DIRECTIVES + 1] = build_commands();

/// The symbol named by `LoadModule rwsgi_module …`. httpd writes into it (`module_index`,
/// `next`, `dynamic_load_handle`), so it must live in writable memory: `static mut`.
#[unsafe(no_mangle)]
pub static mut rwsgi_module: module = module {
    version: MODULE_MAGIC_NUMBER_MAJOR,
    minor_version: MODULE_MAGIC_NUMBER_MINOR,
    module_index: -1,
    name: c"mod_rwsgi.c".as_ptr(),
    dynamic_load_handle: ptr::null_mut(),
    next: ptr::null_mut(),
    magic: MODULE_MAGIC_COOKIE as std::os::raw::c_ulong,
    rewrite_args: None,
    create_dir_config: Some(create_dir_config),
    merge_dir_config: Some(merge_dir_config),
    create_server_config: Some(create_server_config),
    merge_server_config: Some(merge_server_config),
    cmds: &raw const COMMANDS as *const command_rec,
    register_hooks: Some(register_hooks),
    flags: 0,
};

unsafe extern "C" fn create_server_config(p: *mut apr_pool_t, _s: *mut server_rec) -> *mut c_void {
    guard("create_server_config", ptr::null_mut(), || {
        pool_box(
            p,
            ServerState {
                cfg: ServerConfig::default(),
            },
        )
    })
}

unsafe extern "C" fn merge_server_config(
    p: *mut apr_pool_t,
    base: *mut c_void,
    add: *mut c_void,
) -> *mut c_void {
    guard("merge_server_config", ptr::null_mut(), || {
        // SAFETY: both are ServerState values created by create_server_config.
        let (b, a) = unsafe {
            (
                &*(base as *const ServerState),
                &*(add as *const ServerState),
            )
        };
        pool_box(
            p,
            ServerState {
                cfg: ServerConfig::merge(&b.cfg, &a.cfg),
            },
        )
    })
}

unsafe extern "C" fn create_dir_config(p: *mut apr_pool_t, _dir: *mut c_char) -> *mut c_void {
    guard("create_dir_config", ptr::null_mut(), || {
        pool_box(p, DirConfig::default())
    })
}

unsafe extern "C" fn merge_dir_config(
    p: *mut apr_pool_t,
    base: *mut c_void,
    add: *mut c_void,
) -> *mut c_void {
    guard("merge_dir_config", ptr::null_mut(), || {
        // SAFETY: both are DirConfig values created by create_dir_config.
        let (b, a) = unsafe { (&*(base as *const DirConfig), &*(add as *const DirConfig)) };
        pool_box(p, DirConfig::merge(b, a))
    })
}

// ------------------------------------------------------------------------------------------
// Directives

/// `cmd_parms` fields a directive handler needs.
struct Cmd {
    parms: *mut cmd_parms,
}

impl Cmd {
    fn pool(&self) -> *mut apr_pool_t {
        // SAFETY: httpd passes a live cmd_parms to directive handlers.
        unsafe { (*self.parms).pool }
    }

    fn server_state(&self) -> *mut ServerState {
        // SAFETY: cmd->server is live during configuration; its slot holds our ServerState.
        (unsafe {
            ap_get_module_config(
                (*(*self.parms).server).module_config,
                &raw const rwsgi_module,
            )
        }) as *mut ServerState
    }

    /// Where the directive is read: which server, and whether inside a section
    /// (`<Directory>`, `<Location>`, `<Files>`, `<If>`: httpd sets `cmd->path` there).
    fn place(&self) -> config::groups::Place {
        // SAFETY: httpd passes a live cmd_parms whose server is live during configuration.
        let (server, path) = unsafe { ((*self.parms).server, (*self.parms).path) };
        // SAFETY: as above.
        let virtual_host = !server.is_null() && unsafe { (*server).is_virtual } != 0;
        config::groups::Place {
            server: if virtual_host {
                config::groups::Server::Virtual(server as usize)
            } else {
                config::groups::Server::Main
            },
            section: !path.is_null(),
        }
    }

    /// Returns an error string httpd will print (copied into the configuration pool).
    fn error(&self, msg: &str) -> *const c_char {
        let c = cstring(msg);
        // SAFETY: apr_pstrdup copies the string into the live configuration pool.
        unsafe { apr_pstrdup(self.pool(), c.as_ptr()) }
    }
}

unsafe extern "C" fn directive_entry(
    parms: *mut cmd_parms,
    mconfig: *mut c_void,
    args: *const c_char,
) -> *const c_char {
    guard(
        "a directive handler",
        c"mod_rwsgi: internal error (see error log)".as_ptr(),
        || {
            let cmd = Cmd { parms };
            // SAFETY: parms->cmd points at our command_rec entry, whose cmd_data is its index.
            let idx = unsafe { (*(*parms).cmd).cmd_data } as usize;
            let Some(spec) = config::DIRECTIVES.get(idx) else {
                return cmd.error("mod_rwsgi: unknown directive");
            };
            let raw = if args.is_null() {
                String::new()
            } else {
                // SAFETY: RAW_ARGS hands over a NUL-terminated argument string.
                unsafe { CStr::from_ptr(args) }
                    .to_string_lossy()
                    .into_owned()
            };
            if spec.name() == "<WSGIInterpreterOptions" {
                return interp_options_section(&cmd, &raw);
            }
            let raw = raw.strip_suffix('>').map(str::to_string).unwrap_or(raw);
            let server = cmd.server_state();
            if server.is_null() || mconfig.is_null() {
                return cmd.error("mod_rwsgi: configuration not available");
            }
            let mut global = GLOBAL.lock().unwrap_or_else(|p| p.into_inner());
            // Not shared while the configuration is read, so this does not copy.
            let g = Arc::make_mut(global.get_or_insert_with(Default::default));
            // SAFETY: `server` and `mconfig` are our ServerState and DirConfig for this context;
            // configuration is read by one thread.
            let (server, dir) = unsafe { (&mut *server, &mut *(mconfig as *mut DirConfig)) };
            match config::apply(
                spec,
                &raw,
                Targets {
                    server: &mut server.cfg,
                    dir,
                    global: g,
                    place: cmd.place(),
                },
            ) {
                Ok(Applied::Done) => ptr::null(),
                Ok(Applied::CompileRegex(i)) => {
                    let alias = &mut server.cfg.aliases[i];
                    let config::AliasPattern::Regex(src) = &alias.pattern else {
                        return ptr::null();
                    };
                    let c = cstring(src);
                    // SAFETY: ap_pregcomp compiles into the configuration pool (freed with it).
                    let re = unsafe { ap_pregcomp(cmd.pool(), c.as_ptr(), 0) };
                    if re.is_null() {
                        return cmd.error(&format!(
                            "{}: {}: '{src}' is not a valid regular expression",
                            Code::BadDirective.as_str(),
                            spec.name()
                        ));
                    }
                    alias.regex_slot = Some(re as usize);
                    ptr::null()
                }
                Err(e) => cmd.error(&e.to_string()),
            }
        },
    )
}

/// Text of a C string httpd owns (empty for NULL).
///
/// # Safety
/// `p` is NULL or a NUL-terminated string that outlives the returned value's use.
unsafe fn text(p: *const c_char) -> String {
    if p.is_null() {
        String::new()
    } else {
        // SAFETY: the caller guarantees a live NUL-terminated string.
        unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
    }
}

/// `<WSGIInterpreterOptions ...>`: the main server only; its children (httpd has built them
/// into the section's node, with `Include`/`<IfDefine>`/`<IfModule>` already resolved) are read
/// here, not executed: only the per-interpreter directives may be there, each parsed into the
/// section (`config::add_interp_options`).
fn interp_options_section(cmd: &Cmd, raw: &str) -> *const c_char {
    let section = config::interp_options::SECTION;
    let Some(selectors) = raw.trim_end().strip_suffix('>') else {
        return cmd.error(&format!(
            "{}: {section}: the opening tag has no closing '>'; write \
             <WSGIInterpreterOptions [process-group=G] [application-group=A]>",
            Code::BadDirective.as_str()
        ));
    };
    // SAFETY: httpd passes a live cmd_parms; its server is live during configuration.
    if unsafe { (*(*cmd.parms).server).is_virtual } != 0 {
        return cmd.error(&format!(
            "{}: {section} is allowed in the main server configuration only (interpreters \
             are shared by every virtual host); move it outside <VirtualHost>",
            Code::BadDirective.as_str()
        ));
    }
    // SAFETY: httpd sets cmd->directive to the section's live node while it runs the handler.
    let node = unsafe { (*cmd.parms).directive };
    let mut children = Vec::new();
    let mut child = if node.is_null() {
        ptr::null_mut()
    } else {
        // SAFETY: the configuration tree lives in the configuration pool during this call.
        unsafe { (*node).first_child }
    };
    while !child.is_null() {
        // SAFETY: `child` is a live node of httpd's configuration tree (see above).
        let c = unsafe { &*child };
        // SAFETY: the node's strings live in the configuration pool.
        let (name, args, file) = unsafe { (text(c.directive), text(c.args), text(c.filename)) };
        children.push((
            name,
            args,
            format!("line {} of {file}", c.line_num),
            !c.first_child.is_null(),
        ));
        child = c.next;
    }
    let lines: Vec<config::SectionLine<'_>> = children
        .iter()
        .map(|(name, args, at, nested)| config::SectionLine {
            name,
            args,
            at: at.clone(),
            nested: *nested,
        })
        .collect();
    let mut global = GLOBAL.lock().unwrap_or_else(|p| p.into_inner());
    let g = Arc::make_mut(global.get_or_insert_with(Default::default));
    match config::add_interp_options(g, selectors, &lines) {
        Ok(()) => ptr::null(),
        Err(e) => cmd.error(&e.to_string()),
    }
}

// ------------------------------------------------------------------------------------------
// Hooks

unsafe extern "C" fn register_hooks(p: *mut apr_pool_t) {
    guard("register_hooks", (), || {
        set_module(&raw mut rwsgi_module);
        static AFTER_ALIAS: NameList<2> = NameList([c"mod_alias.c".as_ptr(), ptr::null()]);
        static BEFORE_USERDIR: NameList<3> = NameList([
            c"mod_userdir.c".as_ptr(),
            c"mod_vhost_alias.c".as_ptr(),
            ptr::null(),
        ]);
        // SAFETY: the hook registration functions copy nothing but the pointers given, which
        // are functions and static NULL-terminated arrays that outlive the module.
        unsafe {
            ap_hook_pre_config(Some(pre_config), ptr::null(), ptr::null(), APR_HOOK_MIDDLE);
            ap_hook_post_config(Some(post_config), ptr::null(), ptr::null(), APR_HOOK_MIDDLE);
            ap_hook_check_config(
                Some(check_config),
                ptr::null(),
                ptr::null(),
                APR_HOOK_MIDDLE,
            );
            ap_hook_test_config(Some(test_config), ptr::null(), ptr::null(), APR_HOOK_MIDDLE);
            ap_hook_child_init(Some(child_init), ptr::null(), ptr::null(), APR_HOOK_MIDDLE);
            ap_hook_translate_name(
                Some(translate_name),
                AFTER_ALIAS.0.as_ptr(),
                BEFORE_USERDIR.0.as_ptr(),
                APR_HOOK_MIDDLE,
            );
            ap_hook_handler(Some(handler), ptr::null(), ptr::null(), APR_HOOK_MIDDLE);
            rwsgi_shim_hook_status(Some(status_hook));
            // mod_wsgi's auth hooks: the access script after mod_ssl's checks, the `wsgi`
            // authn provider (AuthBasicProvider / AuthDigestProvider) and the `wsgi-group`
            // authz provider (Require wsgi-group).
            ap_hook_check_access(
                Some(check_access),
                AFTER_SSL.0.as_ptr(),
                ptr::null(),
                APR_HOOK_MIDDLE,
                AP_AUTH_INTERNAL_PER_CONF,
            );
            ap_register_auth_provider(
                p,
                AUTHN_PROVIDER_GROUP.as_ptr().cast(),
                c"wsgi".as_ptr(),
                AUTHN_PROVIDER_VERSION.as_ptr().cast(),
                (&raw const AUTHN).cast(),
                AP_AUTH_INTERNAL_PER_CONF,
            );
            ap_register_auth_provider(
                p,
                AUTHZ_PROVIDER_GROUP.as_ptr().cast(),
                c"wsgi-group".as_ptr(),
                AUTHZ_PROVIDER_VERSION.as_ptr().cast(),
                (&raw const AUTHZ).cast(),
                AP_AUTH_INTERNAL_PER_CONF,
            );
        }
    })
}

static AFTER_SSL: NameList<2> = NameList([c"mod_ssl.c".as_ptr(), ptr::null()]);

/// The `wsgi` authn provider (`WSGIAuthUserScript`); httpd keeps a pointer to it.
static AUTHN: authn_provider = authn_provider {
    check_password: Some(check_password),
    get_realm_hash: Some(get_realm_hash),
};

/// The `wsgi-group` authz provider (`WSGIAuthGroupScript`).
static AUTHZ: authz_provider = authz_provider {
    check_authorization: Some(check_authorization),
    parse_require_line: None,
};

/// A NULL-terminated list of module names for hook ordering.
struct NameList<const N: usize>([*const c_char; N]);

// SAFETY: the pointers refer to immutable C string literals, never written.
unsafe impl<const N: usize> Sync for NameList<N> {}

unsafe extern "C" fn pre_config(
    _pconf: *mut apr_pool_t,
    _plog: *mut apr_pool_t,
    _ptemp: *mut apr_pool_t,
) -> c_int {
    guard("pre_config", DONE, || {
        if let Some(msg) = layout_mismatch() {
            log_server(ptr::null_mut(), APLOG_CRIT | APLOG_STARTUP, &msg);
            return DONE;
        }
        // A new configuration read starts: forget the previous generation's global settings.
        *GLOBAL.lock().unwrap_or_else(|p| p.into_inner()) = Some(Default::default());
        // Every LoadModule has run by now (they execute while the file is read), so this also
        // stops `apachectl -t`.
        // SAFETY: ap_find_linked_module walks httpd's module list, complete at this point.
        if !unsafe { ap_find_linked_module(c"mod_wsgi.c".as_ptr()) }.is_null() {
            log_server(
                ptr::null_mut(),
                APLOG_CRIT | APLOG_STARTUP,
                &format!(
                    "{}: mod_wsgi and mod_rwsgi are both loaded; they handle the same directives \
                     and share libpython. Unload mod_wsgi (Debian: a2dismod wsgi; otherwise remove its \
                     LoadModule wsgi_module line)",
                    Code::ModWsgiLoaded.as_str()
                ),
            );
            return DONE;
        }
        OK
    })
}

/// The structs this module reads whose size bindgen and the C compiler disagree on (bindgen's
/// flags come from `apxs -q`; a mismatch would make every field read wrong): an RW0043 line,
/// or `None`.
fn layout_mismatch() -> Option<String> {
    use std::mem::size_of;
    // SAFETY: the shim's sizeof functions take nothing and return a constant.
    let c_sizes = unsafe {
        [
            (
                "request_rec",
                rwsgi_shim_sizeof_request_rec(),
                size_of::<request_rec>(),
            ),
            (
                "server_rec",
                rwsgi_shim_sizeof_server_rec(),
                size_of::<server_rec>(),
            ),
            (
                "conn_rec",
                rwsgi_shim_sizeof_conn_rec(),
                size_of::<conn_rec>(),
            ),
            (
                "apr_sockaddr_t",
                rwsgi_shim_sizeof_sockaddr(),
                size_of::<apr_sockaddr_t>(),
            ),
            (
                "apr_finfo_t",
                rwsgi_shim_sizeof_finfo(),
                size_of::<apr_finfo_t>(),
            ),
            (
                "apr_table_entry_t",
                rwsgi_shim_sizeof_table_entry(),
                size_of::<apr_table_entry_t>(),
            ),
            (
                "worker_score",
                rwsgi_shim_sizeof_worker_score(),
                size_of::<worker_score>(),
            ),
            (
                "process_score",
                rwsgi_shim_sizeof_process_score(),
                size_of::<process_score>(),
            ),
            (
                "global_score",
                rwsgi_shim_sizeof_global_score(),
                size_of::<global_score>(),
            ),
        ]
    };
    let wrong: Vec<String> = c_sizes
        .iter()
        .filter(|(_, c, rust)| *c != *rust)
        .map(|(name, c, rust)| format!("{name} is {c} bytes in C but {rust} in Rust"))
        .collect();
    (!wrong.is_empty()).then(|| {
        format!(
            "{}: mod_rwsgi was built with httpd headers or flags that do not match this \
             compiler's layout ({}); rebuild it against this Apache (APXS=/path/to/apxs)",
            Code::BuildMismatch.as_str(),
            wrong.join(", ")
        )
    })
}

/// Cross-directive checks, run after the whole configuration is read (also by `apachectl -t`).
unsafe extern "C" fn check_config(
    pconf: *mut apr_pool_t,
    _plog: *mut apr_pool_t,
    _ptemp: *mut apr_pool_t,
    s: *mut server_rec,
) -> c_int {
    guard("check_config", DONE, || {
        // The whole configuration is read: apply the one-group rule once for this generation.
        if let Some(g) = GLOBAL.lock().unwrap_or_else(|p| p.into_inner()).as_mut() {
            let g = Arc::make_mut(g);
            g.finish_groups();
            for n in config::interp_options::interval_notices(g) {
                if !g.notices.contains(&n) {
                    g.notices.push(n);
                }
            }
        }
        let g = global();
        for (grp, directive) in &g.process_group_refs {
            if !g.daemons.iter().any(|d| &d.name == grp) {
                log_server(
                    s,
                    APLOG_CRIT | APLOG_STARTUP,
                    &format!(
                        "{}: {directive} names process group '{grp}', but no \
                 WSGIDaemonProcess defines it; add \"WSGIDaemonProcess {grp}\" or \
                 correct the name",
                        Code::BadDirective.as_str()
                    ),
                );
                return DONE;
            }
        }
        // SAFETY: httpd hands check_config its live configuration pool, which outlives the call
        // (the handle is used only during it).
        let pool = unsafe { pool::Pool::from_raw(pconf) };
        if let Some(msg) = crate::parent::checks::fatal(pool, &g) {
            log_server(s, APLOG_CRIT | APLOG_STARTUP, &msg);
            return DONE;
        }
        OK
    })
}

/// `apachectl -t` only (after check_config): the paths the configuration uses that their user
/// cannot reach or read (at start, post_config logs the same report to the error log).
unsafe extern "C" fn test_config(_pconf: *mut apr_pool_t, s: *mut server_rec) {
    guard("test_config", (), || {
        // SAFETY: `s` is httpd's main server after the configuration was read (test_config runs
        // after check_config); it outlives this call, the handle's only use.
        let server = unsafe { server::Server::from_raw(s) };
        crate::parent::checks::log_access_report(server, &global())
    })
}

unsafe extern "C" fn post_config(
    pconf: *mut apr_pool_t,
    _plog: *mut apr_pool_t,
    _ptemp: *mut apr_pool_t,
    s: *mut server_rec,
) -> c_int {
    guard("post_config", DONE, || {
        // Like mod_wsgi, name ourselves in the server banner (SERVER_SOFTWARE, Server header
        // under ServerTokens Full).
        let banner = cstring(&format!(
            "mod_rwsgi/{} Python/{}",
            crate::VERSION,
            python::BUILD_VERSION
        ));
        // SAFETY: the component is copied into pconf by httpd.
        unsafe { ap_add_version_component(pconf, banner.as_ptr()) };
        // SAFETY: ap_state_query is a plain query of httpd's state.
        let first_pass = unsafe { ap_state_query(AP_SQ_MAIN_STATE) } == AP_SQ_MS_CREATE_PRE_CONFIG;
        if !first_pass {
            let g = global();
            // SAFETY: httpd hands post_config pconf and the main server of the configuration it
            // has finished reading. Both live for this generation; the handles are kept only in
            // values pconf owns (its cleanups and the daemons' other-child registrations).
            let (pool, server) =
                unsafe { (pool::Pool::from_raw(pconf), server::Server::from_raw(s)) };
            if let Some(msg) = crate::parent::supervisor::start_all(pool, server, &g) {
                log_server(s, APLOG_CRIT | APLOG_STARTUP, &msg);
                return DONE;
            }
            for n in &g.notices {
                log_server(s, APLOG_NOTICE, n);
            }
            crate::parent::checks::log_access_report(server, &g);
            for line in &g.groups_plan.why {
                log_server(s, APLOG_DEBUG, &format!("one-group rule: {line}"));
            }
            // SAFETY: a plain query; the parent must never start Python.
            let py = unsafe { pyo3::ffi::Py_IsInitialized() };
            log_server(
                s,
                APLOG_DEBUG,
                &format!("post_config: Py_IsInitialized()={py} in the httpd parent"),
            );
        }
        OK
    })
}

unsafe extern "C" fn child_init(pchild: *mut apr_pool_t, s: *mut server_rec) {
    guard("child_init", (), || {
        let g = global();
        crate::parent::supervisor::child_init_close();
        crate::child::init_process_info();
        // SAFETY: pchild lives until the child exits; the cleanup is a plain function.
        unsafe {
            apr_pool_cleanup_register(
                pchild,
                ptr::null(),
                Some(board_exit_cleanup),
                Some(apr_pool_cleanup_null),
            )
        };
        if g.restrict_embedded
            && !g
                .import_scripts
                .iter()
                .any(|i| i.process_group == "%{GLOBAL}")
        {
            // Nothing can run embedded: do not start Python in this child at all.
            return;
        }
        if let Err(e) = python::initialize(&g) {
            log_server(
                s,
                APLOG_CRIT,
                &format!(
                    "{}: cannot initialise Python {} in this httpd child: {e}. Check \
                     WSGIPythonHome (it must be a Python {} prefix or virtual environment)",
                    Code::PythonInit.as_str(),
                    python::BUILD_EXECUTABLE,
                    python::BUILD_VERSION
                ),
            );
            return;
        }
        if g.destroy_interpreter {
            // SAFETY: pchild lives until the child exits; the cleanup is a plain function.
            unsafe {
                apr_pool_cleanup_register(
                    pchild,
                    ptr::null(),
                    Some(finalize_cleanup),
                    Some(apr_pool_cleanup_null),
                )
            };
        }
        // Registered after the finalize cleanup, so it runs first (last registered, first
        // run): the ASGI loop's lifespan shutdowns, while Python is still up.
        // SAFETY: as above.
        unsafe {
            apr_pool_cleanup_register(
                pchild,
                ptr::null(),
                Some(asgi_exit_cleanup),
                Some(apr_pool_cleanup_null),
            )
        };
        // Registered last, so it runs first: mod_wsgi's process_stopping event, before
        // anything of Python is torn down (also under WSGIDestroyInterpreter Off).
        // SAFETY: as above.
        unsafe {
            apr_pool_cleanup_register(
                pchild,
                ptr::null(),
                Some(stopping_cleanup),
                Some(apr_pool_cleanup_null),
            )
        };
        crate::child::bootstrap(&g);
    })
}

/// `translate_name`: claims URLs under a `WSGIScriptAlias` (`child::translate`).
unsafe extern "C" fn translate_name(r: *mut request_rec) -> c_int {
    guard("translate_name", DECLINED, || {
        // SAFETY: httpd hands this hook its live request, used only during this call.
        let Some(req) = (unsafe { request::Request::from_raw(r) }) else {
            return DECLINED;
        };
        if crate::child::translate::translate(req) {
            OK
        } else {
            DECLINED
        }
    })
}

/// The content handler (`child::handler`).
unsafe extern "C" fn handler(r: *mut request_rec) -> c_int {
    guard("handler", HTTP_INTERNAL_SERVER_ERROR, || {
        // SAFETY: httpd hands this hook its live request, used only while it runs (objects
        // the application keeps are detached when the request ends).
        let Some(req) = (unsafe { request::Request::from_raw(r) }) else {
            return DECLINED;
        };
        crate::child::handler::handler(req)
    })
}

/// mod_status's hook: mod_rwsgi's section of server-status (`?auto`: machine-readable lines).
unsafe extern "C" fn status_hook(r: *mut request_rec, flags: c_int) -> c_int {
    guard("status_hook", OK as c_int, || {
        // SAFETY: mod_status hands this hook its live request, used only while it runs.
        let Some(req) = (unsafe { request::Request::from_raw(r) }) else {
            return OK as c_int;
        };
        // SAFETY: a constant from mod_status.h.
        let short = flags & unsafe { rwsgi_shim_status_short() } != 0;
        let text = crate::child::observe::status_section(short);
        req.rwrite(text.as_bytes());
        OK as c_int
    })
}

/// Text of a C string httpd hands a hook (empty for NULL), as bytes.
///
/// # Safety
/// `p` is NULL or a NUL-terminated string that outlives the call.
unsafe fn arg<'a>(p: *const c_char) -> &'a [u8] {
    if p.is_null() {
        b""
    } else {
        // SAFETY: the caller guarantees a live NUL-terminated string.
        unsafe { CStr::from_ptr(p) }.to_bytes()
    }
}

/// `AuthBasicProvider wsgi`: the script's `check_password(environ, user, password)`.
unsafe extern "C" fn check_password(
    r: *mut request_rec,
    user: *const c_char,
    password: *const c_char,
) -> authn_status {
    guard("check_password", authn_status_AUTH_GENERAL_ERROR, || {
        // SAFETY: httpd hands the provider its live request, used only during this call.
        let Some(req) = (unsafe { request::Request::from_raw(r) }) else {
            return authn_status_AUTH_GENERAL_ERROR;
        };
        // SAFETY: httpd passes the credentials as NUL-terminated strings of the request.
        let (user, password) = unsafe { (arg(user), arg(password)) };
        authn(crate::child::auth::check_password(req, user, password))
    })
}

/// `AuthDigestProvider wsgi`: the script's `get_realm_hash(environ, user, realm)`.
unsafe extern "C" fn get_realm_hash(
    r: *mut request_rec,
    user: *const c_char,
    realm: *const c_char,
    rethash: *mut *mut c_char,
) -> authn_status {
    guard("get_realm_hash", authn_status_AUTH_GENERAL_ERROR, || {
        // SAFETY: httpd hands the provider its live request, used only during this call.
        let Some(req) = (unsafe { request::Request::from_raw(r) }) else {
            return authn_status_AUTH_GENERAL_ERROR;
        };
        // SAFETY: httpd passes the user and realm as NUL-terminated strings.
        let (user, realm) = unsafe { (arg(user), arg(realm)) };
        let answer = crate::child::auth::get_realm_hash(req, user, realm);
        if let crate::child::auth::Authn::Found(hash) = &answer
            && !rethash.is_null()
        {
            // SAFETY: httpd passes a place for the hash; the copy lives in the request pool.
            unsafe { *rethash = req.pool_string(hash) };
        }
        authn(answer)
    })
}

fn authn(a: crate::child::auth::Authn) -> authn_status {
    use crate::child::auth::Authn;
    match a {
        Authn::Granted => authn_status_AUTH_GRANTED,
        Authn::Denied => authn_status_AUTH_DENIED,
        Authn::Found(_) => authn_status_AUTH_USER_FOUND,
        Authn::NotFound => authn_status_AUTH_USER_NOT_FOUND,
        Authn::Error => authn_status_AUTH_GENERAL_ERROR,
    }
}

/// `Require wsgi-group NAME...`: the script's `groups_for_user(environ, user)`.
unsafe extern "C" fn check_authorization(
    r: *mut request_rec,
    require_line: *const c_char,
    _parsed: *const c_void,
) -> authz_status {
    use crate::child::auth::Authz;
    guard(
        "check_authorization",
        authz_status_AUTHZ_GENERAL_ERROR,
        || {
            // SAFETY: httpd hands the provider its live request, used only during this call.
            let Some(req) = (unsafe { request::Request::from_raw(r) }) else {
                return authz_status_AUTHZ_GENERAL_ERROR;
            };
            // SAFETY: the require line is a NUL-terminated string of the configuration.
            let line = unsafe { arg(require_line) };
            match crate::child::auth::check_groups(req, line) {
                Authz::Granted => authz_status_AUTHZ_GRANTED,
                Authz::Denied => authz_status_AUTHZ_DENIED,
                Authz::NoUser => authz_status_AUTHZ_DENIED_NO_USER,
                Authz::Error => authz_status_AUTHZ_GENERAL_ERROR,
            }
        },
    )
}

/// The access phase: the `WSGIAccessScript`'s `allow_access(environ, host)`.
unsafe extern "C" fn check_access(r: *mut request_rec) -> c_int {
    guard("check_access", HTTP_INTERNAL_SERVER_ERROR, || {
        // SAFETY: httpd hands this hook its live request, used only during this call.
        let Some(req) = (unsafe { request::Request::from_raw(r) }) else {
            return DECLINED;
        };
        crate::child::auth::check_access(req)
    })
}

unsafe extern "C" fn asgi_exit_cleanup(_data: *mut c_void) -> apr_status_t {
    guard("ASGI shutdown", APR_SUCCESS as apr_status_t, || {
        crate::child::asgi::exit();
        APR_SUCCESS as apr_status_t
    })
}

unsafe extern "C" fn board_exit_cleanup(_data: *mut c_void) -> apr_status_t {
    guard("board exit", APR_SUCCESS as apr_status_t, || {
        crate::child::observe::child_exiting();
        APR_SUCCESS as apr_status_t
    })
}

unsafe extern "C" fn stopping_cleanup(_data: *mut c_void) -> apr_status_t {
    guard(
        "process_stopping event",
        APR_SUCCESS as apr_status_t,
        || {
            // mod_wsgi's shutdown_reason in an httpd child: empty (httpd decides why it exits).
            python::process_stopping("");
            APR_SUCCESS as apr_status_t
        },
    )
}

unsafe extern "C" fn finalize_cleanup(_data: *mut c_void) -> apr_status_t {
    guard("python finalize", APR_SUCCESS as apr_status_t, || {
        python::finalize();
        APR_SUCCESS as apr_status_t
    })
}
