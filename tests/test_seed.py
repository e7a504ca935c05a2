"""Fixtures through the one seeding path: each scenario's SQL, run by seed.load_fixture."""

import re

import pytest
import sqlalchemy as sa

from workbench import scenarios, seed
from workbench.errors import WorkbenchError
from workbench.scenarios import (
    _fleet,
    acme_burst,
    acme_orders,
    api_tier,
    bulk_renewal,
)


def seed_sized(dsn, name, **sizes):
    """Seed scenario ``name`` at its smoke profile with ``sizes`` (fleet_size=..., ...)."""
    spec = scenarios.get(name)
    return spec.seed(dsn, spec.params_for("smoke", sizes))


def agents(dsn, where="id LIKE 'ag-loadtest-%'"):
    engine = sa.create_engine(dsn)
    with engine.connect() as conn:
        rows = conn.execute(sa.text(f"SELECT id, name, status, os, architecture, ip_address, "
                                    f"version, hostname, last_heartbeat_at, now() AS now "
                                    f"FROM agents WHERE {where} ORDER BY id")).all()
    engine.dispose()
    return rows


def execute(dsn, sql, **params):
    engine = sa.create_engine(dsn)
    with engine.begin() as conn:
        conn.execute(sa.text(sql), params)
    engine.dispose()


def test_fleet_has_certctl_shape(embedded_target):
    before = scalar(embedded_target.dsn, "SELECT now()")
    report = seed_sized(embedded_target.dsn, "agent_storm", fleet_size=1000)
    assert report["agents"] == 1000
    rows = agents(embedded_target.dsn)
    assert rows[0].id == "ag-loadtest-00001" and rows[0].name == "loadtest-agent-00001"
    assert {r.status for r in rows} == {"Online"}
    # every column certctl scans into a Go string is non-NULL
    assert all(None not in (r.os, r.architecture, r.ip_address, r.version, r.hostname)
               for r in rows)
    os_mix = {o: sum(r.os == o for r in rows) for o in ("linux", "windows", "darwin")}
    assert os_mix == {"linux": 800, "windows": 100, "darwin": 100}
    # staggered over the previous 60 s: agent 1 beat at the seeding's now(), agent i
    # 60 (i - 1) / 1000 s before it. Exact, so no clock read after seeding (which a busy
    # machine delays) enters the check.
    newest = rows[0].last_heartbeat_at
    assert before <= newest <= rows[0].now
    ages = [(newest - r.last_heartbeat_at).total_seconds() for r in rows]
    assert ages == [60.0 * i / 1000 for i in range(1000)]


def test_seeding_twice_leaves_one_fleet_and_resets_state(embedded_target):
    dsn = embedded_target.dsn
    seed_sized(dsn, "agent_storm", fleet_size=300)
    execute(dsn, "UPDATE agents SET status='Offline', retired_at=now() "
                 "WHERE id='ag-loadtest-00007'")
    seed_sized(dsn, "agent_storm", fleet_size=300)
    rows = agents(dsn)
    assert len(rows) == 300 and {r.status for r in rows} == {"Online"}
    assert len(agents(dsn, "retired_at IS NOT NULL AND id LIKE 'ag-loadtest-%'")) == 0
    seed_sized(dsn, "agent_storm", fleet_size=120)  # a smaller fleet removes the surplus
    assert len(agents(dsn)) == 120


def test_rows_without_the_prefix_are_untouched(embedded_target):
    dsn = embedded_target.dsn
    execute(dsn, "INSERT INTO agents (id, name, hostname, status, api_key_hash, os, architecture,"
                 " ip_address, version) VALUES ('ag-foreign-1', 'prod-agent-1', 'h', 'Offline',"
                 " 'k', 'linux', 'amd64', '', ''), ('ag-loadtest-99999x', 'not-loadtest', 'h',"
                 " 'Offline', 'k', '', '', '', '') ON CONFLICT (id) DO NOTHING")
    foreign = "id IN ('ag-foreign-1', 'ag-loadtest-99999x')"
    try:
        before = [r[:9] for r in agents(dsn, foreign)]  # every column but now()
        seed_sized(dsn, "agent_storm", fleet_size=50)
        seed_sized(dsn, "agent_storm", fleet_size=10)
        assert [r[:9] for r in agents(dsn, foreign)] == before
        assert len(before) == 2
    finally:
        execute(dsn, "DELETE FROM agents WHERE id IN ('ag-foreign-1', 'ag-loadtest-99999x')")


# --- certificate fixtures: bulk renewal, ARI, api_tier cleanup ---------------------------------


def certs(dsn, where):
    engine = sa.create_engine(dsn)
    with engine.connect() as conn:
        rows = conn.execute(sa.text(
            "SELECT id, name, common_name, sans, environment, owner_id, team_id, issuer_id,"
            " renewal_policy_id, status, expires_at, tags, created_at, source, now() AS now"
            f" FROM managed_certificates WHERE {where} ORDER BY id")).all()
    engine.dispose()
    return rows


def scalar(dsn, sql, **params):
    engine = sa.create_engine(dsn)
    with engine.connect() as conn:
        value = conn.execute(sa.text(sql), params).scalar_one()
    engine.dispose()
    return value


BULK = "id LIKE 'mc-loadtest-bulk-%' AND name LIKE 'loadtest-bulk-%'"
FOREIGN_CERTS = "id IN ('mc-foreign-1', 'mc-loadtest-bulk-99999x', 'mc-foreign-api')"


def test_bulk_fleet_has_certctl_shape(embedded_target):
    report = seed_sized(embedded_target.dsn, "bulk_renewal", bulk_size=300)
    assert report["certificates"] == 300 and report["fixture"] == bulk_renewal.CERTS_SQL
    rows = certs(embedded_target.dsn, BULK)
    assert len(rows) == 300
    first = rows[0]
    assert (first.id, first.name, first.common_name, first.sans) == (
        "mc-loadtest-bulk-00001", "loadtest-bulk-00001", "loadtest-bulk-00001.example.test",
        ["loadtest-bulk-00001.example.test"])
    assert {(r.status, r.environment, r.owner_id, r.team_id, r.issuer_id, r.renewal_policy_id,
             r.source) for r in rows} == {("Active", "production", "o-alice", "t-platform",
                                           "iss-local", "rp-standard", "")}
    assert all(r.tags == {"batch": "bulk-renewal"} for r in rows)
    days = sorted((r.expires_at - r.now).total_seconds() / 86400 for r in rows)
    assert 0 < days[0] < 0.1 and 29.9 < days[-1] < 30  # spread over the next 30 days
    ages = [(r.now - r.created_at).days for r in rows]
    assert min(ages) >= 699  # older than the demo seed's certificates: criteria mode sees them
    assert [r.id for r in sorted(rows, key=lambda r: r.created_at)] == [r.id for r in rows]
    assert bulk_renewal.certificate_ids(3) == [r.id for r in rows[:3]]


def test_bulk_seed_and_reset_restore_status_and_remove_fixture_jobs_only(embedded_target):
    dsn = embedded_target.dsn
    seed_sized(dsn, "bulk_renewal", bulk_size=120)
    execute(dsn, "INSERT INTO managed_certificates (id, name, common_name, environment,"
                 " owner_id, team_id, issuer_id, renewal_policy_id, status, expires_at) VALUES"
                 " ('mc-foreign-1', 'prod-cert-1', 'p.example.test', 'production', 'o-alice',"
                 " 't-platform', 'iss-local', 'rp-standard', 'RenewalInProgress', now()),"
                 " ('mc-loadtest-bulk-99999x', 'not-loadtest', 'n.example.test', 'production',"
                 " 'o-alice', 't-platform', 'iss-local', 'rp-standard', 'Revoked', now())"
                 " ON CONFLICT (id) DO NOTHING")
    execute(dsn, "INSERT INTO jobs (id, type, certificate_id, status) VALUES"
                 " ('job-fixture-1', 'Renewal', 'mc-loadtest-bulk-00003', 'AwaitingCSR'),"
                 " ('job-foreign-1', 'Renewal', 'mc-foreign-1', 'AwaitingCSR')")
    execute(dsn, "UPDATE managed_certificates SET status = 'RenewalInProgress'"
                 " WHERE id IN ('mc-loadtest-bulk-00003', 'mc-loadtest-bulk-00004')")
    try:
        before = certs(dsn, FOREIGN_CERTS)
        spec = scenarios.get("bulk_renewal")
        report = spec.reset(dsn, spec.defaults("smoke"))
        assert report["certificates"] == 120
        assert {r.status for r in certs(dsn, BULK)} == {"Active"}
        jobs = scalar(dsn, "SELECT string_agg(id, ',' ORDER BY id) FROM jobs WHERE id LIKE"
                           " 'job-f%'")
        assert jobs == "job-foreign-1"
        execute(dsn, "UPDATE managed_certificates SET status = 'Expired', tags = '{}'"
                     " WHERE id = 'mc-loadtest-bulk-00007'")
        seed_sized(dsn, "bulk_renewal", bulk_size=120)  # seeding again resets every column too
        again = certs(dsn, "id = 'mc-loadtest-bulk-00007'")[0]
        assert (again.status, again.tags) == ("Active", {"batch": "bulk-renewal"})
        seed_sized(dsn, "bulk_renewal", bulk_size=40)  # a smaller fleet removes the surplus
        assert len(certs(dsn, BULK)) == 40
        assert [r[:14] for r in certs(dsn, FOREIGN_CERTS)] == [r[:14] for r in before]
    finally:
        execute(dsn, "DELETE FROM managed_certificates WHERE id IN ('mc-foreign-1',"
                     " 'mc-loadtest-bulk-99999x')")


def test_ari_certificates_have_unpadded_lowercase_serials(embedded_target):
    dsn = embedded_target.dsn
    report = seed_sized(dsn, "acme_burst", ari_size=20)
    assert report["versions"] == 20
    engine = sa.create_engine(dsn)
    with engine.connect() as conn:
        versions = conn.execute(sa.text(
            "SELECT cv.id, cv.certificate_id, cv.serial_number, cv.not_after, mc.expires_at,"
            " mc.issuer_id, mc.status, cv.fingerprint_sha256 FROM certificate_versions cv"
            " JOIN managed_certificates mc ON mc.id = cv.certificate_id"
            " WHERE cv.id LIKE 'cv-loadtest-ari-%' ORDER BY cv.id")).all()
    engine.dispose()
    assert len(versions) == 20
    for i, v in enumerate(versions, start=1):
        assert v.serial_number == acme_burst.ari_serial(i) == f"{int(v.serial_number, 16):x}"
        assert v.certificate_id == f"mc-loadtest-ari-{i:05d}"
        assert v.not_after == v.expires_at and v.issuer_id == "iss-local"
    assert len({v.fingerprint_sha256 for v in versions}) == 20
    seed_sized(dsn, "acme_burst", ari_size=20)  # idempotent
    seed_sized(dsn, "acme_burst", ari_size=5)  # shrinks; versions go with their certificates
    assert scalar(dsn, "SELECT count(*) FROM certificate_versions"
                       " WHERE id LIKE 'cv-loadtest-ari-%'") == 5


def test_ari_cert_ids_encode_the_fixture_serials():
    import base64

    for i, cert_id in enumerate(acme_burst.ari_cert_ids(3), start=1):
        aki, serial = cert_id.split(".")
        assert "=" not in cert_id
        raw = base64.urlsafe_b64decode(serial + "=" * (-len(serial) % 4))
        assert raw.hex() == acme_burst.ari_serial(i)
        assert base64.urlsafe_b64decode(aki + "=" * (-len(aki) % 4)) == acme_burst.ARI_AKI


def test_api_tier_reset_removes_only_its_certificates(embedded_target):
    dsn = embedded_target.dsn
    execute(dsn, "INSERT INTO managed_certificates (id, name, common_name, environment,"
                 " owner_id, team_id, issuer_id, renewal_policy_id, status, expires_at) VALUES"
                 " ('cert-1-1', 'loadtest-api-abc-000001', 'a.example.test', 'production',"
                 " 'o-alice', 't-platform', 'iss-local', 'rp-standard', 'Pending', now()),"
                 " ('mc-foreign-api', 'loadtest-apiary', 'b.example.test', 'production',"
                 " 'o-alice', 't-platform', 'iss-local', 'rp-standard', 'Pending', now())")
    try:
        report = seed_sized(dsn, "api_tier")
        assert report["api_certificates"] == 0
        assert [r.id for r in certs(dsn, "id IN ('cert-1-1', 'mc-foreign-api')")] == [
            "mc-foreign-api"]
    finally:
        execute(dsn, "DELETE FROM managed_certificates WHERE id IN ('cert-1-1',"
                     " 'mc-foreign-api')")


def test_missing_parent_rows_are_refused_with_the_fix(embedded_target):
    """A fresh certctl-shaped database without the demo seed's teams, owners, ..."""
    from workbench.target.standin import schema_sql

    admin = sa.create_engine(embedded_target.dsn, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text("DROP DATABASE IF EXISTS wb_no_parents"))
        conn.execute(sa.text("CREATE DATABASE wb_no_parents"))
    dsn = embedded_target.dsn.replace("/certctl?", "/wb_no_parents?")
    try:
        bare = sa.create_engine(dsn)
        with bare.begin() as conn:
            conn.exec_driver_sql(schema_sql())
            conn.exec_driver_sql("DELETE FROM owners; DELETE FROM teams;"
                                 " DELETE FROM renewal_policies WHERE id = 'rp-standard'")
        bare.dispose()
        with pytest.raises(WorkbenchError, match=r"parent rows teams.t-platform, owners.o-alice,"
                                                 r" renewal_policies.rp-standard; start certctl"
                                                 r" with CERTCTL_DEMO_SEED=true"):
            seed_sized(dsn, "bulk_renewal", bulk_size=10)
        assert scalar(dsn, "SELECT count(*) FROM managed_certificates") == 0
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text("DROP DATABASE IF EXISTS wb_no_parents WITH (FORCE)"))
        admin.dispose()


@pytest.mark.parametrize("size", [0, -1, 1_000_001, 2.5, True, "10"])
def test_fixture_sizes_are_checked_before_any_write(size):
    spec = scenarios.get("bulk_renewal")
    with pytest.raises(WorkbenchError, match="bulk_size must be an integer in 1..1000000,"):
        spec.seed("postgresql+psycopg://nobody@/nowhere", spec.defaults("smoke") | {
            "bulk_size": size})


@pytest.mark.parametrize("size", [0, 1_000_001, 2.5])
def test_fleet_sizes_are_checked_before_any_write(size):
    spec = scenarios.get("agent_storm")
    with pytest.raises(WorkbenchError, match="fleet_size must be an integer in 1..1000000,"):
        spec.seed("postgresql+psycopg://nobody@/nowhere", spec.defaults("smoke") | {
            "fleet_size": size})


# --- sizes past 99,999: five-digit ids stay, longer ones follow --------------------------------

PAST_FIVE_DIGITS = 100_003  # the smallest fleet that shows lpad's truncation, plus a margin


def ids(dsn, table, where):
    engine = sa.create_engine(dsn)
    with engine.connect() as conn:
        rows = conn.execute(sa.text(f"SELECT id FROM {table} WHERE {where}")).scalars().all()
    engine.dispose()
    return rows


def test_fixture_numbers_keep_five_digits_and_grow_past_them():
    assert [seed.fixture_number(i) for i in (1, 99_999, 100_000, 1_000_000)] == [
        "00001", "99999", "100000", "1000000"]
    assert _fleet.agent_ids(1) == ["ag-loadtest-00001"]
    assert bulk_renewal.certificate_ids(100_001)[-3:] == [
        "mc-loadtest-bulk-99999", "mc-loadtest-bulk-100000", "mc-loadtest-bulk-100001"]


def test_bulk_fixture_past_five_digits_has_the_python_ids_and_shrinks_back(embedded_target):
    dsn = embedded_target.dsn
    report = seed_sized(dsn, "bulk_renewal", bulk_size=PAST_FIVE_DIGITS)
    assert report["certificates"] == PAST_FIVE_DIGITS
    assert sorted(ids(dsn, "managed_certificates", BULK)) == sorted(
        bulk_renewal.certificate_ids(PAST_FIVE_DIGITS))
    assert scalar(dsn, f"SELECT count(*) FROM managed_certificates WHERE {BULK}"
                       " AND name = substring(id FROM 4)"
                       " AND common_name = name || '.example.test'") == PAST_FIVE_DIGITS
    newest = certs(dsn, "id IN ('mc-loadtest-bulk-99999', 'mc-loadtest-bulk-100000',"
                        " 'mc-loadtest-bulk-100003')")
    created = {r.id: r.created_at for r in newest}
    # created_at follows the Python order (criteria mode's oldest first), not the text order
    assert (created["mc-loadtest-bulk-99999"] < created["mc-loadtest-bulk-100000"]
            < created["mc-loadtest-bulk-100003"])
    execute(dsn, "INSERT INTO jobs (id, type, certificate_id, status) VALUES"
                 " ('job-fixture-big', 'Renewal', 'mc-loadtest-bulk-100002', 'Pending')")
    seed_sized(dsn, "bulk_renewal", bulk_size=10_000)  # back down: no surplus row or its job
    assert sorted(ids(dsn, "managed_certificates", BULK)) == bulk_renewal.certificate_ids(10_000)
    assert scalar(dsn, "SELECT count(*) FROM jobs WHERE id = 'job-fixture-big'") == 0
    seed_sized(dsn, "bulk_renewal", bulk_size=40)  # leave the session's database small


def test_agent_fleet_past_five_digits_has_the_python_ids_and_shrinks_back(embedded_target):
    dsn = embedded_target.dsn
    fleet = "id LIKE 'ag-loadtest-%'"
    report = seed_sized(dsn, "agent_storm", fleet_size=PAST_FIVE_DIGITS)
    assert report["agents"] == PAST_FIVE_DIGITS
    assert sorted(ids(dsn, "agents", fleet)) == sorted(_fleet.agent_ids(PAST_FIVE_DIGITS))
    assert scalar(dsn, "SELECT count(*) FROM agents WHERE id LIKE 'ag-loadtest-%'"
                       " AND name = 'loadtest-agent-' || substring(id FROM 13)"
                       " AND hostname = name || '.example.test'") == PAST_FIVE_DIGITS
    seed_sized(dsn, "agent_storm", fleet_size=50)
    assert sorted(ids(dsn, "agents", fleet)) == _fleet.agent_ids(50)


def test_no_fixture_file_pads_a_row_number_to_a_fixed_width():
    """lpad TRUNCATES a longer string: lpad('100000', 5, '0') is '10000', a duplicate id.

    The bulk and agent tests above show the failure at 100,003 rows; this covers every file,
    the ARI fixture included, without seeding 100,000 rows of each.
    """
    for path in sorted(seed.seed_dir().glob("*.sql")):
        text = path.read_text()
        assert not re.search(r"lpad\(i::text,\s*\d", text), path.name
        if "generate_series" in text:
            assert "lpad(i::text, greatest(length(i::text), 5), '0')" in text, path.name


def test_every_fixture_file_is_plain_statements_with_its_bind_parameters():
    expected = {bulk_renewal.CERTS_SQL: ("bulk_size", ["DELETE", "DELETE", "INSERT"]),
                bulk_renewal.RESET_SQL: (None, ["DELETE", "UPDATE"]),
                _fleet.FLEET_SQL: ("fleet_size", ["DELETE", "INSERT"]),
                acme_burst.ARI_SQL: ("ari_size", ["DELETE", "INSERT", "INSERT"]),
                api_tier.RESET_SQL: (None, ["DELETE"]),
                acme_orders.RESET_SQL: (None, ["DELETE"] * 4)}
    for name, (param, verbs) in expected.items():
        statements = seed.split_statements((seed.seed_dir() / name).read_text())
        assert [s.split()[0] for s in statements] == verbs, name
        binds = {m for s in statements for m in re.findall(r"(?<![:\w]):([a-z_]+)", s)}
        assert binds == ({param} if param else set()), name


def test_settle_leaves_no_dead_rows_for_the_next_step(embedded_target):
    """A capacity step starts from a settled database: reseeding the fleet (an upsert of every
    row) leaves dead rows that autovacuum would otherwise clean inside the next step."""
    dsn = embedded_target.dsn
    seed_sized(dsn, "agent_storm", fleet_size=400)
    seed_sized(dsn, "agent_storm", fleet_size=400)  # every row rewritten: 400 dead versions
    dead = ("SELECT n_dead_tup FROM pg_stat_user_tables WHERE relname = 'agents'")
    engine = sa.create_engine(dsn)
    try:
        with engine.connect() as conn:
            assert conn.execute(sa.text(dead)).scalar_one() >= 400
        took = seed.settle(dsn)
        with engine.connect() as conn:
            assert conn.execute(sa.text(dead)).scalar_one() == 0
    finally:
        engine.dispose()
    assert set(took) == {"vacuum", "checkpoint"}
    assert all(isinstance(v, float) and v >= 0 for v in took.values())
