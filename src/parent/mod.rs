//! What runs in the httpd parent: the configuration checks (also `apachectl -t`) and the
//! supervisor that forks, watches and replaces the daemon processes. (Directives are parsed by
//! the pure `config` layer, reached through the httpd entry points in `httpd`.)

pub mod checks;
pub mod supervisor;
