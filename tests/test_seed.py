import sqlalchemy as sa

from workbench import seed


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
    report = seed.seed_agent_fleet(embedded_target.dsn, 1000)
    assert report["agents"] == 1000
    rows = agents(embedded_target.dsn)
    assert rows[0].id == "ag-loadtest-00001" and rows[0].name == "loadtest-agent-00001"
    assert {r.status for r in rows} == {"Online"}
    # every column certctl scans into a Go string is non-NULL
    assert all(None not in (r.os, r.architecture, r.ip_address, r.version, r.hostname)
               for r in rows)
    os_mix = {o: sum(r.os == o for r in rows) for o in ("linux", "windows", "darwin")}
    assert os_mix == {"linux": 800, "windows": 100, "darwin": 100}
    ages = sorted((r.now - r.last_heartbeat_at).total_seconds() for r in rows)
    assert 0 <= ages[0] < 1 and 58 < ages[-1] <= 60  # staggered over the previous 60 s


def test_seeding_twice_leaves_one_fleet_and_resets_state(embedded_target):
    dsn = embedded_target.dsn
    seed.seed_agent_fleet(dsn, 300)
    execute(dsn, "UPDATE agents SET status='Offline', retired_at=now() "
                 "WHERE id='ag-loadtest-00007'")
    seed.seed_agent_fleet(dsn, 300)
    rows = agents(dsn)
    assert len(rows) == 300 and {r.status for r in rows} == {"Online"}
    assert len(agents(dsn, "retired_at IS NOT NULL AND id LIKE 'ag-loadtest-%'")) == 0
    seed.seed_agent_fleet(dsn, 120)  # a smaller fleet removes the surplus
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
        seed.seed_agent_fleet(dsn, 50)
        seed.seed_agent_fleet(dsn, 10)
        assert [r[:9] for r in agents(dsn, foreign)] == before
        assert len(before) == 2
    finally:
        execute(dsn, "DELETE FROM agents WHERE id IN ('ag-foreign-1', 'ag-loadtest-99999x')")


def test_the_fixture_file_has_only_statements_and_bind_parameters():
    statements = seed.split_statements((seed.seed_dir() / seed.AGENT_FLEET_SQL).read_text())
    assert [s.split()[0] for s in statements] == ["DELETE", "INSERT"]
    assert all(":fleet_size" in s for s in statements)
