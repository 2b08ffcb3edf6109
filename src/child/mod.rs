//! What runs in an httpd child: claiming URLs (`translate_name`), the handler's admission
//! rules, embedded mode (the application in this process) and the daemon client (the request
//! forwarded to a daemon process).

pub mod daemon_client;
pub mod request;
