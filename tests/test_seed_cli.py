"""`workbench seed SCENARIO --size N`: the fixtures at any size from the command line."""

import pytest
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


@pytest.mark.parametrize(("argv", "message"), [
    (["seed", "bulk_renewal", "--size", "1000001"],
     "error: parameter bulk_size must be an integer in 1..1000000, got 1000001"),
    (["seed", "api_tier", "--size", "10"],
     "error: api_tier has no sized fixture; scenarios with one: acme_burst, agent_fleet, "
     "agent_storm, bulk_renewal"),
    (["seed", "nope", "--size", "10"], "error: unknown scenario 'nope'"),
])
def test_bad_seed_input_is_one_error_line_before_any_write(embedded_env, capsys, argv, message):
    before = _count(embedded_env.dsn, BULK)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1
    assert _count(embedded_env.dsn, BULK) == before


def test_a_size_that_is_not_positive_is_refused_by_the_parser(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["seed", "bulk_renewal", "--size", "0"])
    assert exc.value.code == 2
    assert "--size: must be positive, got 0" in capsys.readouterr().err
