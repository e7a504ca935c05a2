"""Calibration: a real reading (the driver's engine over loopback, a real embedded PostgreSQL),
the record section drawn from it, and the judgement of two sides' machines."""

import sqlalchemy as sa

from tests.synthetic import calibration_section, make_record
from workbench.report import calibration


def test_a_reading_measures_cpu_loopback_and_commits_on_a_scratch_table(embedded_target):
    reading = calibration.measure(embedded_target.dsn)
    cpu, loopback, commits = reading["cpu"], reading["loopback"], reading["postgres"]
    assert len(cpu["repeats_ms"]) == calibration.CPU_REPEATS
    assert 0 < cpu["fastest_ms"] == min(cpu["repeats_ms"]) <= cpu["median_ms"]
    assert loopback["errors"] == 0 and loopback["engine"] == "workbench-http1"
    assert loopback["requests"] == calibration.LOOPBACK_BLOCKS * calibration.LOOPBACK_BLOCK
    assert 0 < loopback["p50_ms"] <= loopback["p90_ms"] <= loopback["p99_ms"]
    assert len(loopback["burst_p50_ms"]) == calibration.LOOPBACK_BLOCKS
    assert commits["commits"] > 0 and 0 < commits["p50_ms"] <= commits["p99_ms"]
    assert commits["table"] == "workbench_calibration.commit_probe"
    assert reading["seconds"] > 0 and reading["scheduling"]["policy"] in ("fifo", "nice",
                                                                         "normal")
    engine = sa.create_engine(embedded_target.dsn)
    try:
        with engine.connect() as conn:
            created = conn.execute(sa.text(
                "SELECT table_schema, table_name FROM information_schema.tables "
                "WHERE table_name = 'commit_probe'")).all()
            counted = conn.execute(sa.text(
                "SELECT n FROM workbench_calibration.commit_probe WHERE id = 1")).scalar_one()
    finally:
        engine.dispose()
    assert created == [("workbench_calibration", "commit_probe")]  # its own schema only
    assert counted >= commits["commits"]


def test_a_reading_never_fails_the_run_and_keeps_secrets_out():
    reading = calibration.measure("postgresql+psycopg://u:s3cr3t@127.0.0.1:1/nowhere")
    assert reading["cpu"]["fastest_ms"] > 0 and reading["loopback"]["errors"] == 0
    assert reading["postgres"]["error"].startswith("postgres: ")
    assert "s3cr3t" not in repr(reading)
    assert calibration.measure()["postgres"] == {"error": "no database: the run has no DSN"}


def test_the_section_compares_the_fastest_repeat_and_burst_of_both_readings():
    before = {"cpu": {"repeats_ms": [2.6, 2.5, 4.0]},
              "loopback": {"burst_p50_ms": [0.020, 0.018], "p50_ms": 0.07, "p99_ms": 0.2},
              "postgres": {"error": "no database: the run has no DSN"}, "seconds": 0.8}
    after = {"cpu": {"repeats_ms": [2.4, 3.9]},
             "loopback": {"burst_p50_ms": [0.019], "p50_ms": 0.09, "p99_ms": 0.3},
             "postgres": {"error": "no database: the run has no DSN"}, "seconds": 0.7}
    section = calibration.section(before, after)
    assert section["measured"] and section["compared"] == ["cpu_ms", "loopback_ms"]
    f = section["figures"]
    assert (f["cpu_ms"], f["loopback_ms"], f["cpu_median_ms"]) == (2.4, 0.018, 2.6)
    assert (f["loopback_p50_ms"], f["loopback_p99_ms"]) == (0.08, 0.25)
    assert f["commit_p50_ms"] is None and calibration.cost_s(section) == 1.5
    interrupted = calibration.section(before, None)  # a run stopped before its second reading
    assert interrupted["measured"] and interrupted["figures"]["cpu_ms"] == 2.5
    failed = calibration.section({"cpu": {"error": "x"}, "loopback": {"error": "x"}}, None)
    assert not failed["measured"] and failed["reason"].startswith("a reading failed")


def test_two_sides_are_judged_on_the_compared_figure_furthest_from_one():
    a = [make_record(speed=1.0)]
    assert calibration.judge(a, [make_record(speed=1.09)])[1] is None
    ratios, reason = calibration.judge(a, [make_record(speed=1.11)])
    assert ratios == {"cpu_ms": 1.11, "loopback_ms": 1.11} or reason
    assert reason.startswith("the machine measured 1.11 x slower on B than on A")
    mixed = make_record(speed=1.0)
    mixed["calibration"] = calibration_section(1.0)
    mixed["calibration"]["figures"]["loopback_ms"] = 0.06 / 1.3  # only its network got faster
    _, reason = calibration.judge(a, [mixed])
    assert reason.startswith("the machine measured 1.30 x faster on B than on A "
                             "(calibration B/A: cpu_ms 1.00, loopback_ms 0.77")
    # a side of several records takes each figure's median over them
    side = [make_record(speed=s) for s in (1.0, 1.02, 1.5)]
    assert calibration.side_figures(side)["cpu_ms"] == 2.5 * 1.02
    _, reason = calibration.judge(a, [make_record(speed=None)])
    assert reason.startswith("no calibration in 1 record(s)")
    assert calibration.cell(make_record(speed=None)) == "none"
    assert calibration.cell(make_record()) == "cpu 2.5 / loopback 0.06 ms"
