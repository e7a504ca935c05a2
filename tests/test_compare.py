"""Comparison: asv's rule on per-window percentiles, bootstrap intervals, comparability, trend."""

import json
import subprocess
import sys

import numpy as np
import pytest

from tests.synthetic import make_record
from workbench import compare
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


def test_no_change_false_positive_rate_is_below_one_percent():
    rng = np.random.default_rng(1)
    trials, false_positives = 300, 0
    for _ in range(trials):
        rows = compare.compare_windows(windows(rng, count=12, size=100),
                                       windows(rng, count=12, size=100), n_boot=0)
        false_positives += any(r["verdict"] != "no change" for r in rows)
    assert false_positives / trials < 0.01


def test_a_small_but_significant_shift_is_no_change():
    rng = np.random.default_rng(2)
    rows = compare.compare_windows(windows(rng, count=30, size=500),
                                   windows(rng, scale=1.05, count=30, size=500), n_boot=0)
    assert all(r["p_value"] < 0.002 for r in rows[:1])  # detectable ...
    assert [r["verdict"] for r in rows] == ["no change"] * 3  # ... but under the 10 % factor


def test_too_few_windows_cannot_claim_anything():
    rng = np.random.default_rng(3)
    rows = compare.compare_windows(windows(rng, count=3), windows(rng, scale=2.0, count=3))
    assert {r["verdict"] for r in rows} == {"insufficient data"}


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
    assert same.verdict == "no change"
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
    assert out.returncode == 1, out.stderr
    assert "verdict    slower" in out.stdout and "heartbeat  p95" in out.stdout
    out = cli(str(run_dir), str(tmp_path / f"{other['run_id']}.json"))
    assert out.returncode == 2 and out.stderr.startswith("error: not comparable: different "
                                                         "machines")
    assert out.stderr.count("\n") == 1 and "--force" in out.stderr
    out = cli(str(run_dir), "--vs", str(tmp_path / "nope"))
    assert out.returncode == 2 and "neither a run folder nor a baseline" in out.stderr


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
