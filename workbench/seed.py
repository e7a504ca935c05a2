"""Seeding: run the SQL fixtures in seed/ through SQLAlchemy.

The fixtures are plain SQL with ``:name`` bind parameters, so the same files load into a real
certctl database (psql ``-v name=value``) and into the stand-in. Each file runs in one
transaction: a failure leaves the database as it was.
"""

from __future__ import annotations

import ipaddress
import re
import time
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import make_url

from workbench.errors import WorkbenchError
from workbench.paths import seed_dir

AGENT_FLEET_SQL = "02_agent_fleet.sql"
MAX_FLEET = 99_999  # ids are zero-padded to five digits

# Tables certctl creates that the fixtures rely on; a database lacking them is not certctl's.
CERTCTL_TABLES = ("agents", "teams", "owners", "issuers", "renewal_policies",
                  "managed_certificates", "jobs")


def redact_dsn(dsn: str) -> str:
    """The DSN with any password removed, safe to record."""
    try:
        return make_url(dsn).render_as_string(hide_password=True).replace(":***@", "@")
    except Exception:  # noqa: BLE001 - an unparseable DSN is still never echoed
        return "<unparseable DSN>"


def _is_loopback(host: str | None) -> bool:
    if not host or host.startswith("/") or host == "localhost":
        return True  # Unix socket or local name
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def engine_for(dsn: str, allow_remote: bool = False) -> sa.Engine:
    """An engine for ``dsn``; a non-loopback host needs ``allow_remote`` before any write."""
    try:
        url = make_url(dsn)
    except Exception as exc:  # noqa: BLE001
        raise WorkbenchError(f"database DSN is malformed ({exc}); expected "
                             "postgresql+psycopg://user@host:port/dbname") from None
    if url.drivername in ("postgresql", "postgres"):
        url = url.set(drivername="postgresql+psycopg")  # the driver this package ships
    host = url.query.get("host") if url.host is None else url.host
    if isinstance(host, tuple):
        host = host[0]
    if not allow_remote and not _is_loopback(host):
        raise WorkbenchError(f"database host {host!r} is not on this machine; pass "
                             "--allow-remote-db to write fixtures to it")
    return sa.create_engine(url, pool_pre_ping=True)


def split_statements(sql: str) -> list[str]:
    """Split a fixture file into statements: comments dropped, ``;`` at a line end separates."""
    lines = [ln for ln in sql.splitlines() if not ln.lstrip().startswith("--")]
    parts = re.split(r";\s*$", "\n".join(lines), flags=re.MULTILINE)
    return [p.strip() for p in parts if p.strip()]


def run_sql_file(engine: sa.Engine, path: Path, params: dict) -> float:
    """Run every statement of ``path`` in one transaction; returns the seconds taken."""
    statements = split_statements(path.read_text())
    start = time.perf_counter()
    with engine.begin() as conn:
        for stmt in statements:
            clause = sa.text(stmt)
            wanted = {k: v for k, v in params.items() if f":{k}" in stmt}
            conn.execute(clause, wanted)
    return time.perf_counter() - start


def check_certctl_schema(engine: sa.Engine) -> None:
    """Refuse a database that is unreachable or lacks certctl's tables, naming what is missing."""
    try:
        with engine.connect() as conn:
            present = set(sa.inspect(conn).get_table_names())
    except sa.exc.OperationalError as exc:
        first = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        raise WorkbenchError(f"database unreachable ({first}); check the DSN and that "
                             "PostgreSQL runs (`workbench target up` for the embedded one)"
                             ) from None
    missing = [t for t in CERTCTL_TABLES if t not in present]
    if missing:
        raise WorkbenchError(f"the database is not certctl's: missing tables {', '.join(missing)};"
                             " point the DSN at certctl's database (or start the stand-in)")


def seed_agent_fleet(dsn: str, fleet_size: int, allow_remote: bool = False) -> dict:
    """Create or reset the ``loadtest-agent-NNNNN`` fleet; returns what was seeded, how fast."""
    if not isinstance(fleet_size, int) or not 1 <= fleet_size <= MAX_FLEET:
        raise WorkbenchError(f"fleet size must be an integer in 1..{MAX_FLEET}, got {fleet_size!r}")
    engine = engine_for(dsn, allow_remote)
    try:
        check_certctl_schema(engine)
        seconds = run_sql_file(engine, seed_dir() / AGENT_FLEET_SQL, {"fleet_size": fleet_size})
        with engine.connect() as conn:
            count = conn.execute(sa.text(
                "SELECT count(*) FROM agents WHERE id LIKE 'ag-loadtest-%'")).scalar_one()
    finally:
        engine.dispose()
    return {"fixture": AGENT_FLEET_SQL, "fleet_size": fleet_size, "agents": count,
            "seconds": round(seconds, 3)}


def agent_ids(fleet_size: int) -> list[str]:
    """The fixture's agent ids, in seeding order."""
    return [f"ag-loadtest-{i:05d}" for i in range(1, fleet_size + 1)]
