"""`workbench seed SCENARIO --size N`: the fixtures at any size from the command line."""

import sqlalchemy as sa

from workbench.cli import main

BULK = "SELECT count(*) FROM managed_certificates WHERE id LIKE 'mc-loadtest-bulk-%'"


def _count(dsn: str, sql: str) -> int:
    engine = sa.create_engine(dsn)
    try:
        with engine.connect() as conn:
            return conn.execute(sa.text(sql)).scalar_one()
    finally:
        engine.dispose()


def test_seed_grows_then_a_reseed_at_a_smaller_size_leaves_that_many(embedded_env, capsys):
    assert main(["seed", "bulk_renewal", "--size", "1200"]) == 0
    assert _count(embedded_env.dsn, BULK) == 1200
    out = capsys.readouterr().out
    assert out.startswith("seeded bulk_renewal (01_bulk_renewal_certs.sql, bulk_size=1,200): "
                          "certificates 1,200 in ")
    assert main(["seed", "bulk_renewal", "--size", "300"]) == 0
    assert _count(embedded_env.dsn, BULK) == 300
    assert main(["seed", "agent_storm", "--size", "70"]) == 0
    assert _count(embedded_env.dsn, "SELECT count(*) FROM agents "
                                    "WHERE id LIKE 'ag-loadtest-%'") == 70
