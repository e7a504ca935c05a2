"""The embedded default target: PostgreSQL (pgserver) plus the stand-in certctl server.

Everything lives in one state directory (default ``workbench.paths.state_dir()``)::

    pg/            PostgreSQL data, kept across restarts (owned by the ``pgserver`` user as root)
    tls/           the workbench's CA (ca.pem; its key ca-key.pem, 0600) and the certificates it
                   issued: the stand-in's (server.pem, server-key.pem), the connectors'
    token          the API key the stand-in accepts (mode 0600; never in target.json)
    standin.log    the stand-in's stdout and stderr
    target.json    what runs where, for other processes (no secrets)

Both servers are detached from the calling process, so a notebook kernel or a CLI call can start
the target and exit; ``down()`` stops them and leaves the data.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import secrets
import socket
import ssl
import subprocess
import sys
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import psutil
import psycopg

from workbench import jsonio, tlsca
from workbench.errors import WorkbenchError
from workbench.paths import project_root, state_dir

DATABASE = "certctl"
READY_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 5.0
_INFO_FILE = "target.json"
_LOG_FILE = "standin.log"
_TOKEN_FILE = "token"
_STANDIN_MODULE = "workbench.standin"

# pgserver runs in a short-lived child interpreter: the server it starts outlives that child
# (cleanup_mode=None), and the caller keeps no pgserver handle that could go stale after down().
_START_POSTGRES = "import sys, pgserver; pgserver.get_server(sys.argv[1], cleanup_mode=None)"


@dataclass(frozen=True)
class TargetInfo:
    """Where the embedded target answers; contents of ``<state>/target.json``."""

    url: str
    host: str
    port: int
    ca_file: str
    dsn: str  # SQLAlchemy URL: postgresql+psycopg://postgres@/certctl?host=<socket dir>
    standin_pid: int
    pg_pgdata: str


def up(state: Path | None = None, host: str = "127.0.0.1", port: int = 8443) -> TargetInfo:
    """Start PostgreSQL and the stand-in (idempotent) and return where they answer.

    If this state directory's target is already running and ready, its info is returned as is,
    even when ``host``/``port`` differ; run ``down()`` first to move it.
    """
    state = _state(state)
    state.mkdir(parents=True, exist_ok=True)
    existing = read_info(state)
    if existing is not None and _standin_alive(existing.standin_pid):
        if _ready(existing.url, existing.ca_file, timeout=2.0):
            return existing
        _stop_standin(existing.standin_pid)  # alive but not answering: restart it

    _check_port_free(host, port)  # before starting anything, so a refusal leaves nothing behind
    socket_dir = _start_postgres(state / "pg")
    ca_file, cert_file, key_file = _ensure_tls(state / "tls")
    token_file = _ensure_token(state / _TOKEN_FILE)

    dsn = _postgres_url(socket_dir, DATABASE, driver="+psycopg")
    url = f"https://{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{port}"
    log_file = state / _LOG_FILE
    command = [
        sys.executable, "-m", _STANDIN_MODULE,
        "--dsn", dsn, "--host", host, "--port", str(port),
        "--cert", str(cert_file), "--key", str(key_file), "--token-file", str(token_file),
        "--commit", workbench_commit(),
    ]  # fmt: skip
    # Run the same workbench code as the caller, whatever the child's working directory.
    package_parent = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (package_parent, os.environ.get("PYTHONPATH", "")) if p
    )}  # fmt: skip
    with open(log_file, "ab") as log:
        process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env,
            cwd=state, start_new_session=True,  # survives the caller and its Ctrl-C
        )  # fmt: skip

    deadline = time.monotonic() + READY_TIMEOUT_S
    while not _ready(url, str(ca_file), timeout=1.0):
        if process.poll() is not None or time.monotonic() > deadline:
            outcome = (
                f"exited with code {process.returncode}"
                if process.poll() is not None
                else f"was not ready after {READY_TIMEOUT_S:.0f} s"
            )
            _stop_standin(process.pid)
            raise WorkbenchError(
                f"the stand-in server {outcome}; last lines of {log_file}: {_tail(log_file)}"
            )
        time.sleep(0.1)

    info = TargetInfo(
        url=url, host=host, port=port, ca_file=str(ca_file), dsn=dsn,
        standin_pid=process.pid, pg_pgdata=str(state / "pg"),
    )  # fmt: skip
    jsonio.write_json(state / _INFO_FILE, asdict(info))
    return info


def down(state: Path | None = None) -> None:
    """Stop the stand-in (SIGTERM, then SIGKILL) and PostgreSQL; keep data, TLS files, token."""
    state = _state(state)
    info = read_info(state)
    if info is not None:
        _stop_standin(info.standin_pid)
        (state / _INFO_FILE).unlink(missing_ok=True)
    _stop_postgres(state / "pg")


def status(state: Path | None = None) -> dict[str, Any]:
    """What runs where: stand-in URL, pid and readiness; PostgreSQL pid and DSN."""
    state = _state(state)
    info = read_info(state)
    postmaster = _postmaster(state / "pg")
    standin_alive = info is not None and _standin_alive(info.standin_pid)
    return {
        "state_dir": str(state),
        "url": info.url if info else None,
        "standin_pid": info.standin_pid if info else None,
        "standin_alive": standin_alive,
        "ready": standin_alive and info is not None and _ready(info.url, info.ca_file, 2.0),
        "pg_running": postmaster is not None,
        "pg_pid": postmaster[0] if postmaster else None,
        "dsn": _postgres_url(postmaster[1], DATABASE, "+psycopg") if postmaster else None,
        "log_file": str(state / _LOG_FILE),
    }


def read_info(state: Path | None = None) -> TargetInfo | None:
    """The last ``up()``'s info, or None if the target was never started or is down."""
    path = _state(state) / _INFO_FILE
    try:
        return TargetInfo(**json.loads(path.read_text()))
    except FileNotFoundError:
        return None


def read_token(state: Path | None = None) -> str:
    """The API key the stand-in accepts (keep it out of logs, notebooks and results)."""
    path = _state(state) / _TOKEN_FILE
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


# --- PostgreSQL --------------------------------------------------------------------------------


def _start_postgres(pgdata: Path) -> Path:
    """Start (or find running) the embedded PostgreSQL, create the database; return socket dir."""
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
    socket_dir = postmaster[1]
    with psycopg.connect(_postgres_url(socket_dir, "postgres"), autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)).fetchone():
            return socket_dir
        conn.execute(f"CREATE DATABASE {DATABASE}")
    return socket_dir


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
    if _running(pid) is None:
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


def _postgres_url(socket_dir: Path, database: str, driver: str = "") -> str:
    """libpq URI (driver "") or SQLAlchemy URL (driver "+psycopg") over the Unix socket."""
    return f"postgresql{driver}://postgres@/{database}?host={quote(str(socket_dir), safe='/')}"


# --- the stand-in process ----------------------------------------------------------------------


def _running(pid: int) -> psutil.Process | None:
    """The process if it runs; zombies count as gone (a container's init may never reap them)."""
    try:
        process = psutil.Process(pid)
        return process if process.status() != psutil.STATUS_ZOMBIE else None
    except psutil.Error:
        return None


def _standin_alive(pid: int) -> bool:
    """True if ``pid`` is a running stand-in (not a recycled pid)."""
    process = _running(pid)
    try:
        return process is not None and _STANDIN_MODULE in process.cmdline()
    except psutil.Error:
        return False


def _stop_standin(pid: int) -> None:
    if not _standin_alive(pid):
        with contextlib.suppress(psutil.Error):
            psutil.Process(pid).wait(0)  # reap our own zombie child, if that is what it is
        return
    process = psutil.Process(pid)
    process.terminate()
    try:
        process.wait(STOP_TIMEOUT_S)
    except psutil.TimeoutExpired:
        process.kill()
        process.wait(STOP_TIMEOUT_S)


def _ready(url: str, ca_file: str, timeout: float) -> bool:
    """GET /ready over HTTPS, verifying the server against our CA."""
    try:
        response = httpx.get(
            f"{url}/ready", verify=ssl.create_default_context(cafile=ca_file), timeout=timeout
        )
    except (httpx.HTTPError, OSError):
        return False
    return response.status_code == 200


def _check_port_free(host: str, port: int) -> None:
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


# --- TLS and token -----------------------------------------------------------------------------


def _ensure_tls(tls_dir: Path) -> tuple[Path, Path, Path]:
    """The workbench's CA (:mod:`workbench.tlsca`, kept with its key, so it can also issue the
    connector daemons' certificates) and the stand-in's ECDSA P-256 certificate for localhost
    and 127.0.0.1, issued once and again only near its end, so clients can trust ``ca.pem``
    across restarts."""
    ca_file, _ = tlsca.ensure_ca(tls_dir)
    cert_file, key_file = tlsca.issue(tls_dir, "localhost", tls_dir / "server.pem",
                                      tls_dir / "server-key.pem")
    return ca_file, cert_file, key_file


def _ensure_token(path: Path) -> Path:
    if not path.exists():
        tlsca.write_private(path, (secrets.token_urlsafe(32) + "\n").encode())
    return path


# --- small helpers -----------------------------------------------------------------------------


def _state(state: Path | None) -> Path:
    return Path(state) if state is not None else state_dir()


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return _last_lines(path.read_text(errors="replace"), lines)
    except FileNotFoundError:
        return "(no log)"


def _last_lines(text: str, lines: int = 20) -> str:
    return " | ".join(text.strip().splitlines()[-lines:]) or "(empty)"
