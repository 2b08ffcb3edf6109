//! `Server`: a safe handle on one of httpd's configured servers (`server_rec`): the main server,
//! the list of virtual hosts, the fields the parent needs, this module's per-server
//! configuration, and logging to the server's error log. Runs in the httpd parent (after the
//! configuration is read) and in processes forked from it.

use std::ffi::c_int;
use std::marker::PhantomData;
use std::time::Duration;

use super::base::{ServerState, log_server, module_config};
use super::ffi::*;
use super::pool::Pool;
use crate::config::ServerConfig;

/// One configured server. The `server_rec`s live in pconf and are not written after the
/// configuration is read, so a handle is valid for the configuration generation it came from.
#[derive(Clone, Copy)]
pub(crate) struct Server {
    raw: *mut server_rec,
    _not_send: PhantomData<*mut ()>,
}

impl Server {
    /// # Safety
    /// `raw` must be a configured server_rec (httpd's main server or one of its virtual hosts)
    /// of a configuration that outlives every use of the handle and its copies, and that is no
    /// longer being read (no directive handler runs any more).
    pub(crate) unsafe fn from_raw(raw: *mut server_rec) -> Server {
        Server {
            raw,
            _not_send: PhantomData,
        }
    }

    /// httpd's main server (`ap_server_conf`), once the configuration has been read.
    pub(crate) fn main() -> Option<Server> {
        // SAFETY: reading httpd's exported pointer, which is set while the configuration is
        // read and then left alone by the single-threaded parent (NULL before it exists).
        let raw = unsafe { ap_server_conf };
        // SAFETY: a non-NULL ap_server_conf is the configured main server of the current
        // generation.
        (!raw.is_null()).then(|| unsafe { Server::from_raw(raw) })
    }

    /// The main server followed by every virtual host, in configuration order.
    pub(crate) fn all() -> impl Iterator<Item = Server> {
        std::iter::successors(Server::main(), |s| s.next())
    }

    fn next(self) -> Option<Server> {
        // SAFETY: `raw` is a configured server_rec (type invariant); `next` links the servers
        // of the same configuration, or is NULL at the end.
        let next = unsafe { (*self.raw).next };
        // SAFETY: a non-NULL `next` is a server_rec of the same configuration, which outlives
        // this handle's uses (type invariant).
        (!next.is_null()).then(|| unsafe { Server::from_raw(next) })
    }

    /// httpd's `Timeout` for this server.
    pub(crate) fn timeout(self) -> Duration {
        // SAFETY: `raw` is a configured server_rec (type invariant); `timeout` is a plain
        // integer field, not written after configuration.
        let us = unsafe { (*self.raw).timeout };
        Duration::from_micros(us.max(0) as u64)
    }

    /// The pool of the httpd process (`s->process->pool`): it lives as long as the parent, and
    /// across restarts (unlike pconf and this module's statics).
    pub(crate) fn process_pool(self) -> Pool {
        // SAFETY: `raw` is a configured server_rec; httpd sets `process` to its process_rec
        // (never NULL) for every server, and that record lives for the whole process.
        let raw = unsafe { (*(*self.raw).process).pool };
        // SAFETY: the process pool is only destroyed when the process exits.
        unsafe { Pool::from_raw(raw) }
    }

    /// This module's configuration of the server (set by create/merge_server_config).
    pub(crate) fn config(&self) -> Option<&ServerConfig> {
        // SAFETY: `module_config` is a configured server's live config vector; this module's
        // slot holds the ServerState our create/merge_server_config stored, and the directive
        // handlers (its only writers) have finished (type invariant), so a shared borrow for
        // the handle's use is not aliased by a writer.
        let st = unsafe { module_config::<ServerState>((*self.raw).module_config) }?;
        Some(&st.cfg)
    }

    /// Logs to this server's error log (`level`: an APLOG_* value, possibly with flags).
    pub(crate) fn log(self, level: c_int, msg: &str) {
        log_server(self.raw, level, msg)
    }
}
