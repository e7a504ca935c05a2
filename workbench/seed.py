"""Seeding: run the SQL fixtures in seed/ through SQLAlchemy, the one seeding path.

The fixtures are plain SQL with ``:name`` bind parameters, so the same files load into a real
certctl database (psql ``-v name=value``) and into the stand-in. Each file runs in one
transaction: a failure leaves the database as it was. Which file a scenario runs, with which
parameters, is its module's business (``workbench/scenarios/<name>.py``); this module checks the
database and runs the file.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Mapping
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import make_url

from workbench.errors import WorkbenchError
from workbench.paths import seed_dir
from workbench.target.ports import is_loopback

MAX_FIXTURE = 1_000_000  # the largest size benchmarks/bench_seeding.py measures

# Parent rows the certificate fixtures reference (certctl's demo seed creates them).
FIXTURE_PARENTS = (("teams", "t-platform"), ("owners", "o-alice"), ("issuers", "iss-local"),
                   ("renewal_policies", "rp-standard"))

# Tables certctl creates that the fixtures rely on; a database lacking them is not certctl's.
CERTCTL_TABLES = ("agents", "teams", "owners", "issuers", "renewal_policies",
                  "managed_certificates", "certificate_versions", "jobs")


# libpq connection parameters that carry a secret (or point at one) when given in the query
# string: ``postgresql://u@h/db?password=...`` is as secret as ``u:...@h``.
SECRET_DSN_PARAMS = frozenset({"password", "sslpassword", "passfile"})


def redact_dsn(dsn: str) -> str:
    """The DSN with every password removed (user info and query string), safe to record."""
    try:
        url = make_url(dsn)
        url = url.difference_update_query(
            [key for key in url.query if key.lower() in SECRET_DSN_PARAMS])
        return url.render_as_string(hide_password=True).replace(":***@", "@")
    except Exception:  # noqa: BLE001 - an unparseable DSN is still never echoed
        return "<unparseable DSN>"


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
    if not allow_remote:
        remote = remote_hosts(url, os.environ)
        if remote:
            raise WorkbenchError(f"database host {', '.join(remote)} is not on this machine; "
                                 "pass --allow-remote-db to write fixtures to it")
    return sa.create_engine(url, pool_pre_ping=True)


def _values(value: str | tuple[str, ...] | None) -> list[str]:
    """A libpq host list (``h1,h2:5433``, or a repeated query key) as bare host names."""
    items = [value] if isinstance(value, str) else list(value or ())
    hosts = []
    for item in (h.strip() for v in items for h in v.split(",")):
        if item.startswith("["):  # [::1]:5432
            item = item[1:item.find("]")] if "]" in item else item
        elif item.count(":") == 1 and not item.startswith("/"):  # host:port
            item = item.split(":", 1)[0]
        hosts.append(item)
    return hosts


def remote_hosts(url: sa.URL, environ: Mapping[str, str]) -> list[str]:
    """Every host libpq may connect to for ``url`` that is not this machine.

    The URL's host, every ``?host=`` and ``?hostaddr=`` (hostaddr is where libpq really
    connects), and when the URL gives none, ``PGHOST``/``PGHOSTADDR``. A ``service`` (query or
    ``PGSERVICE``) names its host in a service file this check does not read, so it counts as
    remote.
    """
    query = url.query
    hosts = _values(url.host) + _values(query.get("host"))
    if not hosts:
        hosts = _values(environ.get("PGHOST"))
    addrs = _values(query.get("hostaddr")) or _values(environ.get("PGHOSTADDR"))
    remote = [h for h in hosts + addrs if not is_loopback(h)]
    service = query.get("service") or environ.get("PGSERVICE")
    if service:
        remote.append(f"(service {', '.join(_values(service))} in pg_service.conf)")
    return list(dict.fromkeys(remote))


def split_statements(sql: str) -> list[str]:
    """Split a fixture file into statements: comments dropped, ``;`` at a line end separates."""
    lines = [ln for ln in sql.splitlines() if not ln.lstrip().startswith("--")]
    parts = re.split(r";\s*$", "\n".join(lines), flags=re.MULTILINE)
    return [p.strip() for p in parts if p.strip()]


def run_sql_file(engine: sa.Engine, path: Path, params: Mapping) -> float:
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


def check_database(engine: sa.Engine, parents: bool) -> None:
    """Refuse a database the fixtures cannot be written to: unreachable, not certctl's, or
    (with ``parents``) lacking the rows the certificate fixtures reference; one line each."""
    check_certctl_schema(engine)
    missing = missing_fixture_parents(engine) if parents else []
    if missing:
        raise WorkbenchError(f"the database lacks the fixtures' parent rows {', '.join(missing)};"
                             " start certctl with CERTCTL_DEMO_SEED=true (or create them)")


def load_fixture(dsn: str, fixture: str, params: Mapping, count: tuple[str, str],
                 parents: bool = False, allow_remote: bool = False) -> dict:
    """Run one fixture file of ``seed/``: the one seeding path every scenario uses.

    Checks the database is certctl's (and, with ``parents``, that the rows the certificate
    fixtures reference exist), runs ``fixture`` in one transaction, then reports
    ``{count[0]: <count[1] query result>}`` beside the parameters and the seconds taken.
    """
    engine = engine_for(dsn, allow_remote)
    try:
        check_database(engine, parents)
        seconds = run_sql_file(engine, seed_dir() / fixture, params)
        with engine.connect() as conn:
            counted = conn.execute(sa.text(count[1])).scalar_one()
    finally:
        engine.dispose()
    return {"fixture": fixture, **params, count[0]: counted, "seconds": round(seconds, 3)}


SETTLE = (("vacuum", "VACUUM (ANALYZE)"), ("checkpoint", "CHECKPOINT"))


def settle(dsn: str, allow_remote: bool = False) -> dict:
    """Leave the database as every measured step should find it: ``VACUUM (ANALYZE)`` (the dead
    rows of the last seed or step vacuumed now, not by autovacuum inside the next step) and a
    ``CHECKPOINT`` (none half-done when the step starts). A role that may not checkpoint skips
    it (said in the result). Returns the seconds each took, or why it was skipped."""
    engine = engine_for(dsn, allow_remote).execution_options(isolation_level="AUTOCOMMIT")
    took: dict[str, float | str] = {}
    try:
        with engine.connect() as conn:
            for name, statement in SETTLE:
                started = time.perf_counter()
                try:
                    conn.execute(sa.text(statement))
                except sa.exc.ProgrammingError as exc:  # e.g. no pg_checkpoint role
                    took[name] = f"skipped: {str(exc.orig).strip().splitlines()[0]}"
                    continue
                took[name] = round(time.perf_counter() - started, 3)
    finally:
        engine.dispose()
    return took


def fixture_number(i: int) -> str:
    """Fixture row ``i`` as its ids spell it: five digits zero-padded, more digits past 99,999.

    ``00001`` ... ``99999``, then ``100000``: the seed files' ``lpad(i, greatest(length, 5))``.
    """
    return f"{i:05d}"
