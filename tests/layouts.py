"""Apache layouts for the packaging tests (tool side: run by pytest, never inside httpd).

- `write_apxs`: an apxs wrapper that answers `-q VAR` for another layout and hands every other
  variable to Debian's apxs, the way a second Apache's own apxs would.
- `DebianCopy`: a copy of /etc/apache2 with private run/lock/log dirs (its envvars rewritten), the
  real /etc/apache2 untouched; a2enmod/a2dismod run against it through APACHE_CONFDIR, with their
  state markers in a private APACHE_STATE_DIRECTORY.
- `RelocatedTree`: an httpd:2.4-style tree (bin/httpd, bin/apxs, modules/, include/, conf/httpd.conf,
  logs/) made from Debian's apache2 files, like the official image's /usr/local/apache2.

Both server classes reuse harness.Apache (free port, start, stop by PID, requests, error log):
they only change how the configuration is written and how httpd is invoked.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import harness

REPO = harness.REPO
DEBIAN_APXS = "/usr/bin/apxs"
DEBIAN_CONFDIR = Path("/etc/apache2")
A2ENMOD = "/usr/sbin/a2enmod"
A2DISMOD = "/usr/sbin/a2dismod"
SYSTEM_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
CMD_TIMEOUT = 120


def write_apxs(path: Path, answers: dict[str, str], unknown: tuple[str, ...] = ()) -> Path:
    """Write an executable apxs at `path` answering `-q NAME` from `answers` (NAME and its lower
    case), failing like apxs for the `unknown` names, and answering every other query from
    Debian's apxs; any other use fails."""
    cases = "\n".join([f"    {k}|{k.lower()}) echo '{v}' ;;" for k, v in answers.items()]
                      + [f"    {k}|{k.lower()}) echo 'apxs:Error: Invalid query string {k}' >&2;"
                         f" exit 1 ;;" for k in unknown])
    path.write_text(f"""#!/bin/sh
# apxs of a test layout (tests/layouts.py): -q VAR answers for that layout.
if [ "$#" -ne 2 ] || [ "$1" != "-q" ]; then
    echo "test apxs: only '-q VAR' is supported" >&2
    exit 1
fi
case "$2" in
{cases}
    *) exec {DEBIAN_APXS} -q "$2" ;;
esac
""")
    os.chmod(path, 0o755)
    return path


def debian_apxs_query(var: str) -> str:
    return subprocess.run([DEBIAN_APXS, "-q", var], stdout=subprocess.PIPE, check=True,
                          timeout=CMD_TIMEOUT).stdout.decode().strip()


# Variables of the caller's environment that would change what make, a2enmod or apxs do.
_CLEARED = ("APXS", "DESTDIR", "MODULE", "CARGO", "CARGO_TARGET_DIR", "DEBIAN_LAYOUT",
            "A2DISMOD", "RWSGI_APP_DIR", "RWSGI_SRC", "MAKEFLAGS", "MFLAGS", "MAKELEVEL")


def run(cmd, env: dict | None = None, cwd=None, timeout: float = CMD_TIMEOUT):
    """Run a command, stdout and stderr merged; return (returncode, output). The caller's
    environment is kept (cargo may need RUSTUP_HOME/CARGO_HOME) except what would redirect the
    command: APACHE_* and the Makefile's variables; `env` is added on top."""
    full = {k: v for k, v in os.environ.items()
            if not k.startswith("APACHE_") and k not in _CLEARED}
    full.setdefault("PATH", SYSTEM_PATH)
    full["LANG"] = "C.UTF-8"
    full.update(env or {})
    p = subprocess.run([str(c) for c in cmd], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       env=full, cwd=cwd, timeout=timeout)
    return p.returncode, p.stdout.decode("utf-8", "replace")


def make(*args, env: dict | None = None, timeout: float = CMD_TIMEOUT):
    """`make -C <repo> ARGS`."""
    return run(["make", "-C", REPO, *args], env=env, timeout=timeout)


class DebianCopy(harness.Apache):
    """A private copy of Debian's /etc/apache2 under the ServerRoot, served by Debian's apache2
    with `-d <copy>` and the copy's envvars (private run, lock and log dirs)."""

    def __init__(self, name: str):
        super().__init__(mpm="event", mode="embedded", load_module=False, name=name)
        self.confdir = self.root / "etc" / "apache2"
        self.libexec = self.root / "modules"
        self.a2state = self.root / "a2state"
        (self.root / "etc").mkdir(mode=0o755)
        shutil.copytree(DEBIAN_CONFDIR, self.confdir, symlinks=True)
        for d in (self.libexec, self.a2state, self.root / "lock"):
            d.mkdir(mode=0o755)
        self.pid_file = self.root / "run" / "apache2.pid"
        self.log_path = self.root / "logs" / "error.log"
        self.envvars = {
            "APACHE_RUN_USER": "www-data",
            "APACHE_RUN_GROUP": "www-data",
            "APACHE_PID_FILE": str(self.pid_file),
            "APACHE_RUN_DIR": str(self.root / "run"),
            "APACHE_LOCK_DIR": str(self.root / "lock"),
            "APACHE_LOG_DIR": str(self.root / "logs"),
        }
        (self.confdir / "envvars").write_text(
            "# rewritten by tests/layouts.py: private run, lock and log dirs\n"
            + "".join(f"export {k}={v}\n" for k, v in self.envvars.items()))
        # Only the test's own port; the default site's <VirtualHost *:80> then never matches.
        (self.confdir / "ports.conf").write_text(f"Listen 127.0.0.1:{self.port}\n")
        self.apxs = write_apxs(self.root / "apxs", {
            "LIBEXECDIR": str(self.libexec), "SYSCONFDIR": str(self.confdir)})
        self.test_conf = self.confdir / "conf-enabled" / "zz-rwsgi-test.conf"

    def a2(self, tool: str, *args):
        """a2enmod/a2dismod against the copy (never /etc/apache2 or /var/lib/apache2)."""
        return run([tool, *args], env={"APACHE_CONFDIR": str(self.confdir),
                                       "APACHE_STATE_DIRECTORY": str(self.a2state)})

    def enabled(self, module: str) -> bool:
        return (self.confdir / "mods-enabled" / f"{module}.load").is_symlink()

    def write_conf(self, fragment: str | None = None) -> Path:
        if fragment is not None:
            self.fragment = self.subst(fragment)
        self.test_conf.write_text(f"ServerName 127.0.0.1\n{self.fragment}")
        os.chmod(self.test_conf, 0o644)
        return self.test_conf

    def _env(self):
        return {**super()._env(), **self.envvars}

    def _ctl(self, *args, timeout=60):
        return subprocess.run([harness.APACHE_BIN, "-d", str(self.confdir), *args],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              env=self._env(), timeout=timeout, cwd=str(self.root))


# Debian modules the relocated tree links into modules/ (the official image has them all;
# unixd and log_config are built into Debian's apache2).
RELOCATED_MODULES = ["mod_mpm_event.so", "mod_mpm_prefork.so", "mod_authn_core.so",
                     "mod_authz_core.so", "mod_mime.so", "mod_dir.so", "mod_alias.so"]


class RelocatedTree(harness.Apache):
    """An Apache laid out like the official httpd:2.4 image's /usr/local/apache2, made from
    Debian's apache2 files: bin/httpd (Debian's binary with this ServerRoot and config),
    bin/apxs (this layout's paths; APR headers stay Debian's, as in the image; no
    APU_INCLUDEDIR), include/ (a copy
    of Debian's httpd headers), modules/ (links to Debian's modules), and one conf/httpd.conf in
    the image's style with relative paths (`Include conf/extra/...` is appended by the install
    script under test). `defines` are passed as -D to httpd (e.g. RWSGI_EMBEDDED)."""

    def __init__(self, name: str):
        super().__init__(mpm="event", mode="embedded", load_module=False, name=name)
        r = self.root
        for d in ("bin", "modules", "conf/extra"):
            (r / d).mkdir(parents=True, exist_ok=True)
            os.chmod(r / d, 0o755)
        shutil.copytree(debian_apxs_query("INCLUDEDIR"), r / "include")
        for m in RELOCATED_MODULES:
            os.symlink(harness.MODULES_DIR / m, r / "modules" / m)
        shutil.copy("/etc/mime.types", r / "conf" / "mime.types")
        self.httpd = r / "bin" / "httpd"
        self.httpd.write_text(f"#!/bin/sh\n# httpd of the relocated test tree\n"
                              f"exec {harness.APACHE_BIN} -d {r} -f {r}/conf/httpd.conf \"$@\"\n")
        os.chmod(self.httpd, 0o755)
        self.apxs = write_apxs(r / "bin" / "apxs", {
            "PREFIX": str(r), "BINDIR": str(r / "bin"), "SBINDIR": str(r / "bin"),
            "LIBEXECDIR": str(r / "modules"), "SYSCONFDIR": str(r / "conf"),
            "INCLUDEDIR": str(r / "include"), "TARGET": "httpd", "PROGNAME": "httpd"},
            # Not every httpd build records it; the build must do without.
            unknown=("APU_INCLUDEDIR",))
        self.pid_file = r / "logs" / "httpd.pid"
        self.log_path = r / "logs" / "error_log"
        self.defines: list[str] = []
        self.conf_path.write_text(self._httpd_conf())
        os.chmod(self.conf_path, 0o644)

    def _httpd_conf(self) -> str:
        return f"""\
# httpd.conf of a relocated test Apache, in the official httpd:2.4 image's style
# (tests/layouts.py): one file, paths relative to ServerRoot.
ServerRoot "{self.root}"
Listen 127.0.0.1:{self.port}
LoadModule mpm_event_module modules/mod_mpm_event.so
LoadModule authn_core_module modules/mod_authn_core.so
LoadModule authz_core_module modules/mod_authz_core.so
LoadModule mime_module modules/mod_mime.so
LoadModule dir_module modules/mod_dir.so
LoadModule alias_module modules/mod_alias.so
User www-data
Group www-data
ServerAdmin you@example.com
ServerName 127.0.0.1
# httpd's compiled-in defaults, which the image relies on (Debian's binary has others).
DefaultRuntimeDir logs
PidFile logs/httpd.pid
StartServers 1
ServerLimit 2
ThreadsPerChild 10
MaxRequestWorkers 20
<Directory />
    AllowOverride none
    Require all denied
</Directory>
DocumentRoot "htdocs"
<Directory "{self.root}/htdocs">
    Require all granted
</Directory>
DirectoryIndex index.html
ErrorLog logs/error_log
LogLevel info
TypesConfig conf/mime.types
"""

    def write_conf(self, fragment: str | None = None) -> Path:
        # The configuration is the tree's own httpd.conf (and what the install script adds).
        return self.conf_path

    def _ctl(self, *args, timeout=60):
        defines = [f"-D{d}" for d in self.defines]
        return subprocess.run([str(self.httpd), *defines, *args],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              env=self._env(), timeout=timeout, cwd=str(self.root))
