"""Seeding: run the SQL fixtures in seed/ through SQLAlchemy.

The fixtures are plain SQL with ``:name`` bind parameters, so the same files load into a real
certctl database (psql ``-v name=value``) and into the stand-in. Each file runs in one
transaction: a failure leaves the database as it was.
"""

from __future__ import annotations

import base64
import ipaddress
import os
import re
import time
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import make_url

from workbench.errors import WorkbenchError
from workbench.paths import seed_dir

BULK_RENEWAL_SQL = "01_bulk_renewal_certs.sql"
BULK_RENEWAL_RESET_SQL = "01_bulk_renewal_reset.sql"
AGENT_FLEET_SQL = "02_agent_fleet.sql"
ARI_CERTS_SQL = "03_ari_certs.sql"
API_TIER_RESET_SQL = "04_api_tier_reset.sql"
ACME_ORDERS_RESET_SQL = "05_acme_orders_reset.sql"
ACME_LOADTEST_CONTACT = "mailto:loadtest-acme@example.test"  # marks acme_orders' accounts
MAX_FIXTURE = 1_000_000  # the largest size benchmarks/bench_seeding.py measures
MAX_FLEET = MAX_FIXTURE

# Parent rows the certificate fixtures reference (certctl's demo seed creates them).
FIXTURE_PARENTS = (("teams", "t-platform"), ("owners", "o-alice"), ("issuers", "iss-local"),
                   ("renewal_policies", "rp-standard"))
ARI_AKI = b"loadtest"  # certctl ignores the AKI half of an ARI cert-id; any bytes do

# Tables certctl creates that the fixtures rely on; a database lacking them is not certctl's.
CERTCTL_TABLES = ("agents", "teams", "owners", "issuers", "renewal_policies",
                  "managed_certificates", "certificate_versions", "jobs")


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


ALLOW_REMOTE_ENV = "WORKBENCH_ALLOW_REMOTE_DB"  # set by --allow-remote-db; reaches the kernel


def engine_for(dsn: str, allow_remote: bool = False) -> sa.Engine:
    """An engine for ``dsn``; a non-loopback host needs consent before any write.

    Consent is ``allow_remote`` or ``WORKBENCH_ALLOW_REMOTE_DB=1`` (what ``--allow-remote-db``
    sets, so it reaches the notebook kernel without becoming a notebook parameter).
    """
    allow_remote = allow_remote or os.environ.get(ALLOW_REMOTE_ENV) == "1"
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


def missing_fixture_parents(engine: sa.Engine) -> list[str]:
    """``table.id`` of each parent row the certificate fixtures need that does not exist."""
    missing = []
    with engine.connect() as conn:
        for table, row_id in FIXTURE_PARENTS:
            found = conn.execute(sa.text(f"SELECT 1 FROM {table} WHERE id = :id"),
                                 {"id": row_id}).first()
            if found is None:
                missing.append(f"{table}.{row_id}")
    return missing


def _check_parents(engine: sa.Engine) -> None:
    missing = missing_fixture_parents(engine)
    if missing:
        raise WorkbenchError(f"the fixtures reference rows this database lacks: "
                             f"{', '.join(missing)}; start certctl with CERTCTL_DEMO_SEED=true "
                             "(or create them) before seeding")


def _check_size(name: str, size: object) -> None:
    if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= MAX_FIXTURE:
        raise WorkbenchError(f"{name} must be an integer in 1..{MAX_FIXTURE}, got {size!r}")


def load_fixture(dsn: str, fixture: str, params: dict, count: tuple[str, str],
                 parents: bool = False, allow_remote: bool = False) -> dict:
    """Run one fixture file: the one seeding path every scenario uses.

    Checks the database is certctl's (and, with ``parents``, that the rows the certificate
    fixtures reference exist), runs ``fixture`` in one transaction, then reports
    ``{count[0]: <count[1] query result>}`` beside the parameters and the seconds taken.
    """
    engine = engine_for(dsn, allow_remote)
    try:
        check_certctl_schema(engine)
        if parents:
            _check_parents(engine)
        seconds = run_sql_file(engine, seed_dir() / fixture, params)
        with engine.connect() as conn:
            counted = conn.execute(sa.text(count[1])).scalar_one()
    finally:
        engine.dispose()
    return {"fixture": fixture, **params, count[0]: counted, "seconds": round(seconds, 3)}


_ACTIVE_BULK = ("certificates", "SELECT count(*) FROM managed_certificates"
                " WHERE id LIKE 'mc-loadtest-bulk-%' AND status = 'Active'")


def seed_bulk_renewal(dsn: str, bulk_size: int, allow_remote: bool = False) -> dict:
    """Create or reset the ``loadtest-bulk-NNNNN`` certificates (all Active, no jobs)."""
    _check_size("bulk_size", bulk_size)
    return load_fixture(dsn, BULK_RENEWAL_SQL, {"bulk_size": bulk_size}, _ACTIVE_BULK,
                        parents=True, allow_remote=allow_remote)


def reset_bulk_renewal(dsn: str, allow_remote: bool = False) -> dict:
    """Put the bulk fleet back between runs: fixture jobs deleted, status Active again."""
    return load_fixture(dsn, BULK_RENEWAL_RESET_SQL, {}, _ACTIVE_BULK, allow_remote=allow_remote)


def seed_ari_certs(dsn: str, ari_size: int, allow_remote: bool = False) -> dict:
    """Create or reset the ``loadtest-ari-NNNNN`` certificates and their versions."""
    _check_size("ari_size", ari_size)
    return load_fixture(dsn, ARI_CERTS_SQL, {"ari_size": ari_size},
                        ("versions", "SELECT count(*) FROM certificate_versions"
                                     " WHERE id LIKE 'cv-loadtest-ari-%'"),
                        parents=True, allow_remote=allow_remote)


def reset_api_tier(dsn: str, allow_remote: bool = False) -> dict:
    """Delete the certificates earlier api_tier runs created (``loadtest-api-*``)."""
    return load_fixture(dsn, API_TIER_RESET_SQL, {},
                        ("api_certificates", "SELECT count(*) FROM managed_certificates"
                                             " WHERE name LIKE 'loadtest-api-%'"),
                        allow_remote=allow_remote)


def reset_acme_orders(dsn: str, allow_remote: bool = False) -> dict:
    """Delete the ACME accounts (and their orders, authzs, challenges) acme_orders created."""
    return load_fixture(dsn, ACME_ORDERS_RESET_SQL, {},
                        ("acme_accounts", "SELECT count(*) FROM acme_accounts WHERE"
                                          f" '{ACME_LOADTEST_CONTACT}' = ANY (contact)"),
                        allow_remote=allow_remote)


def seed_agent_fleet(dsn: str, fleet_size: int, allow_remote: bool = False) -> dict:
    """Create or reset the ``loadtest-agent-NNNNN`` fleet; returns what was seeded, how fast."""
    if not isinstance(fleet_size, int) or not 1 <= fleet_size <= MAX_FLEET:
        raise WorkbenchError(f"fleet size must be an integer in 1..{MAX_FLEET}, got {fleet_size!r}")
    return load_fixture(dsn, AGENT_FLEET_SQL, {"fleet_size": fleet_size},
                        ("agents", "SELECT count(*) FROM agents WHERE id LIKE 'ag-loadtest-%'"),
                        allow_remote=allow_remote)


def fixture_number(i: int) -> str:
    """Fixture row ``i`` as its ids spell it: five digits zero-padded, more digits past 99,999.

    ``00001`` ... ``99999``, then ``100000``: the seed files' ``lpad(i, greatest(length, 5))``.
    """
    return f"{i:05d}"


def agent_ids(fleet_size: int) -> list[str]:
    """The fixture's agent ids, in seeding order."""
    return [f"ag-loadtest-{fixture_number(i)}" for i in range(1, fleet_size + 1)]


def bulk_certificate_ids(bulk_size: int) -> list[str]:
    """The bulk fixture's certificate ids, oldest ``created_at`` first."""
    return [f"mc-loadtest-bulk-{fixture_number(i)}" for i in range(1, bulk_size + 1)]


def ari_serial(i: int) -> str:
    """Serial of ARI fixture ``i`` as stored: lowercase hex, never a leading zero."""
    return f"ace0{i:012x}"


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def ari_cert_ids(ari_size: int) -> list[str]:
    """RFC 9773 cert-ids (``base64url(AKI).base64url(serial)``) of the ARI fixture."""
    aki = _b64url(ARI_AKI)
    return [f"{aki}.{_b64url(bytes.fromhex(ari_serial(i)))}" for i in range(1, ari_size + 1)]
