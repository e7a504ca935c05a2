"""``workbench ab``'s rounds, stopping rule and outputs on synthetic runs (the run is faked: no
socket, no target), the placement of a started target's processes, and bad input refused in
one line before anything is built or started. The same command on real builds of a tiny Go
server: tests/test_ab_certctl.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from workbench import argtypes, cli
from workbench.compare import ab
from workbench.errors import WorkbenchError
from workbench.report import calibration
from workbench.target import embedded, preflight


def url_side(name: str) -> ab.Side:
    url = f"https://127.0.0.1:{9 + ord(name)}"
    return ab.Side(name, url, preflight.Target(url=url, ca_file=None, insecure=False,
                                               embedded=False))


def fake_record(run_id: str, p50: float, valid: bool = True,
                endpoints: tuple[str, ...] = ("all",)) -> dict:
    return {"run_id": run_id,
            "validity": {"valid": valid, "reasons": [] if valid else ["schedule lag"]},
            "endpoints": {e: {"p50": p50, "p95": 2 * p50, "p99": 3 * p50} for e in endpoints},
            "calibration": calibration.missing("synthetic")}


class FakeRuns:
    """Stands in for :func:`workbench.compare.ab.measure`: each side's p50 drawn around its level
    (lognormal, seeded), every call noted."""

    def __init__(self, a_ms: float, b_ms: float, sd: float = 0.03, seed: int = 7,
                 fail_at: str | None = None, error: BaseException | None = None) -> None:
        self.level = {"A": a_ms, "B": b_ms}
        self.rng = np.random.default_rng(seed)
        self.sd, self.fail_at, self.error = sd, fail_at, error
        self.calls: list[tuple[str, str, float]] = []

    def __call__(self, load, side, run_dir: Path, duration_s: float, echo=None) -> dict:
        label = run_dir.name.split("_")[0]
        self.calls.append((side.name, label, duration_s))
        if label == self.fail_at:
            raise self.error or WorkbenchError("B: certctl exited during the run")
        run_dir.mkdir(parents=True)
        value = self.level[side.name] * float(np.exp(self.rng.normal(0, self.sd)))
        return fake_record(run_dir.name, value)


LOAD = ab.Load(scenario="agent_storm")


def compare(tmp_path, monkeypatch, runs: FakeRuns, **options) -> tuple[dict, Path]:
    monkeypatch.setattr(ab, "measure", runs)
    out = tmp_path / "ab"
    settings = ab.Options(**({"round_s": 1.0, "warmup_s": 0.5, "max_rounds": 6} | options))
    return ab.compare_sides(LOAD, [url_side("A"), url_side("B")], settings, out,
                            echo=lambda line: None), out


def test_a_large_regression_is_settled_slower_at_the_first_look(tmp_path, monkeypatch):
    runs = FakeRuns(1.0, 2.0, sd=0.01)
    doc, out = compare(tmp_path, monkeypatch, runs)
    assert (doc["verdict"], doc["stopped"], len(doc["rounds"])) == ("slower", "settled", 3)
    assert doc["verdict_text"].startswith("B is slower than A after 3 rounds: all p50 B/A 2.0")
    # warm-ups first, then ABBA order, and each run as long as asked
    assert [(side, label) for side, label, _ in runs.calls] == [
        ("A", "warmupA"), ("B", "warmupB"), ("A", "01A"), ("B", "01B"), ("B", "02B"),
        ("A", "02A"), ("A", "03A"), ("B", "03B")]
    assert [s for _, _, s in runs.calls] == [0.5, 0.5] + [1.0] * 6
    assert [r["order"] for r in doc["rounds"]] == ["AB", "BA", "AB"]
    assert json.loads((out / ab.AB_FILE).read_text()) == doc
    rows = {(r["endpoint"], r["stat"]): r for r in doc["rows"]}
    assert set(rows) == {("all", s) for s in ab.STATS}
    assert all(r["pairs"] == 3 and r["looks"] == 4 for r in rows.values())
    html = (out / ab.REPORT_FILE).read_text()
    assert html.index("B is slower than A") < html.index("<img")  # opens on the verdict
    assert (out / ab.FIGURE_FILE).stat().st_size > 0


def test_one_build_twice_never_says_slower_or_faster_and_says_what_would_settle(
        tmp_path, monkeypatch):
    for seed in range(5):
        doc, _ = compare(tmp_path / str(seed), monkeypatch, FakeRuns(1.0, 1.0, sd=0.2,
                                                                     seed=seed), max_rounds=4)
        assert doc["verdict"] in ("no change", "inconclusive", "insufficient data")
        if doc["verdict"] == "inconclusive":
            assert doc["stopped"] == "max rounds" and len(doc["rounds"]) == 4
            assert all(r["to_settle"] for r in doc["rows"] if r["verdict"] == "inconclusive")
            assert "--max-rounds" in ab.text(doc)


def test_no_change_is_settled_early_when_every_interval_fits_inside_the_factor(
        tmp_path, monkeypatch):
    doc, _ = compare(tmp_path, monkeypatch, FakeRuns(1.0, 1.0, sd=0.005))
    assert (doc["verdict"], doc["stopped"]) == ("no change", "settled")
    assert doc["verdict_text"].startswith(f"no change after {len(doc['rounds'])} rounds")


def test_the_budget_stops_before_a_round_that_would_end_past_it(tmp_path, monkeypatch):
    class Clock:  # ten seconds a run, whatever the machine does
        def __init__(self) -> None:
            self.now = 0.0

        def monotonic(self) -> float:
            return self.now

    clock, runs = Clock(), FakeRuns(1.0, 1.0)

    def timed(*args, **kw):
        clock.now += 10.0
        return runs(*args, **kw)

    monkeypatch.setattr(ab, "time", clock)
    doc, _ = compare(tmp_path, monkeypatch, timed, warmup_s=0, budget_s=45.0)
    # round 1 ends at 20 s, round 2 at 40 s; round 3 would end at 60 s > 45 s
    assert (doc["stopped"], len(doc["rounds"]), doc["verdict"]) == ("budget", 2,
                                                                    "insufficient data")
    assert all(r["to_settle"] == "at least 3 rounds (pairs): 2 ran" for r in doc["rows"])


def test_an_interrupted_comparison_keeps_the_rounds_it_measured(tmp_path, monkeypatch):
    runs = FakeRuns(1.0, 1.0, fail_at="02A", error=KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        compare(tmp_path, monkeypatch, runs)
    doc = json.loads((tmp_path / "ab" / ab.AB_FILE).read_text())
    assert (doc["stopped"], len(doc["rounds"])) == ("interrupted", 1)
    assert (tmp_path / "ab" / ab.REPORT_FILE).exists()


def test_a_run_that_fails_ends_the_comparison_with_its_error(tmp_path, monkeypatch):
    with pytest.raises(WorkbenchError, match="certctl exited"):
        compare(tmp_path, monkeypatch, FakeRuns(1.0, 1.0, fail_at="03B"))
    doc = json.loads((tmp_path / "ab" / ab.AB_FILE).read_text())
    assert (doc["stopped"], len(doc["rounds"])) == ("failed", 2)
    assert doc["error"] == "B: certctl exited during the run"
    assert "Error: B: certctl exited" in (tmp_path / "ab" / ab.REPORT_FILE).read_text()


def test_rows_are_the_endpoints_every_run_measured():
    rounds = [{"round": k, "order": "AB",
               "A": ab.run_values(fake_record(f"a{k}", 1.0, endpoints=("x", "y"))),
               "B": ab.run_values(fake_record(f"b{k}", 1.0, endpoints=("x",) if k == 2
                                              else ("x", "y")))} for k in (1, 2, 3)]
    rows = ab.judge_rounds(rounds, ab.Options())
    assert {r["endpoint"] for r in rows} == {"x"}
    only = ab.judge_rounds(rounds, ab.Options(judged=("p50",)))  # --judge p50
    assert [(r["endpoint"], r["stat"]) for r in only] == [("x", "p50")]


def test_a_url_side_is_left_where_it_runs(tmp_path):
    before = os.sched_getaffinity(0)
    with ab.placed([url_side("A"), url_side("B")]) as facts:
        assert os.sched_getaffinity(0) == before and facts["target_cores"] == []
        assert "a URL target runs where it is" in facts["notes"][0]


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="placement needs two cores")
def test_a_started_target_runs_off_the_driver_core_and_both_are_restored(tmp_path):
    """Every thread of the target's process moves to the other cores; this process (whose
    affinity the driver processes inherit) keeps to the first; both are put back after."""
    server = subprocess.Popen([sys.executable, "-c", "import threading, time; threading."
                               "Thread(target=time.sleep, args=(60,)).start(); time.sleep(60)"])
    try:
        threads = []
        while len(threads) < 2:  # the second thread has started
            threads = ab._threads(server.pid)
        info = embedded.TargetInfo(url="https://127.0.0.1:1", host="127.0.0.1", port=1,
                                 ca_file="", dsn="", pid=server.pid,
                                 pg_pgdata=str(tmp_path / "no-pg"), kind="certctl",
                                 name="ab_a")
        side = ab.Side("A", "certctl:x", preflight.started_target(info), instance="ab_a")
        allowed = sorted(os.sched_getaffinity(0))
        original = {t: os.sched_getaffinity(t) for t in threads}
        with ab.placed([side]) as facts:
            core = facts["driver_core"]
            others = [c for c in allowed if c != core]
            assert core in allowed and facts["target_cores"] == others
            assert os.sched_getaffinity(0) == {core}
            assert all(os.sched_getaffinity(t) == set(others) for t in threads)
            assert facts["placed"] == [f"certctl A (pid {server.pid})"]
            seen = []
            worker = threading.Thread(target=lambda: seen.append(os.sched_getaffinity(0)))
            worker.start()
            worker.join()
            assert seen == [{core}]  # what the driver's processes and threads inherit
        assert os.sched_getaffinity(0) == set(allowed)
        assert {t: os.sched_getaffinity(t) for t in threads} == original
    finally:
        server.kill()
        server.wait()


# --- bad input: one line, exit 2, before anything is built or started --------------------------


@pytest.mark.parametrize("text, seconds", [("30", 30.0), ("250ms", 0.25), ("5m", 300.0),
                                           ("1h30m", 5400.0), ("1.5s", 1.5), ("0", 0.0)])
def test_durations_take_units(text, seconds):
    assert argtypes.duration(zero=True)(text) == seconds


@pytest.mark.parametrize("argv", [
    ["history", "agent_storm", "--certctl-src", "/src", "v1..v2", "--duration", "5s"],
    ["history", "agent_storm", "v1..v2", "--certctl-src", "/src", "--duration", "5s"],
])
def test_history_takes_its_range_before_or_after_the_options(argv):
    args = cli._parse(cli.build_parser(), argv)
    assert (args.what, args.rev_range, args.certctl_src, args.duration) == (
        "agent_storm", "v1..v2", "/src", 5.0)


def test_an_argument_history_does_not_take_is_still_refused(capsys):
    with pytest.raises(SystemExit):
        cli._parse(cli.build_parser(), ["history", "agent_storm", "a..b", "c..d"])
    assert "unrecognized arguments: c..d" in capsys.readouterr().err


def test_a_second_comparison_cannot_take_the_instances_of_a_running_one(tmp_path):
    with ab.holding(["ab_a", "ab_b"], tmp_path):
        with pytest.raises(WorkbenchError, match="instance ab_a of .* is in use by another "
                                                 "workbench ab or history"):
            with ab.holding(["ab_a"], tmp_path):
                pass
        with ab.holding(["history"], tmp_path):  # another instance: free
            pass
    with ab.holding(["ab_a"], tmp_path):  # given back
        pass
