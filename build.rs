//! Build script (runs on the build host, never in httpd): finds Apache's headers through
//! `apxs -q`, generates the FFI bindings with bindgen, compiles the small C shim, and pins the
//! Python interpreter that pyo3 links against.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Stops the build with one line that names the fix.
fn fail(msg: &str) -> ! {
    eprintln!("\nmod_rwsgi build error: {msg}\n");
    std::process::exit(1);
}

/// `apxs` on PATH, else Debian's /usr/bin/apxs (the Makefile picks the same one).
fn default_apxs() -> String {
    let on_path = env::var_os("PATH").and_then(|paths| {
        env::split_paths(&paths)
            .map(|dir| dir.join("apxs"))
            .find(|candidate| candidate.is_file())
    });
    match on_path {
        Some(path) => path.to_string_lossy().into_owned(),
        None => "/usr/bin/apxs".into(),
    }
}

fn apxs_query(apxs: &str, var: &str) -> String {
    let out = Command::new(apxs)
        .args(["-q", var])
        .output()
        .unwrap_or_else(|e| {
            fail(&format!(
                "cannot run `{apxs}` ({e}): install the Debian package apache2-dev \
             (apt-get install apache2-dev), or set APXS=/path/to/apxs"
            ))
        });
    if !out.status.success() {
        fail(&format!(
            "`{apxs} -q {var}` failed: install apache2-dev or set APXS=/path/to/apxs"
        ));
    }
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// `apxs -q VAR` for a variable not every apxs knows: None when it fails or answers nothing.
fn apxs_query_optional(apxs: &str, var: &str) -> Option<String> {
    let out = Command::new(apxs).args(["-q", var]).output().ok()?;
    let value = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (out.status.success() && !value.is_empty()).then_some(value)
}

fn python_query(python: &str, code: &str) -> String {
    let out = Command::new(python)
        .args(["-c", code])
        .output()
        .unwrap_or_else(|e| {
            fail(&format!(
                "cannot run the Python interpreter `{python}` ({e}): install python3 and \
             libpython3-dev, or set PYO3_PYTHON to the interpreter Apache should load"
            ))
        });
    if !out.status.success() {
        fail(&format!(
            "`{python}` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Whether the dynamic loader searches `dir` without an rpath (Debian: /lib, /usr/lib and their
/// multiarch subdirectories).
fn loader_default_dir(dir: &str) -> bool {
    let dir = dir.trim_end_matches('/');
    ["/lib", "/usr/lib", "/lib64", "/usr/lib64"]
        .iter()
        .any(|base| {
            dir == *base
                || dir
                    .strip_prefix(base)
                    .and_then(|rest| rest.strip_prefix('/'))
                    .is_some_and(|sub| !sub.contains('/') && sub.ends_with("-linux-gnu"))
        })
}

fn main() {
    println!("cargo:rerun-if-changed=apache/wrapper.h");
    println!("cargo:rerun-if-changed=apache/shim.c");
    println!("cargo:rerun-if-env-changed=APXS");
    println!("cargo:rerun-if-env-changed=PYO3_PYTHON");

    // --- Apache: every include dir and define comes from apxs, never hard-coded. The default
    // apxs is the one on PATH (the official httpd image puts its own first), else Debian's.
    let apxs = env::var("APXS").unwrap_or_else(|_| default_apxs());
    let inc = apxs_query(&apxs, "INCLUDEDIR");
    // APR and APR-util headers may live apart from httpd's (Debian: /usr/include/apr-1.0; an
    // httpd built from source with its own APR: INCLUDEDIR). APU_INCLUDEDIR is optional: an
    // apxs that does not know it, or an empty answer, adds nothing.
    let mut include_dirs = vec![inc.clone(), apxs_query(&apxs, "APR_INCLUDEDIR")];
    if let Some(apu) = apxs_query_optional(&apxs, "APU_INCLUDEDIR") {
        include_dirs.push(apu);
    }
    include_dirs.retain(|d| !d.is_empty());
    include_dirs.dedup();
    let defs: Vec<String> = apxs_query(&apxs, "EXTRA_CPPFLAGS")
        .split_whitespace()
        .map(String::from)
        .collect();
    if !Path::new(&inc).join("httpd.h").exists() {
        fail(&format!("httpd.h not found in {inc}: install apache2-dev"));
    }

    let mut cc = cc::Build::new();
    cc.file("apache/shim.c").warnings(true);
    for dir in &include_dirs {
        cc.include(dir);
    }
    for d in &defs {
        if let Some(d) = d.strip_prefix("-D") {
            match d.split_once('=') {
                Some((k, v)) => cc.define(k, Some(v)),
                None => cc.define(d, None),
            };
        }
    }
    cc.compile("rwsgi_shim");

    let builder = bindgen::Builder::default()
        .header("apache/wrapper.h")
        .clang_args(include_dirs.iter().map(|d| format!("-I{d}")))
        .clang_args(&defs)
        .allowlist_type(
            "module|command_rec|cmd_parms|request_rec|server_rec|conn_rec|process_rec|\
             apr_table_entry_t|apr_array_header_t|apr_finfo_t|ap_filter_t|ap_filter_rec_t|\
             core_dir_config|apr_sockaddr_t|apr_bucket_brigade|apr_file_t|ap_regex_t|ap_regmatch_t|\
             apr_proc_t|unixd_config_rec|authn_provider|authz_provider|authn_status|authz_status|\
             worker_score|process_score|global_score",
        )
        .allowlist_function(
            "ap_hook_(handler|child_init|post_config|translate_name|pre_config|check_config|test_config)|\
             ap_log_(error|rerror)_|ap_set_content_type|ap_set_content_length|ap_get_module_config|\
             ap_set_module_config|ap_mpm_query|ap_state_query|ap_get_server_banner|\
             ap_get_server_description|ap_get_server_name_for_url|ap_get_server_port|\
             ap_document_root|ap_context_prefix|ap_context_document_root|ap_run_http_scheme|\
             ap_setup_client_block|ap_should_client_block|ap_allow_options|ap_find_linked_module|\
             ap_check_cmd_context|ap_get_limit_req_body|ap_discard_request_body|ap_server_root_relative|\
             ap_run_generate_log_id|ap_get_core_module_config|ap_regcomp|ap_regexec|ap_pregsub|\
             ap_regfree|ap_rflush|ap_get_server_built|ap_pregcomp|ap_add_version_component|\
             apr_palloc|apr_pstrdup|apr_pstrmemdup|apr_table_(get|set|setn|add|addn|unset|elts|make)|\
             apr_pool_cleanup_(register|null|kill)|apr_brigade_create|apr_brigade_cleanup|\
             apr_file_open|apr_file_close|apr_ipsubnet_(create|test)|apr_sockaddr_info_get|\
             apr_time_now|apr_pool_userdata_(get|set)|apr_dynamic_fn_retrieve|\
             apr_proc_fork|apr_proc_other_child_(register|unregister)|ap_close_listeners|\
             ap_runtime_dir_relative|ap_register_auth_provider|ap_hook_check_access|\
             ap_get_remote_host|ap_get_conn_socket|apr_socket_timeout_(get|set)|\
             ap_exists_scoreboard_image|ap_get_scoreboard_(global|process|worker_from_indexes)",
        )
        .allowlist_var(
            "MODULE_MAGIC_.*|APR_HOOK_.*|OK|DECLINED|DONE|HTTP_.*|APLOG_.*|AP_MPMQ_.*|AP_SQ_.*|\
             RSRC_CONF|ACCESS_CONF|OR_.*|REQUEST_CHUNKED_.*|OPT_.*|GLOBAL_ONLY|NOT_IN_.*|\
             AP_REQ_.*|APR_SUCCESS|APR_READ|APR_SENDFILE_ENABLED|APR_OS_DEFAULT|APR_REG|APR_DIR|\
             APR_FILEPATH_.*|AP_FTYPE_.*|M_GET|ap_server_conf|AP_CGI_PASS_AUTH_.*|APR_UNSPEC|\
             ap_unixd_config|APR_INCHILD|APR_INPARENT|APR_OC_REASON_.*|AUTHN_PROVIDER_.*|\
             AUTHZ_PROVIDER_.*|AP_AUTH_INTERNAL_.*|REMOTE_HOST",
        )
        .derive_default(true)
        .default_macro_constant_type(bindgen::MacroTypeVariation::Signed)
        // bindgen's layout tests would only compile into `cargo test`, which leaves the httpd
        // layer out; the sizes that matter are compared with the C compiler's at start instead
        // (pre_config, RW0043).
        .layout_tests(false)
        .parse_callbacks(Box::new(bindgen::CargoCallbacks::new()));
    let bindings =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || builder.generate()))
            .unwrap_or_else(|_| {
                fail(
                    "bindgen could not load libclang: install the Debian package libclang-dev \
             (or set LIBCLANG_PATH)",
                )
            });
    let bindings = bindings.unwrap_or_else(|e| fail(&format!("bindgen failed: {e}")));
    let out = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR"));
    bindings
        .write_to_file(out.join("bindings.rs"))
        .expect("write bindings.rs");

    // --- Python: the interpreter whose libpython Apache will load (Debian: /usr/bin/python3).
    let python = env::var("PYO3_PYTHON").unwrap_or_else(|_| "/usr/bin/python3".into());
    let info = python_query(
        &python,
        "import sys, sysconfig; print(sys.executable); \
         print('%d.%d' % sys.version_info[:2]); \
         print(sysconfig.get_config_var('LIBDIR') or ''); \
         print(sysconfig.get_config_var('LDLIBRARY') or ''); print(sys.prefix)",
    );
    let lines: Vec<&str> = info.lines().collect();
    if lines.len() < 5 {
        fail(&format!("unexpected answer from `{python}`: {info}"));
    }
    let (exe, version, config_libdir, ldlib, prefix) =
        (lines[0], lines[1], lines[2], lines[3], lines[4]);
    // A copied or moved installation (e.g. pyenv's build staged where Apache's user can read it)
    // still reports the LIBDIR it was configured with; its own `<prefix>/lib` comes first.
    let own_libdir = format!("{prefix}/lib");
    let libdir = if Path::new(&own_libdir).join(ldlib).exists() {
        own_libdir.as_str()
    } else {
        config_libdir
    };
    if !Path::new(libdir).join(ldlib).exists() {
        fail(&format!(
            "{libdir}/{ldlib} not found: install the Debian package libpython{version}-dev \
             (python3-dev), the shared libpython that Apache will load"
        ));
    }
    // A libpython outside the loader's default directories (pyenv, /opt, /usr/local builds) is
    // found at load time through an rpath, so httpd needs no LD_LIBRARY_PATH.
    if !loader_default_dir(libdir) {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{libdir}");
        println!("cargo:rustc-link-search=native={libdir}");
    }
    println!(
        "cargo:warning=mod_rwsgi links Python {version}: {libdir}/{ldlib} (interpreter {exe})"
    );
    println!("cargo:rustc-env=RWSGI_PYTHON_EXECUTABLE={exe}");
    println!("cargo:rustc-env=RWSGI_PYTHON_VERSION={version}");
    // Own-GIL sub-interpreters (`Py_NewInterpreterFromConfig`, PEP 684) exist from 3.12 on.
    println!("cargo::rustc-check-cfg=cfg(rwsgi_py312)");
    let minor = version
        .strip_prefix("3.")
        .and_then(|m| m.parse::<u32>().ok())
        .unwrap_or(0);
    if minor >= 12 {
        println!("cargo:rustc-cfg=rwsgi_py312");
    }
    println!("cargo:rustc-env=RWSGI_PYTHON_PREFIX={prefix}");
}
