"""`workbench run SCENARIO --fixture-sizes ...`: one run per fixture size, latency against it."""

import json
from pathlib import Path

import sqlalchemy as sa

from workbench.cli import main
from workbench.run import sweep
from workbench.target import embedded


def test_a_sweep_runs_once_per_size_and_draws_latency_against_it(embedded_env,
                                                                 embedded_target_state,
                                                                 monkeypatch, capsys):
    monkeypatch.setenv("CERTCTL_TOKEN", embedded.read_token(embedded_target_state))
    code = main(["run", "agent_storm", "--fixture-sizes", "120,30", "-p", "duration_s", "1"])
    out = capsys.readouterr().out
    assert code in (0, 99)  # the SLO verdict is the machine's; the sweep ran either way
    sweep_dir = Path(out.split("  sweep:  ")[1].split()[0]).parent
    data = json.loads((sweep_dir / sweep.SWEEP_FILE).read_text())
    assert [r["size"] for r in data["runs"]] == [30, 120]  # in increasing order
    assert [r["fixture_rows"] for r in data["runs"]] == [30, 120]
    for row in data["runs"]:
        record = json.loads((Path(row["run_dir"]) / "record.json").read_text())
        assert record["parameters"]["fleet_size"] == row["size"]
        assert row["p50"] == record["endpoints"]["heartbeat"]["p50"]
        assert row["requests"] == record["endpoints"]["heartbeat"]["requests"] > 0
    assert (sweep_dir / sweep.FIGURE_FILE).stat().st_size > 10_000
    assert "agent_storm (smoke) across fixture sizes:" in out
    engine = sa.create_engine(embedded_env.dsn)
    with engine.connect() as conn:  # the last size's fleet is what is left
        assert conn.execute(sa.text("SELECT count(*) FROM agents "
                                    "WHERE id LIKE 'ag-loadtest-%'")).scalar_one() == 120
    engine.dispose()
