"""bulk_renewal that renews: ids mode sized to the run, and a run of no-op calls said in words."""

import json

from workbench import run, target
from workbench.baseline import load_record
from workbench.cli import print_summary


def test_noop_warnings_name_the_share_skipped_and_the_fix():
    totals = {"total_matched": 1000, "total_enqueued": 50, "total_skipped": 950,
              "total_failed": 0}
    [warning] = run.noop_warnings({"response_totals": {"bulk_renew": totals}})
    assert warning.startswith("bulk_renew: 950 of the 1,000 certificates matched (95%) were "
                              "skipped and 50 enqueued, so this run timed mostly no-op calls")
    at_the_bar = totals | {"total_skipped": 900, "total_enqueued": 100}
    assert run.noop_warnings({"response_totals": {"bulk_renew": at_the_bar}}) == []
    none = {"total_matched": 0, "total_enqueued": 0, "total_skipped": 0, "total_failed": 0}
    assert run.noop_warnings({"response_totals": {"bulk_renew": none}}) == [
        "bulk_renew: no call matched a certificate, so this run timed no-op calls only"]
    assert run.noop_warnings({"response_totals": {"heartbeat": {"total_x": 1}}}) == []


def _totals(run_dir) -> dict:
    return json.loads((run_dir / "result.json").read_text())["response_totals"]["bulk_renew"]


def test_ids_mode_at_smoke_size_enqueues_what_it_matches(embedded_env, embedded_target_state,
                                                         monkeypatch, capsys):
    monkeypatch.setenv("CERTCTL_TOKEN", target.read_token(embedded_target_state))
    run_dir, _ = run.execute("bulk_renewal", "smoke", overrides={"mode": "ids"})
    totals = _totals(run_dir)
    assert totals["total_matched"] == 20 * 50  # 5/s for 4 s, 50 distinct ids per call
    assert totals["total_enqueued"] >= 0.9 * totals["total_matched"]
    record = load_record(run_dir / "record.json")
    assert record["fixtures"]["sizes"] == {"certificates": 1000}
    assert record["fixtures"]["warnings"] == []
    html = (run_dir / "report.html").read_text()
    assert "so this run timed mostly no-op calls" not in html


def test_an_exhausted_fleet_says_so_in_summary_report_and_record(embedded_env,
                                                                 embedded_target_state,
                                                                 monkeypatch, capsys):
    monkeypatch.setenv("CERTCTL_TOKEN", target.read_token(embedded_target_state))
    run_dir, _ = run.execute("bulk_renewal", "smoke", overrides={
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
