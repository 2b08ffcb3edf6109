//! `WSGIDaemonProcess`: the typed definition of one daemon process group and its pure parser,
//! option for option as mod_wsgi 6.0.5 accepts them (`wsgi_add_daemon_process`,
//! `src/server/wsgi_daemon.c`), plus the table of which options mod_rwsgi implements yet.
//! Runs in the httpd parent while the configuration is read; the result is read by the httpd
//! children (routing, connect/socket timeouts) and by the daemon processes themselves.
#![forbid(unsafe_code)]

use crate::error::{Code, Error};
use std::time::Duration;

const DIRECTIVE: &str = "WSGIDaemonProcess";

/// How far one `WSGIDaemonProcess` option is implemented.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OptionSupport {
    Implemented,
    /// Its value is fully validated, then `parse` fails with [`Code::NotSupported`]. A value
    /// that leaves the feature off (`interrupt-timeout=0`, `server-metrics=Off`) is still
    /// accepted, because that is what mod_rwsgi does anyway.
    NotYet,
}

use OptionSupport::{Implemented, NotYet};

/// Every option mod_wsgi 6.0.5 accepts (44), in the order of its parser, then mod_rwsgi's own
/// (ASGI lifespan). Flip an entry to `Implemented` when the feature lands.
pub const OPTIONS: &[(&str, OptionSupport)] = &[
    ("user", Implemented),
    ("group", Implemented),
    ("supplementary-groups", Implemented),
    ("processes", Implemented),
    ("threads", Implemented),
    ("umask", Implemented),
    ("chroot", Implemented),
    ("home", Implemented),
    ("lang", Implemented),
    ("locale", Implemented),
    ("python-home", Implemented),
    ("python-path", Implemented),
    ("python-eggs", Implemented),
    ("switch-interval", Implemented),
    ("stack-size", Implemented),
    ("maximum-requests", Implemented),
    ("startup-timeout", Implemented),
    ("shutdown-timeout", Implemented),
    ("deadlock-timeout", Implemented),
    ("inactivity-timeout", Implemented),
    ("request-timeout", Implemented),
    ("interrupt-timeout", Implemented),
    ("graceful-timeout", Implemented),
    ("eviction-timeout", Implemented),
    ("restart-interval", Implemented),
    ("connect-timeout", Implemented),
    ("socket-timeout", Implemented),
    ("queue-timeout", Implemented),
    ("listen-backlog", Implemented),
    ("display-name", Implemented),
    ("send-buffer-size", Implemented),
    ("receive-buffer-size", Implemented),
    ("header-buffer-size", Implemented),
    ("response-buffer-size", Implemented),
    ("response-socket-timeout", Implemented),
    ("response-flush-delay", Implemented),
    ("socket-user", Implemented),
    ("script-user", Implemented),
    ("script-group", Implemented),
    ("cpu-time-limit", Implemented),
    ("cpu-priority", Implemented),
    ("memory-limit", Implemented),
    ("virtual-memory-limit", Implemented),
    ("server-metrics", Implemented),
    // mod_rwsgi's own.
    ("lifespan", Implemented),
    ("lifespan-timeout", Implemented),
    ("max-tasks", Implemented),
];

/// `lifespan=`: whether an ASGI application's lifespan protocol runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Lifespan {
    /// Run it; an application that raises before `startup.complete` does not support it.
    #[default]
    Auto,
    /// Run it; an exception in startup is a failed startup.
    On,
    Off,
}

impl Lifespan {
    pub fn as_str(self) -> &'static str {
        match self {
            Lifespan::Auto => "auto",
            Lifespan::On => "on",
            Lifespan::Off => "off",
        }
    }
}

/// Looks an option up by its exact name (mod_wsgi compares with `strcmp`).
pub fn option_support(name: &str) -> Option<OptionSupport> {
    OPTIONS.iter().find(|(n, _)| *n == name).map(|&(_, s)| s)
}

/// A user as written in the configuration; names are resolved when the daemon is spawned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UserSpec {
    Name(String),
    /// The `#uid` form.
    Id(u32),
}

/// A group as written in the configuration; names are resolved when the daemon is spawned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GroupSpec {
    Name(String),
    /// The `#gid` form.
    Id(u32),
}

/// One `WSGIDaemonProcess` definition. Defaults are mod_wsgi's (`wsgi_daemon.c:108-170`).
/// A zero `Duration` means "off" unless a field says otherwise.
#[derive(Clone, Debug, PartialEq)]
pub struct DaemonSpec {
    /// The process group name (`WSGIProcessGroup` selects it).
    pub name: String,
    /// Processes in the group (default 1).
    pub processes: u32,
    /// `processes=` was given at all: then `wsgi.multiprocess` is True, even for 1.
    pub processes_given: bool,
    /// Request threads per process (default 15). 0 makes a "service script" process that
    /// serves no requests and only runs `WSGIImportScript`.
    pub threads: u32,
    /// `argv[0]` shown by `ps`; see [`DaemonSpec::display_name_expanded`].
    pub display_name: Option<String>,
    /// Initial working directory (absolute). `None`: the user's home directory if `user=`
    /// differs from Apache's `User`, otherwise Apache's working directory.
    pub home: Option<String>,
    /// Run-as user; `None` = Apache's `User`. Literal `root`/`#0` are refused here; the
    /// spawner must still refuse a name that resolves to uid 0, as mod_wsgi does.
    pub user: Option<UserSpec>,
    /// Primary group; `None` = Apache's `Group`.
    pub group: Option<GroupSpec>,
    /// `setgroups()` list (after the primary group); empty = `initgroups()` for the user.
    pub supplementary_groups: Vec<GroupSpec>,
    /// `None` = inherit Apache's umask.
    pub umask: Option<u32>,
    /// `LANG`.
    pub lang: Option<String>,
    /// `LC_ALL` and `setlocale`.
    pub locale: Option<String>,
    /// Python prefix or virtual environment of this group (absolute).
    pub python_home: Option<String>,
    /// `site.addsitedir` entries, in order.
    pub python_path: Vec<String>,
    /// `PYTHON_EGG_CACHE`.
    pub python_eggs: Option<String>,
    /// `sys.setswitchinterval` in seconds; `None` = Python's default.
    pub switch_interval: Option<f64>,
    /// Worker thread stack size in bytes; `None` = OS default.
    pub stack_size: Option<u64>,
    /// Recycle a process after this many requests; 0 = never.
    pub maximum_requests: u64,
    /// Recycle a process after this long.
    pub restart_interval: Duration,
    /// Recycle a process after this long without activity.
    pub inactivity_timeout: Duration,
    /// Per-thread fail-safe for WSGI requests, which fires at
    /// [`DaemonSpec::wsgi_request_timeout`]; an ASGI request is cancelled at this value.
    pub request_timeout: Duration,
    /// Grace given to a `RequestTimeout` injected into a stuck thread before escalating.
    pub interrupt_timeout: Duration,
    /// Restart when the GIL cannot be acquired for this long (default 300 s).
    pub deadlock_timeout: Duration,
    /// Restart if the WSGI script has not loaded this long after the first request.
    pub startup_timeout: Duration,
    /// Drain window after a restart trigger (default 15 s).
    pub graceful_timeout: Duration,
    /// Drain window for SIGUSR1; zero = use `graceful_timeout`.
    pub eviction_timeout: Duration,
    /// Hard exit this long after shutdown started (default 5 s).
    pub shutdown_timeout: Duration,
    /// How long the httpd child retries connecting to the daemon before a 503 (default 15 s).
    pub connect_timeout: Duration,
    /// Per read/write timeout on the child-daemon socket; `None` = Apache's `Timeout`.
    pub socket_timeout: Option<Duration>,
    /// Drop (504) a request that waited longer than this before a daemon thread took it.
    pub queue_timeout: Duration,
    /// `listen()` backlog of the group's socket (default 100).
    pub listen_backlog: u32,
    /// Owner of the socket file; `None` = Apache's `User`.
    pub socket_user: Option<UserSpec>,
    /// `SO_SNDBUF`; 0 = OS default.
    pub send_buffer_size: u32,
    /// `SO_RCVBUF`; 0 = OS default.
    pub receive_buffer_size: u32,
    /// Longest response header line from the daemon; 0 = the default (32768).
    pub header_buffer_size: u32,
    /// Force a flush after this many unflushed response bytes; 0 = the default (8 MiB).
    pub response_buffer_size: u64,
    /// Timeout for writes to the client while relaying; `None` = `socket_timeout`.
    pub response_socket_timeout: Option<Duration>,
    /// Wait this long for more daemon data before flushing a streamed block (default 0: flush
    /// at once; mod_wsgi's default is 5 ms).
    pub response_flush_delay: Duration,
    /// `RLIMIT_CPU` soft limit in seconds; `None` = no limit.
    pub cpu_time_limit: Option<u64>,
    /// `setpriority()` value (the kernel clamps it to -20..19).
    pub cpu_priority: i32,
    /// `RLIMIT_DATA` in bytes; `None` = no limit.
    pub memory_limit: Option<u64>,
    /// `RLIMIT_AS` in bytes; `None` = no limit.
    pub virtual_memory_limit: Option<u64>,
    /// Scripts must be owned by this user (exclusive with script_group); others get 403.
    pub script_user: Option<UserSpec>,
    /// Scripts must be owned by this group (exclusive with script_user); others get 403.
    pub script_group: Option<GroupSpec>,
    /// `chroot()` before dropping privileges (absolute).
    pub chroot: Option<String>,
    /// `mod_wsgi.server_metrics()` works in this group.
    pub server_metrics: bool,
    /// ASGI lifespan: `lifespan=auto|on|off`.
    pub lifespan: Lifespan,
    /// How long an ASGI application's lifespan startup may take (default 60 s; 0 = no limit).
    pub lifespan_timeout: Duration,
    /// `max-tasks=`: ASGI requests one process runs at once; more are answered 503 (0: no
    /// limit).
    pub max_tasks: u32,
}

impl DaemonSpec {
    /// How long one WSGI request may run before request-timeout acts: mod_wsgi 6's
    /// `request-timeout × (1 + ln(threads))`, so a process with more threads tolerates a
    /// longer request before it is interrupted or recycled.
    pub fn wsgi_request_timeout(&self) -> Duration {
        let threads = f64::from(self.threads.max(1));
        self.request_timeout.mul_f64(1.0 + threads.ln())
    }

    /// A group with every option at mod_wsgi's default.
    pub fn new(name: impl Into<String>) -> Self {
        DaemonSpec {
            name: name.into(),
            processes: 1,
            processes_given: false,
            threads: 15,
            display_name: None,
            home: None,
            user: None,
            group: None,
            supplementary_groups: Vec::new(),
            umask: None,
            lang: None,
            locale: None,
            python_home: None,
            python_path: Vec::new(),
            python_eggs: None,
            switch_interval: None,
            stack_size: None,
            maximum_requests: 0,
            restart_interval: Duration::ZERO,
            inactivity_timeout: Duration::ZERO,
            request_timeout: Duration::ZERO,
            interrupt_timeout: Duration::ZERO,
            deadlock_timeout: Duration::from_secs(300),
            startup_timeout: Duration::ZERO,
            graceful_timeout: Duration::from_secs(15),
            eviction_timeout: Duration::ZERO,
            shutdown_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(15),
            socket_timeout: None,
            queue_timeout: Duration::ZERO,
            listen_backlog: 100,
            socket_user: None,
            send_buffer_size: 0,
            receive_buffer_size: 0,
            header_buffer_size: 0,
            response_buffer_size: 0,
            response_socket_timeout: None,
            response_flush_delay: Duration::ZERO,
            cpu_time_limit: None,
            cpu_priority: 0,
            memory_limit: None,
            virtual_memory_limit: None,
            script_user: None,
            script_group: None,
            chroot: None,
            server_metrics: false,
            lifespan: Lifespan::Auto,
            lifespan_timeout: Duration::from_secs(60),
            max_tasks: 0,
        }
    }

    /// `wsgi.multithread`: mod_wsgi sets it whenever `threads != 1`.
    pub fn multithread(&self) -> bool {
        self.threads != 1
    }

    /// `wsgi.multiprocess`: True as soon as `processes=` is given, whatever its value.
    pub fn multiprocess(&self) -> bool {
        self.processes_given
    }

    /// `wsgi.run_once`: True only with `threads=1` and `maximum-requests=1`.
    pub fn run_once(&self) -> bool {
        self.threads == 1 && self.maximum_requests == 1
    }

    /// The process name to show, with mod_wsgi's one expansion: exactly `%{GROUP}` becomes
    /// `(wsgi:NAME)`. `None` leaves httpd's `argv[0]` alone.
    pub fn display_name_expanded(&self) -> Option<String> {
        self.display_name.as_deref().map(|d| {
            if d == "%{GROUP}" {
                format!("(wsgi:{})", self.name)
            } else {
                d.to_string()
            }
        })
    }
}

fn bad(msg: impl AsRef<str>) -> Error {
    Error::new(Code::BadDirective, format!("{DIRECTIVE}: {}", msg.as_ref()))
}

fn not_yet(option: &str) -> Error {
    Error::new(
        Code::NotSupported,
        format!("{DIRECTIVE}: option '{option}' is not supported yet by mod_rwsgi; remove it"),
    )
}

/// mod_wsgi keeps most values in a C `int`; larger values are refused rather than wrapped.
const INT_MAX: i64 = i32::MAX as i64;
/// `memory-limit`/`virtual-memory-limit` are `apr_int64_t`.
const INT64_MAX: i64 = i64::MAX;
/// `threads` must be below `WSGI_STACK_LAST - 1` (`0xffff - 1`).
const THREADS_MAX: i64 = 0xffff - 2;
/// Linux `NGROUPS_MAX`, including the primary group.
const NGROUPS_MAX: usize = 65536;

const NANOS_PER_SEC: u64 = 1_000_000_000;
const NANOS_PER_MILLI: u64 = 1_000_000;

/// One `option=value` being parsed, for error messages.
struct Ctx<'a> {
    group: &'a str,
    opt: &'a str,
    value: &'a str,
}

impl Ctx<'_> {
    fn invalid(&self, expected: &str) -> Error {
        bad(format!(
            "option '{}' has invalid value '{}' for daemon process group '{}'; use {expected}",
            self.opt, self.value, self.group
        ))
    }

    fn text(&self, expected: &str) -> Result<String, Error> {
        if self.value.is_empty() {
            Err(self.invalid(expected))
        } else {
            Ok(self.value.to_string())
        }
    }

    fn absolute_path(&self, expected: &str) -> Result<String, Error> {
        if self.value.starts_with('/') {
            Ok(self.value.to_string())
        } else {
            Err(self.invalid(expected))
        }
    }

    /// A whole decimal number in `min..=max`. mod_wsgi uses `atoi`, which reads "12abc" as 12
    /// and "abc" as 0; both are refused here instead of silently meaning something else.
    fn int(&self, min: i64, max: i64, expected: &str) -> Result<i64, Error> {
        match self.value.parse::<i64>() {
            Ok(n) if (min..=max).contains(&n) => Ok(n),
            _ => Err(self.invalid(expected)),
        }
    }

    /// A size that must be 0 (default) or at least `min`, up to `max`.
    fn size_or_zero(&self, min: i64, max: i64, expected: &str) -> Result<i64, Error> {
        let n = self.int(0, max, expected)?;
        if n != 0 && n < min {
            return Err(self.invalid(expected));
        }
        Ok(n)
    }

    /// A duration in `unit` (nanoseconds per unit). mod_wsgi takes whole numbers (`atoi`);
    /// decimal fractions such as `2.5` are accepted too, since every consumer keeps the value
    /// as a `Duration`. At most `i32::MAX` units, mod_wsgi's `int` range, so that deadlines
    /// computed from it can never overflow an `Instant`.
    fn duration(&self, unit: u64, expected: &str) -> Result<Duration, Error> {
        let (whole, frac) = match self.value.split_once('.') {
            Some((w, f)) if !f.is_empty() => (w, f),
            Some(_) => return Err(self.invalid(expected)),
            None => (self.value, ""),
        };
        let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if whole.is_empty() || !digits(whole) || !digits(frac) {
            return Err(self.invalid(expected));
        }
        let whole: u64 = match whole.parse() {
            Ok(w) if w <= i32::MAX as u64 => w,
            _ => return Err(self.invalid(expected)),
        };
        let mut nanos = whole * unit;
        let mut scale = unit / 10;
        for d in frac.bytes() {
            nanos += u64::from(d - b'0') * scale;
            scale /= 10;
        }
        Ok(Duration::from_nanos(nanos))
    }

    fn seconds(&self, zero: &str) -> Result<Duration, Error> {
        self.duration(
            NANOS_PER_SEC,
            &format!("seconds from 0 to 2147483647, whole or decimal, e.g. 60 or 2.5 (0 = {zero})"),
        )
    }

    fn id(&self, digits: &str, expected: &str) -> Result<u32, Error> {
        // `(uid_t)-1`/`(gid_t)-1` mean "no change" to set*id(), so they are not real ids.
        match digits.parse::<u32>() {
            Ok(n) if digits.bytes().all(|b| b.is_ascii_digit()) && n != u32::MAX => Ok(n),
            _ => Err(self.invalid(expected)),
        }
    }

    fn user(&self) -> Result<UserSpec, Error> {
        const EXPECTED: &str = "a user name or #uid, e.g. www-data or #33";
        match self.value.strip_prefix('#') {
            _ if self.value.is_empty() => Err(self.invalid(EXPECTED)),
            Some(id) => Ok(UserSpec::Id(self.id(id, EXPECTED)?)),
            None => Ok(UserSpec::Name(self.value.to_string())),
        }
    }

    fn group_spec(&self, item: &str) -> Result<GroupSpec, Error> {
        const EXPECTED: &str = "a group name or #gid, e.g. www-data or #33";
        match item.strip_prefix('#') {
            _ if item.is_empty() => Err(self.invalid(EXPECTED)),
            Some(id) => Ok(GroupSpec::Id(self.id(id, EXPECTED)?)),
            None => Ok(GroupSpec::Name(item.to_string())),
        }
    }

    fn on_off(&self) -> Result<bool, Error> {
        if self.value.eq_ignore_ascii_case("on") {
            Ok(true)
        } else if self.value.eq_ignore_ascii_case("off") {
            Ok(false)
        } else {
            Err(self.invalid("On or Off"))
        }
    }
}

fn positive(n: i64) -> Option<u64> {
    u64::try_from(n).ok().filter(|&n| n > 0)
}

fn nonzero(d: Duration) -> Option<Duration> {
    Some(d).filter(|d| !d.is_zero())
}

/// Validates one option's value and stores it. Returns whether the value asks for the
/// feature at all (false for `interrupt-timeout=0` and `server-metrics=Off`).
fn set(s: &mut DaemonSpec, c: &Ctx<'_>) -> Result<bool, Error> {
    const BYTES: &str = "a size in bytes";
    match c.opt {
        "user" => {
            let user = c.user()?;
            if user == UserSpec::Name("root".into()) || user == UserSpec::Id(0) {
                return Err(bad(format!(
                    "daemon process group '{}' may not run as root (user={}); name an \
                     unprivileged user, or remove user= to run as Apache's User",
                    c.group, c.value
                )));
            }
            s.user = Some(user);
        }
        "group" => s.group = Some(c.group_spec(c.value)?),
        "supplementary-groups" => {
            let mut list = Vec::new();
            // A trailing comma is harmless; mod_wsgi stops at the first empty item, which
            // would silently drop the groups after "a,,b", so that is refused here.
            for item in c.value.strip_suffix(',').unwrap_or(c.value).split(',') {
                if item.is_empty() {
                    return Err(c.invalid(
                        "a comma-separated list of group names or #gids, e.g. adm,#1001",
                    ));
                }
                list.push(c.group_spec(item)?);
            }
            if list.len() >= NGROUPS_MAX {
                return Err(c.invalid("at most 65535 supplementary groups"));
            }
            s.supplementary_groups = list;
        }
        "processes" => {
            s.processes = c.int(
                1,
                INT_MAX,
                "a whole number of processes from 1 to 2147483647",
            )? as u32;
            s.processes_given = true;
        }
        "threads" => {
            s.threads = c.int(
                0,
                THREADS_MAX,
                "a whole number of threads per process from 0 to 65533 \
                 (0 = no request threads, only WSGIImportScript)",
            )? as u32
        }
        "umask" => {
            const EXPECTED: &str = "an octal mask from 0 to 0777, e.g. 0022";
            let v = c.value;
            if v.is_empty() || !v.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
                return Err(c.invalid(EXPECTED));
            }
            match u32::from_str_radix(v, 8) {
                Ok(m) if m <= 0o777 => s.umask = Some(m),
                _ => return Err(c.invalid(EXPECTED)),
            }
        }
        "chroot" => s.chroot = Some(c.absolute_path("an absolute directory path")?),
        "home" => s.home = Some(c.absolute_path("an absolute directory path")?),
        "lang" => s.lang = Some(c.text("a locale name, e.g. en_US.UTF-8")?),
        "locale" => s.locale = Some(c.text("a locale name, e.g. en_US.UTF-8")?),
        "python-home" => {
            s.python_home = Some(
                c.absolute_path("the absolute path of a Python prefix or virtual environment")?,
            )
        }
        // As WSGIPythonPath: ':'-separated, empty entries (and an empty value) add nothing.
        "python-path" => {
            s.python_path = c
                .value
                .split(':')
                .filter(|p| !p.is_empty())
                .map(String::from)
                .collect()
        }
        "python-eggs" => s.python_eggs = Some(c.text("a directory path")?),
        "switch-interval" => match c.value.parse::<f64>() {
            Ok(x) if x > 0.0 && x.is_finite() => s.switch_interval = Some(x),
            _ => return Err(c.invalid("seconds > 0, e.g. 0.005")),
        },
        "stack-size" => {
            s.stack_size = positive(c.int(
                1,
                INT_MAX,
                "a size in bytes from 1 to 2147483647, e.g. 524288",
            )?)
        }
        "maximum-requests" => {
            s.maximum_requests = c.int(
                0,
                INT_MAX,
                "a whole number of requests from 0 to 2147483647 (0 = no limit)",
            )? as u64
        }
        "startup-timeout" => s.startup_timeout = c.seconds("off")?,
        "shutdown-timeout" => s.shutdown_timeout = c.seconds("exit at once")?,
        "deadlock-timeout" => s.deadlock_timeout = c.seconds("off")?,
        "inactivity-timeout" => s.inactivity_timeout = c.seconds("off")?,
        "request-timeout" => s.request_timeout = c.seconds("off")?,
        "interrupt-timeout" => {
            s.interrupt_timeout = c.seconds("off")?;
            return Ok(!s.interrupt_timeout.is_zero());
        }
        "graceful-timeout" => s.graceful_timeout = c.seconds("no drain")?,
        "eviction-timeout" => s.eviction_timeout = c.seconds("use graceful-timeout")?,
        "restart-interval" => s.restart_interval = c.seconds("off")?,
        "connect-timeout" => s.connect_timeout = c.seconds("a single attempt")?,
        "socket-timeout" => s.socket_timeout = nonzero(c.seconds("Apache's Timeout")?),
        "queue-timeout" => s.queue_timeout = c.seconds("off")?,
        // mod_wsgi accepts 0 (refuses only negative values); listen(fd, 0) is valid.
        "listen-backlog" => {
            s.listen_backlog =
                c.int(0, INT_MAX, "a whole number from 0 to 2147483647, e.g. 100")? as u32
        }
        "display-name" => {
            s.display_name = Some(c.text("a process name, or %{GROUP} for (wsgi:NAME)")?)
        }
        "send-buffer-size" => {
            s.send_buffer_size = c.size_or_zero(
                512,
                INT_MAX,
                &format!("{BYTES} of at least 512, or 0 for the system default"),
            )? as u32;
            return Ok(s.send_buffer_size != 0);
        }
        "receive-buffer-size" => {
            s.receive_buffer_size = c.size_or_zero(
                512,
                INT_MAX,
                &format!("{BYTES} of at least 512, or 0 for the system default"),
            )? as u32;
            return Ok(s.receive_buffer_size != 0);
        }
        "header-buffer-size" => {
            s.header_buffer_size = c.size_or_zero(
                8192,
                INT_MAX,
                &format!("{BYTES} of at least 8192, or 0 for the default (32768)"),
            )? as u32
        }
        "response-buffer-size" => {
            s.response_buffer_size = c.size_or_zero(
                65536,
                INT_MAX,
                &format!("{BYTES} of at least 65536, or 0 for the default (8 MiB)"),
            )? as u64
        }
        "response-socket-timeout" => {
            s.response_socket_timeout = nonzero(c.seconds("use socket-timeout")?);
            return Ok(s.response_socket_timeout.is_some());
        }
        // Milliseconds, as in mod_wsgi; fractions are accepted like for the timeouts.
        "response-flush-delay" => {
            s.response_flush_delay = c.duration(
                NANOS_PER_MILLI,
                "milliseconds from 0 to 2147483647, e.g. 5 (0 = flush without waiting)",
            )?;
            // mod_rwsgi flushes every block the application produces at once, which is what
            // 0 asks for; a delay is not supported yet.
            return Ok(!s.response_flush_delay.is_zero());
        }
        "socket-user" => s.socket_user = Some(c.user()?),
        "script-user" => s.script_user = Some(c.user()?),
        "script-group" => s.script_group = Some(c.group_spec(c.value)?),
        "cpu-time-limit" => {
            s.cpu_time_limit = positive(c.int(
                0,
                INT_MAX,
                "whole seconds of CPU time from 0 to 2147483647 (0 = no limit)",
            )?)
        }
        "cpu-priority" => {
            s.cpu_priority = c.int(
                i32::MIN.into(),
                INT_MAX,
                "a whole number, e.g. 5 (a nice value: -20 is the highest priority, 19 the lowest)",
            )? as i32
        }
        "memory-limit" => {
            s.memory_limit = positive(c.int(
                0,
                INT64_MAX,
                &format!("{BYTES} (0 = no limit), e.g. 536870912"),
            )?)
        }
        "virtual-memory-limit" => {
            s.virtual_memory_limit = positive(c.int(
                0,
                INT64_MAX,
                &format!("{BYTES} (0 = no limit), e.g. 1073741824"),
            )?)
        }
        "server-metrics" => {
            s.server_metrics = c.on_off()?;
            return Ok(s.server_metrics);
        }
        "lifespan" => {
            s.lifespan = match c.value.to_ascii_lowercase().as_str() {
                "auto" => Lifespan::Auto,
                "on" => Lifespan::On,
                "off" => Lifespan::Off,
                _ => return Err(c.invalid("auto, on or off")),
            }
        }
        "lifespan-timeout" => s.lifespan_timeout = c.seconds("no limit")?,
        "max-tasks" => {
            s.max_tasks = c.int(
                0,
                1_000_000,
                "a whole number of tasks from 0 (no limit) to 1000000",
            )? as u32
        }
        other => unreachable!("option {other} is in OPTIONS but has no parser"),
    }
    Ok(true)
}

/// A hint for an unknown option: a case or `_` slip, or a 4.x option mod_wsgi 6 removed.
fn hint(option: &str) -> String {
    if option.starts_with("newrelic-") {
        return " (New Relic support was removed in mod_wsgi 6.0)".into();
    }
    let normal = option.to_ascii_lowercase().replace('_', "-");
    match OPTIONS.iter().find(|(n, _)| *n == normal) {
        Some((n, _)) => format!(" (did you mean '{n}'?)"),
        None => String::new(),
    }
}

/// Parses the words of a `WSGIDaemonProcess` directive (already split and unquoted by the
/// caller); `words[0]` is the group name, the rest are `option=value`. Value errors
/// ([`Code::BadDirective`]) take precedence over options not supported yet
/// ([`Code::NotSupported`]), so an operator sees every typo before being told to remove a
/// feature.
pub fn parse(words: &[String]) -> Result<DaemonSpec, Error> {
    let Some((name, options)) = words.split_first() else {
        return Err(bad("the daemon process group name is missing; usage: \
             WSGIDaemonProcess <name> [option=value ...]"));
    };
    if name.is_empty() {
        return Err(bad(
            "the daemon process group name is empty; give a name, e.g. WSGIDaemonProcess site",
        ));
    }
    if name.contains('/') {
        return Err(bad(format!(
            "daemon process group name '{name}' contains '/'; choose a name without '/'"
        )));
    }
    if let Some((k, _)) = name.split_once('=')
        && option_support(k).is_some()
    {
        return Err(bad(format!(
            "'{name}' looks like an option, but the first argument must be the daemon process \
             group name; write WSGIDaemonProcess <name> {name}"
        )));
    }

    let mut spec = DaemonSpec::new(name.as_str());
    let mut seen: Vec<&str> = Vec::new();
    let mut unsupported: Option<Error> = None;
    for word in options {
        let Some((opt, value)) = word.split_once('=').filter(|(k, _)| !k.is_empty()) else {
            let spaced = if option_support(word).is_some() {
                "; write option=value without spaces around '='"
            } else {
                ""
            };
            return Err(bad(format!(
                "'{word}' is not of the form option=value (daemon process group '{name}'){spaced}"
            )));
        };
        let Some(support) = option_support(opt) else {
            let valid: Vec<&str> = OPTIONS.iter().map(|&(n, _)| n).collect();
            return Err(bad(format!(
                "unknown option '{opt}' for daemon process group '{name}'{}; valid options \
                 are: {}",
                hint(opt),
                valid.join(", ")
            )));
        };
        if seen.contains(&opt) {
            return Err(bad(format!(
                "option '{opt}' is given more than once for daemon process group '{name}'; \
                 keep one"
            )));
        }
        seen.push(opt);
        let active = set(
            &mut spec,
            &Ctx {
                group: name,
                opt,
                value,
            },
        )?;
        if support == NotYet && active && unsupported.is_none() {
            unsupported = Some(not_yet(opt));
        }
    }
    if spec.script_user.is_some() && spec.script_group.is_some() {
        return Err(bad(format!(
            "daemon process group '{name}' has both script-user= and script-group=; \
             mod_wsgi allows only one of them, keep one"
        )));
    }
    match unsupported {
        Some(e) => Err(e),
        None => Ok(spec),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(line: &str) -> Vec<String> {
        line.split_whitespace().map(String::from).collect()
    }

    fn p(line: &str) -> Result<DaemonSpec, Error> {
        parse(&w(line))
    }

    fn err(line: &str) -> Error {
        p(line).expect_err(line)
    }

    fn bad_value(line: &str) {
        let e = err(line);
        assert_eq!(e.code, Code::BadDirective, "{line}: {e}");
        assert!(e.msg.contains("has invalid value"), "{line}: {e}");
    }

    #[test]
    fn table_is_mod_wsgi_6_option_list() {
        // mod_wsgi 6's 44, and mod_rwsgi's lifespan, lifespan-timeout and max-tasks.
        assert_eq!(OPTIONS.len(), 44 + 3);
        let mut names: Vec<_> = OPTIONS.iter().map(|(n, _)| *n).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), 44 + 3);
        let not_yet: Vec<_> = OPTIONS
            .iter()
            .filter(|(_, s)| *s == NotYet)
            .map(|(n, _)| *n)
            .collect();
        assert!(not_yet.is_empty(), "{not_yet:?}");
    }

    #[test]
    fn every_option_has_a_parser() {
        for (name, _) in OPTIONS {
            // Any outcome but the unreachable! panic is fine.
            let _ = parse(&["g".to_string(), format!("{name}=1")]);
        }
    }

    #[test]
    fn defaults() {
        let s = p("site").unwrap();
        assert_eq!(s, DaemonSpec::new("site"));
        assert_eq!(s.name, "site");
        assert_eq!((s.processes, s.processes_given, s.threads), (1, false, 15));
        assert_eq!(s.deadlock_timeout, Duration::from_secs(300));
        assert_eq!(s.graceful_timeout, Duration::from_secs(15));
        assert_eq!(s.shutdown_timeout, Duration::from_secs(5));
        assert_eq!(s.connect_timeout, Duration::from_secs(15));
        assert_eq!(s.response_flush_delay, Duration::ZERO);
        assert_eq!(s.listen_backlog, 100);
        assert_eq!(s.socket_timeout, None);
        assert_eq!(s.response_socket_timeout, None);
        assert_eq!(s.maximum_requests, 0);
        assert_eq!(s.lifespan, Lifespan::Auto);
        assert_eq!(s.lifespan_timeout, Duration::from_secs(60));
        assert_eq!(p("site max-tasks=50").unwrap().max_tasks, 50);
        assert!(p("site max-tasks=-1").is_err());
        let s = p("site lifespan=Off lifespan-timeout=2.5").unwrap();
        assert_eq!(s.lifespan, Lifespan::Off);
        assert_eq!(s.lifespan_timeout, Duration::from_millis(2500));
        let e = err("site lifespan=maybe");
        assert!(e.msg.contains("auto, on or off"), "{e}");
        assert!(s.restart_interval.is_zero() && s.queue_timeout.is_zero());
        assert!(s.user.is_none() && s.group.is_none() && s.supplementary_groups.is_empty());
        assert!(s.python_path.is_empty() && s.python_home.is_none());
        assert!(!s.server_metrics);
        assert!(s.multithread());
        assert!(!s.multiprocess());
        assert!(!s.run_once());
        assert_eq!(s.display_name_expanded(), None);
    }

    #[test]
    fn baseline_from_the_docs() {
        let s = p(
            "site display-name=%{GROUP} lang=en_US.UTF-8 locale=en_US.UTF-8 threads=5 \
             queue-timeout=45 socket-timeout=60 connect-timeout=15 request-timeout=60 \
             interrupt-timeout=0 inactivity-timeout=0 startup-timeout=15 deadlock-timeout=60 \
             graceful-timeout=15 eviction-timeout=0 restart-interval=0 shutdown-timeout=5 \
             maximum-requests=0",
        )
        .unwrap();
        assert_eq!(s.display_name_expanded().as_deref(), Some("(wsgi:site)"));
        assert_eq!(s.lang.as_deref(), Some("en_US.UTF-8"));
        assert_eq!(s.locale.as_deref(), Some("en_US.UTF-8"));
        assert_eq!(s.threads, 5);
        assert_eq!(s.queue_timeout, Duration::from_secs(45));
        assert_eq!(s.socket_timeout, Some(Duration::from_secs(60)));
        assert_eq!(s.request_timeout, Duration::from_secs(60));
        assert_eq!(s.interrupt_timeout, Duration::ZERO);
        assert_eq!(s.startup_timeout, Duration::from_secs(15));
        assert_eq!(s.deadlock_timeout, Duration::from_secs(60));
        assert_eq!(s.eviction_timeout, Duration::ZERO);
        assert!(!s.multiprocess());
        // The docs' other example.
        let s = p("www.site2.com user=bob group=bob processes=2 threads=25").unwrap();
        assert_eq!(s.user, Some(UserSpec::Name("bob".into())));
        assert_eq!(s.group, Some(GroupSpec::Name("bob".into())));
        assert_eq!((s.processes, s.threads), (2, 25));
        assert!(s.multiprocess() && s.multithread());
    }

    #[test]
    fn every_option_round_trips() {
        let s = p(
            "g user=#1000 group=#1001 supplementary-groups=adm,#27,staff, processes=3 \
             threads=0 umask=0027 home=/srv/app lang=C.UTF-8 locale=C python-home=/venv \
             python-path=/a::/b python-eggs=/tmp/eggs switch-interval=0.005 stack-size=524288 \
             maximum-requests=1000 startup-timeout=1.5 shutdown-timeout=7 deadlock-timeout=0 \
             inactivity-timeout=600 request-timeout=30 interrupt-timeout=0 \
             graceful-timeout=0.25 eviction-timeout=20 restart-interval=3600 \
             connect-timeout=2 socket-timeout=0 queue-timeout=10 listen-backlog=511 \
             display-name=wsgi-app send-buffer-size=0 receive-buffer-size=0 \
             header-buffer-size=65536 response-buffer-size=65536 \
             response-socket-timeout=0 response-flush-delay=0 socket-user=apache \
             cpu-time-limit=120 cpu-priority=-5 memory-limit=536870912 \
             virtual-memory-limit=8589934592 server-metrics=Off",
        )
        .unwrap();
        assert_eq!(s.user, Some(UserSpec::Id(1000)));
        assert_eq!(s.group, Some(GroupSpec::Id(1001)));
        assert_eq!(
            s.supplementary_groups,
            [
                GroupSpec::Name("adm".into()),
                GroupSpec::Id(27),
                GroupSpec::Name("staff".into())
            ]
        );
        assert_eq!((s.processes, s.processes_given, s.threads), (3, true, 0));
        assert_eq!(s.umask, Some(0o027));
        assert_eq!(s.home.as_deref(), Some("/srv/app"));
        assert_eq!(s.lang.as_deref(), Some("C.UTF-8"));
        assert_eq!(s.locale.as_deref(), Some("C"));
        assert_eq!(s.python_home.as_deref(), Some("/venv"));
        assert_eq!(s.python_path, ["/a", "/b"]);
        assert_eq!(s.python_eggs.as_deref(), Some("/tmp/eggs"));
        assert_eq!(s.switch_interval, Some(0.005));
        assert_eq!(s.stack_size, Some(524288));
        assert_eq!(s.maximum_requests, 1000);
        assert_eq!(s.startup_timeout, Duration::from_millis(1500));
        assert_eq!(s.shutdown_timeout, Duration::from_secs(7));
        assert_eq!(s.deadlock_timeout, Duration::ZERO);
        assert_eq!(s.inactivity_timeout, Duration::from_secs(600));
        assert_eq!(s.request_timeout, Duration::from_secs(30));
        assert_eq!(s.graceful_timeout, Duration::from_millis(250));
        assert_eq!(s.eviction_timeout, Duration::from_secs(20));
        assert_eq!(s.restart_interval, Duration::from_secs(3600));
        assert_eq!(s.connect_timeout, Duration::from_secs(2));
        assert_eq!(s.socket_timeout, None);
        assert_eq!(s.queue_timeout, Duration::from_secs(10));
        assert_eq!(s.listen_backlog, 511);
        assert_eq!(s.display_name_expanded().as_deref(), Some("wsgi-app"));
        assert_eq!((s.send_buffer_size, s.receive_buffer_size), (0, 0));
        assert_eq!(s.header_buffer_size, 65536);
        assert_eq!(s.response_buffer_size, 65536);
        assert_eq!(s.response_socket_timeout, None);
        assert_eq!(s.response_flush_delay, Duration::ZERO);
        let b = p("g send-buffer-size=512 receive-buffer-size=4096").unwrap();
        assert_eq!((b.send_buffer_size, b.receive_buffer_size), (512, 4096));
        assert_eq!(
            p("g response-socket-timeout=9")
                .unwrap()
                .response_socket_timeout,
            Some(Duration::from_secs(9))
        );
        assert_eq!(
            p("g response-flush-delay=0.5")
                .unwrap()
                .response_flush_delay,
            Duration::from_micros(500)
        );
        assert_eq!(s.socket_user, Some(UserSpec::Name("apache".into())));
        assert_eq!(s.cpu_time_limit, Some(120));
        assert_eq!(s.cpu_priority, -5);
        assert_eq!(s.memory_limit, Some(536870912));
        assert_eq!(s.virtual_memory_limit, Some(8589934592));
        assert!(!s.server_metrics);
        assert!(s.multithread(), "threads=0 is not single-threaded");

        // Zero values that mean "off"/"default".
        let s = p("g cpu-time-limit=0 memory-limit=0 virtual-memory-limit=0 \
             response-socket-timeout=0 response-flush-delay=0 umask=0 listen-backlog=0 \
             python-path=")
        .unwrap();
        assert_eq!(s.cpu_time_limit, None);
        assert_eq!((s.memory_limit, s.virtual_memory_limit), (None, None));
        assert_eq!(s.response_socket_timeout, None);
        assert_eq!(s.response_flush_delay, Duration::ZERO);
        assert_eq!(s.umask, Some(0));
        assert_eq!(s.listen_backlog, 0);
        assert!(s.python_path.is_empty());

        // Limits of the ranges mod_wsgi checks.
        let s = p("g threads=65533 processes=1 umask=777 cpu-priority=19 \
             header-buffer-size=8192 response-buffer-size=0 socket-user=#0 group=#0 \
             maximum-requests=1")
        .unwrap();
        assert_eq!(s.threads, 65533);
        assert_eq!(s.umask, Some(0o777));
        assert_eq!(s.socket_user, Some(UserSpec::Id(0)));
        assert_eq!(s.group, Some(GroupSpec::Id(0)));
        assert!(
            s.multiprocess(),
            "processes=1 given still means multiprocess"
        );
        assert!(!s.run_once());
        let s = p("g threads=1 maximum-requests=1").unwrap();
        assert!(s.run_once() && !s.multithread());
        let s = p("g server-metrics=off").unwrap();
        assert!(!s.server_metrics);
    }

    #[test]
    fn name_checks() {
        let e = parse(&[]).unwrap_err();
        assert_eq!(e.code, Code::BadDirective);
        assert!(e.msg.contains("name is missing"), "{e}");
        let e = parse(&[String::new()]).unwrap_err();
        assert!(e.msg.contains("name is empty"), "{e}");
        let e = err("a/b threads=1");
        assert_eq!(
            e.msg,
            "WSGIDaemonProcess: daemon process group name 'a/b' contains '/'; choose a name \
             without '/'"
        );
        let e = err("threads=5");
        assert!(
            e.msg
                .contains("first argument must be the daemon process group name")
        );
        // Quoting is the caller's job: a name with a space arrives as one word.
        let s = parse(&["my site".to_string(), "python-path=/a b:/c".to_string()]).unwrap();
        assert_eq!(s.name, "my site");
        assert_eq!(s.python_path, ["/a b", "/c"]);
        assert_eq!(
            p("www.example.com display-name=%{GROUP}")
                .unwrap()
                .display_name_expanded()
                .as_deref(),
            Some("(wsgi:www.example.com)")
        );
        // Only the exact %{GROUP} is expanded, as in mod_wsgi.
        assert_eq!(
            p("g display-name=x%{GROUP}")
                .unwrap()
                .display_name_expanded()
                .as_deref(),
            Some("x%{GROUP}")
        );
    }

    #[test]
    fn unknown_repeated_and_malformed_options() {
        let e = err("site bogus=1");
        assert_eq!(e.code, Code::BadDirective);
        assert!(
            e.msg.starts_with(
                "WSGIDaemonProcess: unknown option 'bogus' for daemon process group 'site'; \
                 valid options are: user, group, supplementary-groups, processes,"
            ),
            "{e}"
        );
        assert!(
            e.msg
                .ends_with("server-metrics, lifespan, lifespan-timeout, max-tasks"),
            "{e}"
        );
        let e = err("site Threads=5");
        assert!(e.msg.contains("(did you mean 'threads'?)"), "{e}");
        let e = err("site maximum_requests=5");
        assert!(e.msg.contains("(did you mean 'maximum-requests'?)"), "{e}");
        let e = err("site newrelic-config-file=/x");
        assert!(e.msg.contains("New Relic support was removed"), "{e}");

        let e = err("site threads=5 processes=2 threads=6");
        assert_eq!(e.code, Code::BadDirective);
        assert_eq!(
            e.msg,
            "WSGIDaemonProcess: option 'threads' is given more than once for daemon process \
             group 'site'; keep one"
        );

        let e = err("site threads");
        assert!(
            e.msg.contains("'threads' is not of the form option=value"),
            "{e}"
        );
        assert!(e.msg.contains("without spaces around '='"), "{e}");
        let e = err("site =5");
        assert!(
            e.msg.contains("'=5' is not of the form option=value"),
            "{e}"
        );
    }

    #[test]
    fn bad_numbers() {
        for line in [
            "g processes=0",
            "g processes=-1",
            "g processes=",
            "g processes=2x",
            "g processes=2147483648",
            "g threads=-1",
            "g threads=65534",
            "g threads=abc",
            "g threads=1.5",
            "g maximum-requests=-1",
            "g stack-size=0",
            "g listen-backlog=-1",
            "g send-buffer-size=511",
            "g receive-buffer-size=1",
            "g header-buffer-size=8191",
            "g response-buffer-size=65535",
            "g cpu-time-limit=1.5",
            "g cpu-priority=",
            "g memory-limit=-1",
            "g virtual-memory-limit=1G",
            "g switch-interval=0",
            "g switch-interval=nan",
            "g switch-interval=inf",
            "g switch-interval=",
            "g request-timeout=-1",
            "g request-timeout=",
            "g request-timeout=1.",
            "g request-timeout=.5",
            "g request-timeout=1e3",
            "g request-timeout=2147483648",
            "g socket-timeout=10s",
            "g response-flush-delay=-5",
            "g server-metrics=yes",
            "g home=relative/dir",
            "g home=",
            "g chroot=jail",
            "g python-home=venv",
            "g lang=",
            "g display-name=",
            "g user=",
            "g user=#",
            "g user=#abc",
            "g user=#-1",
            "g user=#4294967295",
            "g group=",
            "g socket-user=",
            "g supplementary-groups=",
            "g supplementary-groups=a,,b",
            "g supplementary-groups=#x",
        ] {
            bad_value(line);
        }
        let e = err("site threads=abc");
        assert_eq!(
            e.msg,
            "WSGIDaemonProcess: option 'threads' has invalid value 'abc' for daemon process \
             group 'site'; use a whole number of threads per process from 0 to 65533 \
             (0 = no request threads, only WSGIImportScript)"
        );
        // Largest accepted values.
        let s = p(
            "g request-timeout=2147483647 memory-limit=9223372036854775807 \
             cpu-priority=-2147483648",
        )
        .unwrap();
        assert_eq!(s.request_timeout, Duration::from_secs(2147483647));
        assert_eq!(s.memory_limit, Some(i64::MAX as u64));
        assert_eq!(s.cpu_priority, i32::MIN);
        // Fractions below the nanosecond are truncated, not an error.
        let s = p("g request-timeout=0.0000000019").unwrap();
        assert_eq!(s.request_timeout, Duration::from_nanos(1));
    }

    #[test]
    fn root_is_refused() {
        for line in ["site user=root", "site user=#0", "site user=#000"] {
            let e = err(line);
            assert_eq!(e.code, Code::BadDirective, "{line}");
            assert!(
                e.msg.starts_with(
                    "WSGIDaemonProcess: daemon process group 'site' may not run as root"
                ),
                "{e}"
            );
            assert!(
                e.msg.contains("remove user= to run as Apache's User"),
                "{e}"
            );
        }
        assert_eq!(p("site user=#33").unwrap().user, Some(UserSpec::Id(33)),);
    }

    #[test]
    fn bad_umask() {
        for v in [
            "", "8", "0089", "-022", "+022", "0o22", "1000", "0x1f", "02 2",
        ] {
            let e = parse(&["g".into(), format!("umask={v}")]).unwrap_err();
            assert_eq!(e.code, Code::BadDirective, "{v}");
            assert!(e.msg.contains("an octal mask from 0 to 0777"), "{v}: {e}");
        }
        assert_eq!(p("g umask=022").unwrap().umask, Some(0o22));
        assert_eq!(p("g umask=0002").unwrap().umask, Some(0o2));
    }

    #[test]
    fn request_timeout_scales_with_threads_as_mod_wsgi_6() {
        let s = p("site threads=1 request-timeout=10").unwrap();
        assert_eq!(s.wsgi_request_timeout(), Duration::from_secs(10));
        let s = p("site threads=15 request-timeout=60").unwrap();
        let t = s.wsgi_request_timeout().as_secs_f64();
        assert!((t - 60.0 * (1.0 + 15f64.ln())).abs() < 0.001, "{t}");
        assert!(p("site").unwrap().wsgi_request_timeout().is_zero());
    }

    #[test]
    fn options_that_turn_features_on() {
        assert!(p("site server-metrics=On").unwrap().server_metrics);
        // Values leaving the feature off are what mod_rwsgi does anyway.
        p("site interrupt-timeout=0 server-metrics=off").unwrap();
        assert_eq!(
            p("site script-user=bob").unwrap().script_user,
            Some(UserSpec::Name("bob".into()))
        );
        assert_eq!(
            p("site script-group=#100").unwrap().script_group,
            Some(GroupSpec::Id(100))
        );
        assert_eq!(
            p("site interrupt-timeout=0.5").unwrap().interrupt_timeout,
            Duration::from_millis(500)
        );
        // Value errors win over "not supported yet", wherever they are.
        bad_value("site chroot=/jail threads=x");
        assert_eq!(
            p("site chroot=/jail").unwrap().chroot.as_deref(),
            Some("/jail")
        );
        bad_value("site chroot=relative");
        bad_value("site script-group=");
        bad_value("site interrupt-timeout=-1");
        let e = err("site script-user=bob script-group=bob");
        assert_eq!(e.code, Code::BadDirective);
        assert!(e.msg.contains("both script-user= and script-group="), "{e}");
    }
}
