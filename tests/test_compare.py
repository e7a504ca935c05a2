"""Comparison: asv's rule for a change, an interval for its absence, "inconclusive" with what
would settle it; bootstrap intervals, comparability, trend. Rates (power, false positives) are
measured over many seeded trials: deterministic, so their margins cannot flake."""

import json
import subprocess
import sys

import numpy as np
import pytest

from tests.synthetic import make_record, run_windows
from workbench import compare, stats
from workbench.errors import WorkbenchError


def windows(rng, scale=1.0, count=20, size=200):
    return compare.WindowSet.from_samples(
        [rng.lognormal(np.log(2.0 * scale), 0.5, size) for _ in range(count)])


def test_a_20_percent_shift_is_slower_and_its_mirror_faster():
    rng = np.random.default_rng(0)
    a, b = windows(rng), windows(rng, scale=1.2)
    rows = compare.compare_windows(a, b)
    assert [r["verdict"] for r in rows] == ["slower"] * 3
    for r in rows:
        assert r["ci_low"] <= r["ratio"] <= r["ci_high"] and r["ci_low"] > 1.0
        assert r["p_value"] < 0.002 and r["unit"] == "windows"
    assert rows[0]["ratio"] == pytest.approx(1.2, abs=0.05)
    assert [r["verdict"] for r in compare.compare_windows(b, a)] == ["faster"] * 3


def test_same_distribution_false_positive_rate_is_below_one_percent():
    rng = np.random.default_rng(1)
    trials, false_positives, verdicts = 300, 0, set()
    for _ in range(trials):
        rows = compare.compare_windows(windows(rng, count=12, size=100),
                                       windows(rng, count=12, size=100), n_boot=0)
        false_positives += any(r["verdict"] in ("slower", "faster") for r in rows)
        verdicts |= {r["verdict"] for r in rows}
    assert false_positives / trials < 0.01
    assert verdicts == {"inconclusive"}  # without an interval, "no change" is never shown


def test_a_small_but_significant_shift_is_no_change():
    rng = np.random.default_rng(2)
    rows = compare.compare_windows(windows(rng, count=30, size=500),
                                   windows(rng, scale=1.05, count=30, size=500), n_boot=200)
    assert all(r["p_value"] < 0.002 for r in rows[:1])  # detectable ...
    assert [r["verdict"] for r in rows] == ["no change"] * 3  # ... but under the 10 % factor
    assert all(1 / 1.1 <= r["ci_low"] and r["ci_high"] <= 1.1 for r in rows)  # and shown so


def test_a_shift_the_interval_shows_but_the_test_does_not_is_inconclusive():
    """Issue 12b, as measured on a real certctl: p95 B/A 0.35, interval [0.23, 0.77] and
    Mann-Whitney p 0.16 over 10 windows a side was called "no change". Here windows whose
    level drifts (a shared machine) give B/A 0.34, interval [0.17, 0.90], p 0.08."""
    a, b = run_windows(seed=24, window_sd=0.9), run_windows(seed=25, scale=0.35, window_sd=0.9)
    p95 = compare.compare_windows(a, b)[1]
    assert p95["ratio"] == pytest.approx(0.343, abs=0.001) and p95["ci_high"] < 1 / 1.1
    assert 0.002 < p95["p_value"] < 0.2 and p95["a_windows"] == p95["b_windows"] == 10
    assert p95["verdict"] == "inconclusive"
    assert p95["to_settle"] == ("about 45 windows a side for 80% power to confirm a shift of "
                                "B/A 0.34 at p < 0.002; 5 runs like these a side, or one run "
                                "of 450 s a side")


def test_an_interval_wider_than_the_factor_is_inconclusive_and_says_how_many_runs():
    rng = np.random.default_rng(11)
    a = compare.WindowSet.from_samples([rng.lognormal(np.log(2), 0.5, 200) for _ in range(12)],
                                       run=[0] * 6 + [1] * 6)
    b = compare.WindowSet.from_samples([rng.lognormal(np.log(2), 0.5, 200) for _ in range(12)],
                                       run=[0] * 6 + [1] * 6)
    p99 = compare.compare_windows(a, b, n_boot=400)[2]
    assert p99["unit"] == "runs" and p99["verdict"] == "inconclusive"
    assert p99["ci_low"] < 1 / 1.1 < p99["ratio"] < 1.1  # inside, but the interval is not
    assert p99["to_settle"] == "about 4 runs a side to narrow the interval inside [0.91, 1.10]"
    assert stats.units_for_interval(2, p99["ratio"], p99["ci_low"], p99["ci_high"], 1.1) == 4


def test_power_and_false_positives_between_two_30_s_runs():
    """The suite's synthetic runs (tests/synthetic.py): 30 s at 100 req/s, 10 windows a side.

    Measured: a 30 % shift is called slower in 100, 100 and 99 of 100 pairs (p50, p95, p99); pairs
    from one distribution are never called slower or faster (0 of 200); with intervals, 29 of
    50 such pairs show "no change" in all three rows (129 of 150 rows), the rest say
    "inconclusive", never a change.
    """
    slower = {"p50": 0, "p95": 0, "p99": 0}
    for i in range(100):
        rows = compare.compare_windows(run_windows(seed=2 * i),
                                       run_windows(seed=2 * i + 1, scale=1.3), n_boot=0)
        for r in rows:
            slower[r["stat"]] += r["verdict"] == "slower"
    assert min(slower.values()) >= 95  # power at least 95 %
    claims = 0
    for i in range(200):
        rows = compare.compare_windows(run_windows(seed=1000 + 2 * i),
                                       run_windows(seed=1001 + 2 * i), n_boot=0)
        claims += any(r["verdict"] in ("slower", "faster") for r in rows)
    assert claims <= 2  # false positives at most 1 %
    shown = 0
    for i in range(50):
        rows = compare.compare_windows(run_windows(seed=1000 + 2 * i),
                                       run_windows(seed=1001 + 2 * i), n_boot=200, seed=i)
        assert {r["verdict"] for r in rows} <= {"no change", "inconclusive"}
        shown += {r["verdict"] for r in rows} == {"no change"}
    assert shown >= 25


def test_run_windows_are_the_windows_a_record_keeps():
    fast = run_windows(seed=5)
    kept = compare.WindowSet.from_records([make_record(seed=5)], "heartbeat")
    assert len(fast.windows) == len(kept.windows) == 10
    for (idx_a, counts_a), (idx_b, counts_b) in zip(fast.windows, kept.windows, strict=True):
        np.testing.assert_array_equal(idx_a, idx_b)
        np.testing.assert_array_equal(counts_a, counts_b)


def test_the_windows_it_asks_for_give_the_test_its_power():
    """Noether's count for a 30 % shift under window-to-window drift (sd 0.2 in log), from the
    true effect size, reaches 80 % power in simulation (measured 85 % over 100 pairs)."""
    def p95s(ws):
        values, (counts,) = compare._dense([ws])
        return stats.percentiles_from_counts(counts, values, (95.0,))[:, 0]

    need = stats.units_for_power(p95s(run_windows(seed=99, duration_s=2000, window_sd=0.2)),
                                 p95s(run_windows(seed=98, scale=1.3, duration_s=2000,
                                                  window_sd=0.2)), 0.002)
    assert need == 25
    detected = 0
    for i in range(100):  # runs of 250 s: 25 windows of 10 s a side
        rows = compare.compare_windows(
            run_windows(seed=10_000 + 2 * i, duration_s=10 * need, window_sd=0.2),
            run_windows(seed=10_001 + 2 * i, scale=1.3, duration_s=10 * need, window_sd=0.2),
            n_boot=0)
        detected += rows[1]["verdict"] == "slower"
    assert detected >= 75


def test_too_few_windows_cannot_claim_anything():
    rng = np.random.default_rng(3)
    rows = compare.compare_windows(windows(rng, count=3), windows(rng, scale=2.0, count=3))
    assert {r["verdict"] for r in rows} == {"insufficient data"}
    assert rows[0]["to_settle"].startswith("at least 7 windows a side: with 3 and 3 the test "
                                           "can never reach p < 0.002; 3 runs like these")


def test_repeated_runs_resample_whole_runs():
    rng = np.random.default_rng(4)
    a = compare.WindowSet.from_samples([rng.lognormal(np.log(2), 0.5, 200) for _ in range(12)],
                                       run=[0] * 4 + [1] * 4 + [2] * 4)
    b = compare.WindowSet.from_samples(
        [rng.lognormal(np.log(2.6), 0.5, 200) for _ in range(12)], run=[0] * 6 + [1] * 6)
    rows = compare.compare_windows(a, b, n_boot=200)
    assert {r["unit"] for r in rows} == {"runs"}
    assert rows[0]["verdict"] == "slower" and rows[0]["ci_low"] > 1.0


def test_records_compare_per_endpoint_with_an_all_row():
    tags = ("directory", "new-nonce")
    a = make_record("20261126T120000Z_acme_burst_aaaaaaaa", tags=tags, seed=1, n=6000)
    b = make_record("20261126T130000Z_acme_burst_bbbbbbbb", tags=tags, seed=2, n=6000, scale=1.3)
    result = compare.compare([a], [b])
    assert result.comparable and result.verdict == "slower"
    assert list(result.table["endpoint"].unique()) == ["all", "directory", "new-nonce"]
    assert set(result.table["verdict"]) == {"slower"}
    assert result.table["a_windows"].iloc[0] == 10  # a 60 s run in 6 s windows
    same = compare.compare([a], [make_record("20261126T140000Z_x_cccccccc", tags=tags, seed=3,
                                             n=6000)])
    # 300 requests per endpoint and window cannot pin p99 within 10 %: those rows, and so the
    # comparison, are inconclusive, and say how many windows would settle them
    assert same.verdict == "inconclusive"
    verdicts = same.table.set_index(["endpoint", "stat"])["verdict"]
    assert set(verdicts.drop(["p99"], level="stat")) == {"no change"}
    assert verdicts[("directory", "p99")] == "inconclusive"
    assert "to settle:" in same.text() and "windows a side to narrow" in same.text()
    assert "directory" in result.curves and result.targets.startswith("A stand-in")


def test_different_machines_parameters_or_fixtures_are_not_comparable():
    a = make_record(seed=1)
    other = make_record("20261126T130000Z_agent_storm_bbbbbbbb", seed=2, scale=1.3,
                        machine="arm64-8c-32g-99999999", fingerprint="9999999999999999")
    result = compare.compare([a], [other])
    assert result.verdict == "not comparable" and not result.comparable
    assert "different machines" in result.reasons[0] and result.table.empty
    forced = compare.compare([a], [other], force=True)
    assert forced.forced and forced.verdict == "slower"
    reasons = compare.comparability([a], [make_record(seed=2, fleet_size=5000, rate=50.0)])
    assert any("different parameters (duration_s, fleet_size, rate)" in r for r in reasons)
    assert any("different fixture sizes" in r for r in reasons)


def test_cli_compare_runs_and_baselines(tmp_path):
    a, b = make_record(seed=1), make_record("20261126T130000Z_agent_storm_bbbbbbbb", seed=2,
                                            scale=1.3)
    other = make_record("20261126T140000Z_agent_storm_cccccccc", seed=3,
                        fingerprint="ffffffffffffffff")
    run_dir = tmp_path / "runs" / a["run_id"]
    run_dir.mkdir(parents=True)
    (run_dir / "record.json").write_text(json.dumps(a))
    for rec in (b, other):
        (tmp_path / f"{rec['run_id']}.json").write_text(json.dumps(rec))

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "workbench.cli", "compare", *args],
                              capture_output=True, text=True, timeout=120)

    out = cli(str(run_dir), str(tmp_path / f"{b['run_id']}.json"), "--fail-on-slower")
    assert out.returncode == 99, out.stderr
    assert "verdict    slower" in out.stdout and "heartbeat  p95" in out.stdout
    out = cli(str(run_dir), str(tmp_path / f"{other['run_id']}.json"))
    assert out.returncode == 2 and out.stderr.startswith("error: not comparable: different "
                                                         "machines")
    assert out.stderr.count("\n") == 1 and "--force" in out.stderr
    out = cli(str(run_dir), "--vs", str(tmp_path / "nope"))
    assert out.returncode == 2 and "does not exist" in out.stderr


def test_trend_is_in_commit_order():
    records = [
        make_record("20261201T120000Z_agent_storm_00000003", commit="c" * 40, seed=3,
                    started_at="2026-12-01T12:00:00+00:00", commit_date="2026-11-30T09:00:00Z"),
        make_record("20261125T120000Z_agent_storm_00000001", commit="a" * 40, seed=1,
                    started_at="2026-11-25T12:00:00+00:00", commit_date="2026-11-20T09:00:00Z"),
        make_record("20261202T120000Z_agent_storm_00000004", commit="b" * 40, seed=4,
                    started_at="2026-12-02T12:00:00+00:00", commit_date="2026-11-24T09:00:00Z"),
    ]
    df = compare.trend(records)
    assert df["commit"].tolist() == ["a" * 12, "b" * 12, "c" * 12]
    assert df["position"].tolist() == [0, 1, 2]
    assert (df["p95_lo"] <= df["p95"]).all() and (df["p99"] <= df["p99_hi"]).all()


def test_bad_compare_input_is_refused():
    with pytest.raises(WorkbenchError, match="at least one record"):
        compare.compare([], [make_record()])
    with pytest.raises(WorkbenchError, match="--factor must be above 1"):
        compare.compare([make_record()], [make_record()], factor=0.9)


def test_compare_notebook_runs_and_shows_the_trend(tmp_path):
    import nbformat
    import papermill

    from workbench.paths import notebooks_dir

    baselines = tmp_path / "baselines" / "x86_64-2c-24g-abcd1234" / "agent_storm"
    baselines.mkdir(parents=True)
    paths = []
    for i, (scale, day) in enumerate([(1.0, "25"), (1.0, "26"), (1.3, "27")]):
        rec = make_record(f"202611{day}T120000Z_agent_storm_0000000{i}", seed=i, scale=scale,
                          commit=str(i) * 40, started_at=f"2026-11-{day}T12:00:00+00:00")
        paths.append(baselines / f"{rec['run_id']}.json")
        paths[-1].write_text(json.dumps(rec))
    out = tmp_path / "compare.ipynb"
    papermill.execute_notebook(
        str(notebooks_dir() / "compare.ipynb"), str(out), kernel_name="python3",
        progress_bar=False, parameters={"a": [str(paths[1])], "b": [str(paths[2])],
                                        "baselines": str(tmp_path / "baselines"),
                                        "resamples": 200})
    nb = nbformat.read(out, as_version=4)
    text = json.dumps([c.get("outputs", []) for c in nb.cells])
    assert "slower" in text and text.count("image/png") == 2


def test_compare_notebook_takes_one_path_a_side_from_the_papermill_cli(tmp_path):
    """papermill's ``-p a runs/X`` passes a string, not a list: one path is one record."""
    from workbench.paths import notebooks_dir

    a, b = make_record(seed=1), make_record("20261126T130000Z_agent_storm_bbbbbbbb", seed=2,
                                            scale=1.3)
    run_dir = tmp_path / "runs" / a["run_id"]
    run_dir.mkdir(parents=True)
    (run_dir / "record.json").write_text(json.dumps(a))
    (tmp_path / "b.json").write_text(json.dumps(b))
    out = subprocess.run([sys.executable, "-m", "papermill", str(notebooks_dir() / "compare.ipynb"),
                          str(tmp_path / "out.ipynb"), "-k", "python3", "--no-progress-bar",
                          "-p", "a", str(run_dir), "-p", "b", str(tmp_path / "b.json"),
                          "-p", "baselines", str(tmp_path), "-p", "resamples", "100"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    text = (tmp_path / "out.ipynb").read_text()
    assert "slower" in text and a["run_id"] in text and b["run_id"] in text


def test_runs_over_different_protocols_are_not_comparable_unless_forced():
    a = make_record(seed=1)
    b = make_record("20261126T130000Z_agent_storm_bbbbbbbb", seed=2, scale=1.3) | {
        "protocol": "h2"}
    result = compare.compare([a], [b])
    assert result.verdict == "not comparable"
    assert result.reasons == ["different protocols: h1, h2"]
    assert compare.compare([a], [b], force=True).verdict == "slower"
    imported = b | {"protocol": None}
    assert "different protocols: h1, unknown" in compare.comparability([a], [imported])
