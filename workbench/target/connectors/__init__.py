"""The connector tier's targets: nginx, Apache httpd, HAProxy and an F5 iControl REST mock.

certctl deploys certificates to TLS daemons; its k6 harness measures the connection rate they
take. ``workbench target up --connectors`` starts, beside the stand-in, each daemon that is
installed (Debian's ``nginx``, ``apache2``, ``haproxy``) with its own configuration under the
state folder, and the F5 mock (:mod:`workbench.target.connectors.f5mock`, always there: it is the
workbench's own). Each listens on loopback with a certificate issued by the workbench's CA
(:mod:`workbench.target.tlsca`) and answers a tiny GET (``/``; the F5 mock ``/healthz``), as the
harness's sidecars do. A daemon that is not installed is named with the command that installs
it, never skipped in silence. ``down()`` stops every process it started (the whole process group
of each) and leaves the files.

State (``<state>/connectors/``)::

    connectors.json   what runs where (URLs, pids, versions, what is missing): no secrets
    <type>/           one folder per target type: its configuration, certificate, key (0600),
                      log and pid files

The small API: :func:`up`, :func:`down`, :func:`status`, :func:`read_info` and
:func:`target_for` (a target type's URL and CA file, or one line saying how to get it).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil

from workbench import jsonio
from workbench.errors import WorkbenchError
from workbench.paths import state_dir
from workbench.target import tlsca

TYPES = ("nginx", "apache", "haproxy", "f5")  # certctl's target_type tags, in port order
INFO_FILE = "connectors.json"
SCHEMA_VERSION = 1
READY_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 5.0
_SBIN = ("/usr/sbin", "/usr/local/sbin", "/sbin")  # daemons live here; not on every PATH


@dataclass(frozen=True)
class Daemon:
    """One target type: how to find, configure, start and probe it."""

    target_type: str
    package: str  # the Debian package that installs it ("" for the workbench's own)
    binary: str
    path: str  # what the harness GETs

    def find(self) -> str | None:
        """The daemon's executable, or None when it is not installed."""
        if not self.package:
            return sys.executable
        extra = os.pathsep.join(_SBIN)
        return shutil.which(self.binary, path=os.environ.get("PATH", "") + os.pathsep + extra)


DAEMONS = {d.target_type: d for d in (
    Daemon("nginx", "nginx", "nginx", "/"),
    Daemon("apache", "apache2", "apache2", "/"),
    Daemon("haproxy", "haproxy", "haproxy", "/"),
    Daemon("f5", "", "", "/healthz"),
)}


def install_command(packages: list[str]) -> str:
    """The one command that installs ``packages`` on Debian (as root)."""
    return "apt-get install -y " + " ".join(packages)


def missing() -> dict[str, str]:
    """``{target type: Debian package}`` of every daemon not installed on this machine."""
    return {t: d.package for t, d in DAEMONS.items() if d.find() is None}


def up(state: Path | None = None, host: str = "127.0.0.1", first_port: int = 8444,
       types: tuple[str, ...] = TYPES) -> dict:
    """Start each of ``types`` that is installed (idempotent), target type k of :data:`TYPES`
    on port ``first_port + k``; returns the info (also in ``connectors.json``), ``missing``
    included.

    What already runs from this state folder is kept; anything that fails to start stops what
    this call started and raises one line with the daemon's last log lines.
    """
    state = _state(state)
    folder = state / "connectors"
    folder.mkdir(parents=True, exist_ok=True)
    info = read_info(state) or {}
    running = {t: e for t, e in (info.get("targets") or {}).items() if _alive(e)}
    absent = {t: p for t, p in missing().items() if t in types}
    tls_dir = state / "tls"
    if (tls_dir / tlsca.CA_FILE).exists() and not (tls_dir / tlsca.CA_KEY_FILE).exists():
        raise WorkbenchError(f"the workbench CA in {tls_dir} was made without its key (by an "
                             "older workbench), so it cannot issue the connectors' "
                             "certificates; make a new one: `workbench target down`, then "
                             "`workbench target up --connectors`")
    ca_file, _ = tlsca.ensure_ca(tls_dir)
    started: dict[str, dict] = {}
    try:
        for offset, target_type in enumerate(TYPES, start=1):
            if target_type in running or target_type in absent or target_type not in types:
                continue
            started[target_type] = _start(DAEMONS[target_type], folder / target_type, host,
                                          first_port + offset - 1, tls_dir, ca_file)
    except BaseException:
        for entry in started.values():
            _stop(entry)
        raise
    info = {"schema_version": SCHEMA_VERSION, "ca_file": str(ca_file),
            "targets": running | started, "missing": absent,
            "install": install_command(sorted(set(absent.values()))) if absent else None}
    jsonio.write_json(folder / INFO_FILE, info)
    return info


def print_up(info: dict) -> None:
    """What :func:`up` started, a line per target type, and what is missing with its fix."""
    for target_type, entry in info["targets"].items():
        print(f"{target_type} ({entry['version']}) at {entry['url']}{entry['path']}")
    for target_type, package in info["missing"].items():
        print(f"{target_type}: not installed (Debian package {package})", file=sys.stderr)
    if info["install"]:
        print(f"to add the missing daemons, as root: {info['install']}; then run "
              "`workbench target up --connectors` again", file=sys.stderr)


def down(state: Path | None = None) -> list[str]:
    """Stop every connector process this state folder started; the target types stopped."""
    state = _state(state)
    info = read_info(state)
    if info is None:
        return []
    stopped = []
    for target_type, entry in (info.get("targets") or {}).items():
        if _stop(entry):
            stopped.append(target_type)
        _remove_docroot(entry)
    (state / "connectors" / INFO_FILE).unlink(missing_ok=True)
    return stopped


def status(state: Path | None = None) -> dict:
    """Each target type: its URL and whether it runs, or why it does not."""
    info = read_info(state) or {}
    targets = info.get("targets") or {}
    out = {}
    for target_type in TYPES:
        entry = targets.get(target_type)
        if entry is not None:
            out[target_type] = {"url": entry["url"], "version": entry["version"],
                                "running": _alive(entry), "pid": entry["pid"]}
        elif target_type in missing():
            out[target_type] = {"running": False, "missing": install_command(
                [DAEMONS[target_type].package])}
        else:
            out[target_type] = {"running": False}
    return out


def read_info(state: Path | None = None) -> dict | None:
    """``connectors.json`` of the last :func:`up`, or None when the connectors are down."""
    import json

    try:
        return json.loads((_state(state) / "connectors" / INFO_FILE).read_text())
    except FileNotFoundError:
        return None


def target_for(target_type: str, state: Path | None = None) -> tuple[str, str, str]:
    """A running target type's URL, CA file and version; one line with the fix otherwise."""
    if target_type not in DAEMONS:
        raise WorkbenchError(f"unknown target type {target_type!r}; choose one of "
                             f"{', '.join(TYPES)}")
    info = read_info(state)
    entry = ((info or {}).get("targets") or {}).get(target_type)
    if entry is not None and _alive(entry):
        return entry["url"], info["ca_file"], entry["version"]
    package = DAEMONS[target_type].package
    if package and DAEMONS[target_type].find() is None:
        raise WorkbenchError(f"{target_type} is not installed; install it with "
                             f"`{install_command([package])}`, then `workbench target up "
                             "--connectors`")
    raise WorkbenchError(f"the {target_type} target is not running; start the connectors with "
                         "`workbench target up --connectors` (or pass --target URL)")


# --- one daemon ---------------------------------------------------------------------------------


def _start(daemon: Daemon, folder: Path, host: str, port: int, tls_dir: Path,
           ca_file: Path) -> dict:
    _check_port_free(host, port, daemon.target_type)
    folder.mkdir(parents=True, exist_ok=True)
    cert, key = tlsca.issue(tls_dir, f"{daemon.target_type}.workbench.test",
                            folder / "cert.pem", folder / "key.pem")
    binary = daemon.find()
    command, docroot = _configure(daemon, binary, folder, host, port, cert, key)
    log_file = folder / "daemon.log"
    with open(log_file, "ab") as log:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                   cwd=folder, start_new_session=True,  # one group to stop
                                   env=_child_env())
    entry = {"url": f"https://{host}:{port}", "path": daemon.path, "pid": process.pid,
             "create_time": psutil.Process(process.pid).create_time(),
             "version": _version(daemon, binary), "folder": str(folder), "docroot": docroot}
    deadline = time.monotonic() + READY_TIMEOUT_S
    while not _ready(entry["url"] + daemon.path, str(ca_file)):
        if process.poll() is not None or time.monotonic() > deadline:
            outcome = (f"exited with code {process.returncode}" if process.poll() is not None
                       else f"was not ready after {READY_TIMEOUT_S:.0f} s")
            _stop(entry)
            _remove_docroot(entry)
            raise WorkbenchError(f"{daemon.target_type} ({' '.join(command[:1])}) {outcome}; "
                                 f"last lines of {folder}: {_tail(folder)}")
        time.sleep(0.1)
    return entry


def _configure(daemon: Daemon, binary: str, folder: Path, host: str, port: int, cert: Path,
               key: Path) -> tuple[list[str], str | None]:
    """Write the daemon's configuration; its command line and Apache's document root."""
    kind = daemon.target_type
    if kind == "nginx":
        (folder / "tmp").mkdir(exist_ok=True)
        conf = folder / "nginx.conf"
        conf.write_text(NGINX_CONF.format(folder=folder, host=host, port=port, cert=cert,
                                          key=key))
        return [binary, "-p", f"{folder}/", "-e", str(folder / "error.log"), "-c",
                str(conf)], None
    if kind == "apache":
        docroot = _docroot(folder)
        conf = folder / "httpd.conf"
        conf.write_text(APACHE_CONF.format(
            folder=folder, host=host, port=port, cert=cert, key=key, docroot=docroot,
            modules=_apache_modules(), user=APACHE_USER if os.geteuid() == 0 else ""))
        return [binary, "-d", str(folder), "-f", str(conf), "-DFOREGROUND"], str(docroot)
    if kind == "haproxy":
        bundle = folder / "bundle.pem"  # HAProxy reads certificate and key from one file
        tlsca.write_private(bundle, cert.read_bytes() + key.read_bytes())
        conf = folder / "haproxy.cfg"
        conf.write_text(HAPROXY_CONF.format(host=host, port=port, bundle=bundle))
        return [binary, "-db", "-f", str(conf)], None
    return [binary, "-m", "workbench.target.connectors.f5mock", "--host", host, "--port", str(port),
            "--cert", str(cert), "--key", str(key)], None


def _docroot(folder: Path) -> Path:
    """Apache's document root: a world-readable folder outside the (private) state folder,
    since its workers run as ``www-data`` and read the page at each request."""
    tag = hashlib.sha256(str(folder).encode()).hexdigest()[:12]
    docroot = Path(tempfile.gettempdir()) / f"workbench-apache-{os.getuid()}-{tag}"
    docroot.mkdir(mode=0o755, exist_ok=True)
    docroot.chmod(0o755)
    (docroot / "index.html").write_text("ok\n")
    (docroot / "index.html").chmod(0o644)
    return docroot


def _remove_docroot(entry: dict) -> None:
    if entry.get("docroot"):
        shutil.rmtree(entry["docroot"], ignore_errors=True)


def _apache_modules() -> str:
    lib = next((d for d in ("/usr/lib/apache2/modules", "/usr/lib64/httpd/modules",
                            "/usr/local/apache2/modules") if Path(d).is_dir()),
               "/usr/lib/apache2/modules")
    return "\n".join(f"LoadModule {name}_module {lib}/mod_{name}.so" for name in APACHE_MODULES)


def _child_env() -> dict[str, str]:
    """The workbench's own code for the F5 mock, whatever the working directory."""
    package_parent = str(Path(__file__).resolve().parents[3])
    return {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (package_parent, os.environ.get("PYTHONPATH", "")) if p)}


def _version(daemon: Daemon, binary: str) -> str:
    """What the daemon says it is (``nginx/1.22.1``), or the workbench's mock."""
    if not daemon.package:
        return "workbench-f5mock"
    try:
        out = subprocess.run([binary, "-v"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    text = (out.stdout + out.stderr).strip().splitlines()
    first = text[0] if text else "unknown"
    if first.startswith("HAProxy version "):  # "HAProxy version 2.6.12-1 2023/02/15 - ..."
        return "HAProxy/" + first.split()[2]
    for prefix in ("nginx version: ", "Server version: "):  # nginx/1.22.1, Apache/2.4.57 ...
        first = first.removeprefix(prefix)
    return first.strip()


def _ready(url: str, ca_file: str) -> bool:
    try:
        response = httpx.get(url, verify=ssl.create_default_context(cafile=ca_file),
                             timeout=1.0)
    except (httpx.HTTPError, OSError):
        return False
    return 200 <= response.status_code < 300


def _check_port_free(host: str, port: int, target_type: str) -> None:
    import socket

    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as err:
            raise WorkbenchError(f"port {port} on {host} for {target_type} is taken "
                                 f"({err.strerror}); the connectors use the four ports after "
                                 "the stand-in's: choose another --port") from None


def _alive(entry: dict) -> bool:
    """The process this entry started, still running (not a recycled pid)."""
    try:
        process = psutil.Process(entry["pid"])
        return (abs(process.create_time() - entry["create_time"]) < 0.01
                and process.status() != psutil.STATUS_ZOMBIE)
    except (psutil.Error, KeyError):
        return False


def _stop(entry: dict) -> bool:
    """SIGTERM to the daemon's process group (master and workers), SIGKILL what is left."""
    if not _alive(entry):
        return False
    pgid = entry["pid"]  # started in its own session: its pid is its group's id
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return True
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while time.monotonic() < deadline:
            if not _group_alive(pgid):
                _reap(entry["pid"])
                return True
            time.sleep(0.05)
    return True


def _group_alive(pgid: int) -> bool:
    for process in psutil.process_iter(["pid", "status"]):
        try:
            if os.getpgid(process.pid) == pgid and process.info["status"] != \
                    psutil.STATUS_ZOMBIE:
                return True
        except (ProcessLookupError, PermissionError, psutil.Error):
            continue
    return False


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)  # our own child: collect its exit status
    except ChildProcessError:
        pass


def _tail(folder: Path, lines: int = 15) -> str:
    found = []
    for log in sorted(folder.glob("*.log")):
        text = log.read_text(errors="replace").strip().splitlines()[-lines:]
        found += [f"{log.name}: {line}" for line in text]
    return " | ".join(found) or "(no log)"


def _state(state: Path | None) -> Path:
    return Path(state) if state is not None else state_dir()


# --- configurations (what certctl's harness runs, on loopback) ----------------------------------

NGINX_CONF = """\
# nginx target of the connector tier (written by the workbench; certctl's harness: one worker)
worker_processes 1;
daemon off;
pid {folder}/nginx.pid;
error_log {folder}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {folder}/tmp/body;
    proxy_temp_path {folder}/tmp/proxy;
    fastcgi_temp_path {folder}/tmp/fastcgi;
    uwsgi_temp_path {folder}/tmp/uwsgi;
    scgi_temp_path {folder}/tmp/scgi;
    server {{
        listen {host}:{port} ssl;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_protocols TLSv1.2 TLSv1.3;
        location / {{
            default_type text/plain;
            return 200 "ok\\n";
        }}
    }}
}}
"""

APACHE_USER = "User www-data\nGroup www-data"  # as root; Apache refuses to serve as root
APACHE_MODULES = ("mpm_event", "authz_core", "dir", "socache_shmcb", "ssl")
APACHE_CONF = """\
# Apache httpd target of the connector tier (written by the workbench)
ServerRoot "{folder}"
ServerName localhost
PidFile "{folder}/apache2.pid"
DefaultRuntimeDir "{folder}"
Mutex file:{folder} default
{modules}
{user}
Listen {host}:{port}
ErrorLog "{folder}/error.log"
LogLevel warn
DocumentRoot "{docroot}"
DirectoryIndex index.html
<Directory "{docroot}">
    AllowOverride None
    Require all granted
</Directory>
SSLEngine on
SSLCertificateFile "{cert}"
SSLCertificateKeyFile "{key}"
SSLProtocol all -SSLv3 -TLSv1 -TLSv1.1
SSLCipherSuite HIGH:!aNULL:!MD5
SSLHonorCipherOrder on
"""

HAPROXY_CONF = """\
# HAProxy target of the connector tier (written by the workbench)
global
    maxconn 4096
    ssl-default-bind-options ssl-min-ver TLSv1.2

defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s

frontend https-in
    bind {host}:{port} ssl crt {bundle} alpn http/1.1
    default_backend ok

backend ok
    http-request return status 200 content-type text/plain string "ok\\n"
"""
