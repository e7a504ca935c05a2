"""bulk_renewal that renews: ids mode sized to the run, and a run of no-op calls said in words."""

import dataclasses
import json
import threading

import matplotlib.pyplot as plt
import pytest
import sqlalchemy as sa

from workbench.cli import print_summary
from workbench.compare.baseline import load_record
from workbench.run import launcher
from workbench.run.scenario import Run
from workbench.scenarios import bulk_renewal
from workbench.target import embedded


def test_noop_warnings_name_the_share_skipped_and_the_fix():
    totals = {"total_matched": 1000, "total_enqueued": 50, "total_skipped": 950,
              "total_failed": 0}
    [warning] = bulk_renewal.noop_warnings({"response_totals": {"bulk_renew": totals}})
    assert warning.startswith("bulk_renew: 950 of the 1,000 certificates matched (95%) were "
                              "skipped and 50 enqueued, so this run timed mostly no-op calls")
    at_the_bar = totals | {"total_skipped": 900, "total_enqueued": 100}
    assert bulk_renewal.noop_warnings({"response_totals": {"bulk_renew": at_the_bar}}) == []
    none = {"total_matched": 0, "total_enqueued": 0, "total_skipped": 0, "total_failed": 0}
    assert bulk_renewal.noop_warnings({"response_totals": {"bulk_renew": none}}) == [
        "bulk_renew: no call matched a certificate, so this run timed no-op calls only"]
    assert bulk_renewal.noop_warnings({"response_totals": {"heartbeat": {"total_x": 1}}}) == []


def _totals(run_dir) -> dict:
    return json.loads((run_dir / "result.json").read_text())["response_totals"]["bulk_renew"]


def test_ids_mode_at_smoke_size_enqueues_what_it_matches(embedded_env, embedded_target_state,
                                                         monkeypatch, capsys):
    monkeypatch.setenv("CERTCTL_TOKEN", embedded.read_token(embedded_target_state))
    run_dir, _ = launcher.execute("bulk_renewal", "smoke", overrides={"mode": "ids"})
    totals = _totals(run_dir)
    assert totals["total_matched"] == 20 * 50  # 5/s for 4 s, 50 distinct ids per call
    assert totals["total_enqueued"] >= 0.9 * totals["total_matched"]
    record = load_record(run_dir / "record.json")
    assert record["fixtures"]["sizes"] == {"certificates": 1000}
    assert record["fixtures"]["warnings"] == []
    html = (run_dir / "report.html").read_text()
    assert "so this run timed mostly no-op calls" not in html
    drain = record["telemetry"]["drain"]
    assert drain["enqueued"] == totals["total_enqueued"] and drain["waited"] is False
    assert drain["meaning"].startswith("the stand-in has no job processor: nothing will drain")
    assert "the stand-in has no job processor" in html


def test_an_exhausted_fleet_says_so_in_summary_report_and_record(embedded_env,
                                                                 embedded_target_state,
                                                                 monkeypatch, capsys):
    monkeypatch.setenv("CERTCTL_TOKEN", embedded.read_token(embedded_target_state))
    run_dir, _ = launcher.execute("bulk_renewal", "smoke", overrides={
             "mode": "ids", "size_to_run": False, "bulk_size": 50, "duration_s": 10.0})
    totals = _totals(run_dir)
    # 50 calls re-send the same 50 ids: only calls that overlap the first renewal enqueue
    assert totals["total_matched"] == 50 * 50
    assert totals["total_skipped"] > 0.9 * totals["total_matched"]
    record = load_record(run_dir / "record.json")
    [warning] = record["fixtures"]["warnings"]
    assert "so this run timed mostly no-op calls" in warning
    assert "so this run timed mostly no-op calls" in (run_dir / "report.html").read_text()
    capsys.readouterr()
    print_summary(run_dir)
    assert f"  warning: {warning}" in capsys.readouterr().out.splitlines()


def test_the_drain_plan_says_what_each_keygen_mode_measures():
    wait, meaning = bulk_renewal.drain_plan("stand-in", {"AwaitingCSR": 0, "Pending": 900})
    assert not wait and meaning.startswith("the stand-in has no job processor: nothing will "
                                           "drain (900 Pending/Running")
    wait, meaning = bulk_renewal.drain_plan("certctl", {"AwaitingCSR": 1000, "Pending": 0})
    assert not wait and meaning.startswith("agent keygen mode: 1000 jobs are AwaitingCSR")
    wait, meaning = bulk_renewal.drain_plan("certctl", {"Pending": 40, "Running": 3,
                                                        "AwaitingCSR": 0})
    assert wait and meaning.startswith("server keygen mode: certctl's job processor issues")
    assert bulk_renewal.drain_plan("certctl", {}) == (
        False, "no Pending or Running job of the fixture: nothing to drain")


def _pending(dsn: str) -> None:
    """The fixture's jobs as certctl's server keygen mode creates them."""
    engine = sa.create_engine(dsn)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE jobs SET status = 'Pending'"
                             " WHERE certificate_id LIKE 'mc-loadtest-bulk-%'"))
    engine.dispose()


def _certctl_like(r: Run) -> None:
    """The embedded database seen as a real certctl's (whose processor the test plays)."""
    r.target = dataclasses.replace(r.target, embedded=False, started=None)


def test_a_backlog_that_never_drains_stops_at_the_timeout_and_says_so(
        embedded_env, embedded_target_state, monkeypatch, tmp_path):
    monkeypatch.setenv("CERTCTL_TOKEN", embedded.read_token(embedded_target_state))
    r = Run("bulk_renewal", {"mode": "ids", "duration_s": 1.0}, run_dir=tmp_path / "r")
    r.seed()
    r.drive()
    assert r.drain["waited"] is False and "no job processor" in r.drain["meaning"]
    _certctl_like(r)  # the stand-in's jobs are AwaitingCSR (agent keygen): never waited for
    assert r.drain_backlog(2.0)["meaning"].startswith("agent keygen mode: ")
    _pending(embedded_env.dsn)  # server keygen, and no processor works them off
    drain = r.drain_backlog(2.0)
    assert drain["waited"] and drain["drained"] is False
    assert drain["backlog_at_start"] == drain["backlog_at_end"] > 0
    assert drain["drained_per_s"] == 0.0
    assert drain["curve"]["t_s"][0] == 0.0 and len(drain["curve"]["backlog"]) >= 2


def test_a_backlog_a_processor_works_off_drains_with_its_rate(embedded_env, tmp_path,
                                                              embedded_target_state,
                                                              monkeypatch):
    monkeypatch.setenv("CERTCTL_TOKEN", embedded.read_token(embedded_target_state))
    r = Run("bulk_renewal", {"mode": "ids", "duration_s": 1.0, "drain_timeout_s": 0},
                run_dir=tmp_path / "r")
    r.seed()
    r.drive()
    assert r.drain is None  # drain_timeout_s 0: no drain
    _pending(embedded_env.dsn)
    engine = sa.create_engine(embedded_env.dsn)
    stop = threading.Event()

    def processor():  # 25 jobs a tick, as certctl's default CERTCTL_RENEWAL_CONCURRENCY
        while not stop.wait(0.5):
            with engine.begin() as conn:
                left = conn.execute(sa.text(
                    "UPDATE jobs SET status = 'Completed' WHERE id IN (SELECT id FROM jobs"
                    " WHERE status = 'Pending' AND certificate_id LIKE 'mc-loadtest-bulk-%'"
                    " LIMIT 25)")).rowcount
            if not left:
                return

    worker = threading.Thread(target=processor)
    _certctl_like(r)
    worker.start()
    try:
        r.drain = r.drain_backlog(120.0)
    finally:
        stop.set()
        worker.join()
        engine.dispose()
    drain = r.drain
    assert drain["waited"] and drain["drained"] is True and drain["backlog_at_end"] == 0
    assert drain["backlog_at_start"] > 0 and drain["drained_per_s"] > 0
    assert drain["drained_per_s"] == pytest.approx(
        drain["backlog_at_start"] / drain["seconds"], rel=1e-3)
    assert drain["curve"]["backlog"][-1] == 0
    figures = r.figures()
    titles = [f.axes[0].get_title() for f in figures]
    plt.close("all")
    assert any(t.startswith("bulk_renewal: backlog drain") for t in titles)
    r.record()
    assert r.baseline["telemetry"]["drain"]["drained"] is True
