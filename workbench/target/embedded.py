"""The workbench's own targets: the embedded PostgreSQL (pgserver), the stand-in, and the
record of every server the workbench started (a certctl build too: :mod:`workbench.target.certctl`).

Everything lives in one state directory (default ``workbench.paths.state_dir()``)::

    pg/            PostgreSQL data, kept across restarts (owned by the ``pgserver`` user as root);
                   one database per server: ``certctl`` for the stand-in, one per certctl build
    tls/           the workbench's CA (ca.pem; its key ca-key.pem, 0600) and the certificates it
                   issued: the stand-in's (server.pem, server-key.pem), the connectors'
    token          the API key the stand-in accepts (mode 0600; never in target.json)
    standin.log    the stand-in's stdout and stderr
    target.json    the current target (what ``workbench run`` loads without --target), no secrets
    instances/     one folder per certctl the workbench runs (server.json, token, log, ...)
    builds/        certctl builds, one folder per commit (:mod:`workbench.target.certctl`)

The current target is the stand-in or a certctl instance; ``up`` of one replaces the other.
Servers are detached from the calling process, so a notebook kernel or a CLI call can start
them and exit; ``down()`` stops every server and PostgreSQL and leaves the data.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import re
import secrets
import socket
import ssl
import subprocess
import sys
import time
import warnings
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import psutil

from workbench import jsonio
from workbench.errors import WorkbenchError
from workbench.paths import project_root, state_dir

DATABASE = "certctl"
STANDIN, CERTCTL = "stand-in", "certctl"  # a target's kind, as records name it
READY_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 5.0
_INFO_FILE = "target.json"
_LOG_FILE = "standin.log"
_TOKEN_FILE = "token"
_STANDIN_MODULE = "workbench.target.standin"
INSTANCES_DIR = "instances"
SERVER_FILE = "server.json"  # an instance's TargetInfo, in its folder
_NAME = re.compile(r"[a-z][a-z0-9_]{0,30}")

# pgserver runs in a short-lived child interpreter: the server it starts outlives that child
# (cleanup_mode=None), and the caller keeps no pgserver handle that could go stale after down().
_START_POSTGRES = "import sys, pgserver; pgserver.get_server(sys.argv[1], cleanup_mode=None)"


@dataclass(frozen=True)
class TargetInfo:
    """A server the workbench started and where it answers: ``<state>/target.json`` for the
    current target, ``<state>/instances/<name>/server.json`` for each certctl instance."""

    url: str
    host: str
    port: int
    ca_file: str
    dsn: str  # SQLAlchemy URL: postgresql+psycopg://postgres@/<database>?host=<socket dir>
    pid: int
    pg_pgdata: str
    kind: str = STANDIN
    name: str = "target"
    database: str = DATABASE
    log_file: str = ""
    token_file: str = ""  # the API key it accepts (mode 0600); the key itself is never here
    executable: str = _STANDIN_MODULE  # what the pid's command line holds (pids get recycled)
    stop_timeout_s: float = STOP_TIMEOUT_S  # SIGTERM, then this long, then SIGKILL
    build: dict | None = None  # certctl: the build's facts (workbench.target.certctl.Build.facts())
    identity: dict | None = None  # certctl: what /api/v1/version answered once it was ready
    settings: str = ""  # a hash of how it was started; another `up` with other settings restarts


def up(state: Path | None = None, host: str = "127.0.0.1", port: int = 8443) -> TargetInfo:
    """Start PostgreSQL and the stand-in (idempotent) and return where they answer.

    If this state directory's stand-in is already running and ready, its info is returned as
    is, even when ``host``/``port`` differ; run ``down()`` first to move it. A certctl that is
    the current target is stopped first: the stand-in replaces it.
    """
    state = _state(state)
    state.mkdir(parents=True, exist_ok=True)
    existing = read_info(state)
    if existing is not None and existing.kind != STANDIN:
        retire(state, existing)
        existing = None
    if existing is not None and server_alive(existing):
        if ready(existing.url, existing.ca_file, timeout=2.0):
            return existing
        stop_server(existing)  # alive but not answering: restart it

    check_port_free(host, port)  # before starting anything, so a refusal leaves nothing behind
    socket_dir = start_postgres(state / "pg")
    create_database(socket_dir, DATABASE)
    ca_file, cert_file, key_file = ensure_tls(state / "tls")
    token_file = _ensure_token(state / _TOKEN_FILE)

    dsn = postgres_url(socket_dir, DATABASE, driver="+psycopg")
    url = f"https://{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{port}"
    log_file = state / _LOG_FILE
    command = [
        sys.executable, "-m", _STANDIN_MODULE,
        "--dsn", dsn, "--host", host, "--port", str(port),
        "--cert", str(cert_file), "--key", str(key_file), "--token-file", str(token_file),
        "--commit", workbench_commit(),
    ]  # fmt: skip
    # Run the same workbench code as the caller, whatever the child's working directory.
    package_parent = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (package_parent, os.environ.get("PYTHONPATH", "")) if p
    )}  # fmt: skip
    process = launch(command, env, cwd=state, log_file=log_file)
    wait_ready(process, url, str(ca_file), log_file, "the stand-in server", READY_TIMEOUT_S)

    info = TargetInfo(
        url=url, host=host, port=port, ca_file=str(ca_file), dsn=dsn,
        pid=process.pid, pg_pgdata=str(state / "pg"), log_file=str(log_file),
        token_file=str(token_file),
    )  # fmt: skip
    set_current(state, info)
    return info


def down(state: Path | None = None) -> None:
    """Stop every server this state directory started (SIGTERM, then SIGKILL) and PostgreSQL;
    keep the data, TLS files, tokens and builds."""
    state = _state(state)
    for instance in instances(state):
        retire(state, instance)
    info = read_info(state)
    if info is not None:
        stop_server(info)
        (state / _INFO_FILE).unlink(missing_ok=True)
    _stop_postgres(state / "pg")


def status(state: Path | None = None) -> dict[str, Any]:
    """Which target is current (stand-in or certctl: version, commit, pid, port, database) and
    whether it answers; PostgreSQL's pid; every other certctl instance this state runs."""
    state = _state(state)
    info = read_info(state)
    postmaster = _postmaster(state / "pg")
    current = _describe(info) if info is not None else {"kind": None, "alive": False,
                                                         "ready": False}
    return {
        "state_dir": str(state),
        **current,
        "pg_running": postmaster is not None,
        "pg_pid": postmaster[0] if postmaster else None,
        "instances": [_describe(i) for i in instances(state)
                      if info is None or i.name != info.name or i.kind != info.kind],
    }


def _describe(info: TargetInfo) -> dict[str, Any]:
    alive = server_alive(info)
    identity = info.identity or {}
    return {
        "kind": info.kind, "name": info.name, "url": info.url, "port": info.port,
        "pid": info.pid, "alive": alive,
        "ready": alive and ready(info.url, info.ca_file, 2.0),
        "version": identity.get("version"), "commit": identity.get("commit"),
        "modified": identity.get("modified"),
        "build": (info.build or {}).get("key"), "source": (info.build or {}).get("source"),
        "database": info.database, "dsn": info.dsn, "log_file": info.log_file,
    }


def read_info(state: Path | None = None) -> TargetInfo | None:
    """The current target's info, or None if no target was started or it is down."""
    return _read_server(_state(state) / _INFO_FILE)


def set_current(state: Path | None, info: TargetInfo) -> None:
    """Make ``info`` the target ``workbench run`` and the notebooks load without --target."""
    jsonio.write_json(_state(state) / _INFO_FILE, asdict(info))


def read_token(state: Path | None = None) -> str:
    """The API key the current target accepts (keep it out of logs, notebooks and results)."""
    state = _state(state)
    info = read_info(state)
    return read_token_file(Path(info.token_file) if info and info.token_file
                           else state / _TOKEN_FILE)


def read_token_file(path: Path) -> str:
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        raise WorkbenchError(f"no API token at {path}; start the target first") from None


def workbench_commit() -> str:
    """The workbench's own git SHA, or "unknown" outside a git checkout."""
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=project_root(), capture_output=True, text=True,
            timeout=5, check=True,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return result.stdout.strip() or "unknown"


# --- instances: servers started under a name, each in its own folder --------------------------


def instance_dir(state: Path | None, name: str) -> Path:
    """``<state>/instances/<name>``: a server's working directory (no ``web/`` in it), token,
    log and ``server.json``. Names are lower-case words, so they make database names too."""
    if not _NAME.fullmatch(name):
        raise WorkbenchError(f"instance name {name!r}: use lower-case letters, digits and _ "
                             "(up to 31, starting with a letter)")
    return _state(state) / INSTANCES_DIR / name


def register(state: Path | None, info: TargetInfo) -> None:
    jsonio.write_json(instance_dir(state, info.name) / SERVER_FILE, asdict(info))


def instances(state: Path | None = None) -> list[TargetInfo]:
    """Every instance this state directory has a record of (running or not), by name."""
    root = _state(state) / INSTANCES_DIR
    found = (_read_server(path) for path in sorted(root.glob(f"*/{SERVER_FILE}")))
    return [info for info in found if info is not None]


def retire(state: Path | None, info: TargetInfo) -> None:
    """Stop a server and forget it: its record goes; its folder, log and database stay."""
    stop_server(info)
    if info.kind != STANDIN:
        (instance_dir(state, info.name) / SERVER_FILE).unlink(missing_ok=True)
    current = read_info(state)
    if current is not None and (current.kind, current.name, current.pid) == (
            info.kind, info.name, info.pid):
        (_state(state) / _INFO_FILE).unlink(missing_ok=True)


def _read_server(path: Path) -> TargetInfo | None:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    if "standin_pid" in data:  # a target.json written before certctl targets existed
        data["pid"] = data.pop("standin_pid")
    known = {f.name for f in fields(TargetInfo)}
    return TargetInfo(**{k: v for k, v in data.items() if k in known})


# --- server processes --------------------------------------------------------------------------


def launch(command: list[str], env: dict[str, str], cwd: Path, log_file: Path
           ) -> subprocess.Popen:
    """Start a server detached from the caller (own session: it survives the caller and its
    Ctrl-C), its stdout and stderr appended to ``log_file``."""
    with open(log_file, "ab") as log:
        return subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                env=env, cwd=cwd, start_new_session=True)


def wait_ready(process: subprocess.Popen, url: str, ca_file: str, log_file: Path, what: str,
               timeout_s: float) -> None:
    """Poll ``url``/ready until it answers 200. A server that exits or is not ready in time is
    stopped and refused with the tail of its log."""
    deadline = time.monotonic() + timeout_s
    while not ready(url, ca_file, timeout=1.0):
        if process.poll() is not None or time.monotonic() > deadline:
            outcome = (f"exited with code {process.returncode}" if process.poll() is not None
                       else f"was not ready after {timeout_s:.0f} s")
            _stop_pid(process.pid, lambda p: True, STOP_TIMEOUT_S)
            raise WorkbenchError(f"{what} {outcome}; last lines of {log_file}: {tail(log_file)}")
        time.sleep(0.1)


def running(pid: int) -> psutil.Process | None:
    """The process if it runs; zombies count as gone (a container's init may never reap them)."""
    try:
        process = psutil.Process(pid)
        return process if process.status() != psutil.STATUS_ZOMBIE else None
    except psutil.Error:
        return None


def server_alive(info: TargetInfo) -> bool:
    """True if ``info.pid`` runs and is that server (not a recycled pid)."""
    return _is(info.pid, info.executable)


def _is(pid: int, executable: str) -> bool:
    process = running(pid)
    try:
        return process is not None and any(executable in part for part in process.cmdline())
    except psutil.Error:
        return False


def stop_server(info: TargetInfo) -> None:
    _stop_pid(info.pid, lambda pid: _is(pid, info.executable), info.stop_timeout_s)


def _stop_pid(pid: int, ours, timeout_s: float) -> None:
    if not ours(pid) or running(pid) is None:
        with contextlib.suppress(psutil.Error):
            psutil.Process(pid).wait(0)  # reap our own zombie child, if that is what it is
        return
    process = psutil.Process(pid)
    process.terminate()
    if not _gone(process, timeout_s):
        process.kill()
        _gone(process, STOP_TIMEOUT_S)


def _gone(process: psutil.Process, timeout_s: float) -> bool:
    """Wait until the process exits (reaped, when it is our child) or is a zombie: a server
    started by an earlier command is init's child, and a container's init may never reap it,
    so waiting for its pid to vanish would time out on a process already dead."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            process.wait(0.1)
            return True
        except psutil.TimeoutExpired:
            pass
        except psutil.Error:  # gone already
            return True
        if running(process.pid) is None:
            return True
        if time.monotonic() > deadline:
            return False


def exit_report(info: TargetInfo) -> str | None:
    """None while the server runs; else one sentence naming it, with the tail of its log."""
    if server_alive(info):
        return None
    what = f"{info.kind} {(info.identity or {}).get('version') or ''}".strip()
    last = tail(Path(info.log_file)) if info.log_file else "(no log)"
    with contextlib.suppress(OSError):  # the message may reach a notebook: never the key
        last = last.replace(read_token_file(Path(info.token_file)), "<token>")
    return f"the target ({what}, pid {info.pid}) exited during the run; last lines of " \
           f"{info.log_file}: {last}"


def ready(url: str, ca_file: str, timeout: float) -> bool:
    """GET /ready over HTTPS, verifying the server against our CA."""
    try:
        response = httpx.get(
            f"{url}/ready", verify=ssl.create_default_context(cafile=ca_file), timeout=timeout
        )
    except (httpx.HTTPError, OSError):
        return False
    return response.status_code == 200


def check_port_free(host: str, port: int) -> None:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        # SO_REUSEADDR as the server will use it: TIME_WAIT leftovers do not count as taken.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as err:
            raise WorkbenchError(
                f"port {port} on {host} is taken by another program ({err.strerror}); "
                f"choose a free one with --port"
            ) from None


# --- PostgreSQL --------------------------------------------------------------------------------


def start_postgres(pgdata: Path) -> Path:
    """Start (or find running) the embedded PostgreSQL; return its socket directory."""
    for attempt in (1, 2):  # pgserver's start-up is occasionally flaky on a loaded machine
        if _postmaster(pgdata) is not None:
            break
        started = subprocess.run(
            [sys.executable, "-W", "ignore", "-c", _START_POSTGRES, str(pgdata)],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        if started.returncode != 0 and attempt == 2:
            raise WorkbenchError(
                f"embedded PostgreSQL did not start in {pgdata}: {_last_lines(started.stderr)}"
            )
        if started.returncode != 0:
            time.sleep(1.0)
    postmaster = _postmaster(pgdata)
    if postmaster is None:
        raise WorkbenchError(f"embedded PostgreSQL in {pgdata} is not ready; see {pgdata}/log")
    return postmaster[1]


def create_database(socket_dir: Path, database: str, fresh: bool = False) -> None:
    """Create ``database`` on the embedded PostgreSQL if missing (``fresh``: drop it first)."""
    if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", database):
        raise WorkbenchError(f"database name {database!r}: lower-case letters, digits and _")
    import psycopg  # here, not at the top: `workbench drive` reads this module's state only

    with psycopg.connect(postgres_url(socket_dir, "postgres"), autocommit=True) as conn:
        if fresh:
            conn.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
        elif conn.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                          (database,)).fetchone():
            return
        conn.execute(f"CREATE DATABASE {database}")


def _postmaster(pgdata: Path) -> tuple[int, Path] | None:
    """(pid, socket dir) of a ready postmaster, read from PostgreSQL's own postmaster.pid."""
    try:
        lines = (pgdata / "postmaster.pid").read_text().splitlines()
    except (FileNotFoundError, PermissionError):
        return None
    # Line 1 is the pid, line 5 the socket directory, line 8 the status (documented format).
    if len(lines) < 8 or lines[7].strip() != "ready":
        return None
    pid = int(lines[0])
    if running(pid) is None:
        return None
    return pid, Path(lines[4].strip())


def _stop_postgres(pgdata: Path) -> None:
    if _postmaster(pgdata) is None:
        return
    # PostgreSQL refuses to run as root; pgserver then runs it as the data directory's owner.
    user = pwd.getpwuid(pgdata.stat().st_uid).pw_name if os.geteuid() == 0 else None
    with warnings.catch_warnings():  # pgserver warns at import when XDG_RUNTIME_DIR is unset
        warnings.simplefilter("ignore")
        import pgserver
    pgserver.pg_ctl(["-m", "fast", "-w", "stop"], pgdata=pgdata, user=user, timeout=60)


def postgres_url(socket_dir: Path, database: str, driver: str = "") -> str:
    """libpq URI (driver "") or SQLAlchemy URL (driver "+psycopg") over the Unix socket."""
    return f"postgresql{driver}://postgres@/{database}?host={quote(str(socket_dir), safe='/')}"


# --- TLS and token -----------------------------------------------------------------------------


def ensure_tls(tls_dir: Path) -> tuple[Path, Path, Path]:
    """The workbench's CA (:mod:`workbench.target.tlsca`, kept with its key, so it can also issue
    the connector daemons' certificates) and the stand-in's ECDSA P-256 certificate for localhost
    and 127.0.0.1, issued once and again only near its end, so clients can trust ``ca.pem``
    across restarts."""
    from workbench.target import tlsca  # cryptography: only where certificates are made

    ca_file, _ = tlsca.ensure_ca(tls_dir)
    cert_file, key_file = tlsca.issue(tls_dir, "localhost", tls_dir / "server.pem",
                                      tls_dir / "server-key.pem")
    return ca_file, cert_file, key_file


def _ensure_token(path: Path) -> Path:
    if not path.exists():
        from workbench.target import tlsca

        tlsca.write_private(path, (secrets.token_urlsafe(32) + "\n").encode())
    return path


# --- small helpers -----------------------------------------------------------------------------


def _state(state: Path | None) -> Path:
    return Path(state) if state is not None else state_dir()


def tail(path: Path, lines: int = 20) -> str:
    try:
        return _last_lines(path.read_text(errors="replace"), lines)
    except FileNotFoundError:
        return "(no log)"


def _last_lines(text: str, lines: int = 20) -> str:
    return " | ".join(text.strip().splitlines()[-lines:]) or "(empty)"
