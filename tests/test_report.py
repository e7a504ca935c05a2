"""What a report shows first: the verdict, rounded numbers, no progress log, one live line."""

from __future__ import annotations

import io
import math

import nbformat
import numpy as np
import pandas as pd
import pytest

from workbench.driver.launch import PROGRESS_METADATA, LiveLine, format_progress
from workbench.report import notebook, view


@pytest.mark.parametrize(("value", "shown"), [
    (1234, "1,234"), (1234.0, "1,234"), (np.int64(7), "7"), (41.943446, "41.9"),
    (5.78123, "5.78"), (0.000512, "0.000512"), (123.456, "123"), (float("nan"), "–"),
    (None, "–"), (math.inf, "–"), (True, "yes"), ("text", "text"),
])
def test_numbers_read_as_a_person_reads_them(value, shown):
    assert view.number(value) == shown


def _record(passed: bool = True, valid: bool = True, offered: float | None = 167.0) -> dict:
    return {
        "scenario": "agent_storm", "profile": "smoke", "run_id": "R1",
        "run": {"started_at": "2026-12-03T11:00:00+00:00"},
        "target": {"kind": "certctl", "version": "v2.0.71", "commit": "aad95d3", "url": "u"},
        "load": {"offered_rate": offered, "achieved_rate": 166.93, "duration_s": 300.0,
                 "scheduled": 50100, "completed": 50100, "failed": 0, "dropped": 0,
                 "error_rate": 0.0, "max_vus": 50},
        "endpoints": {"heartbeat": {"requests": 50100, "failed": 0, "error_rate": 0.0,
                                    "p50": 1.834, "p95": 5.78 if passed else 612.4,
                                    "p99": 9.26, "max": 17.7}},
        "thresholds": [
            {"metric": "http_req_duration", "threshold": "p(95)<500",
             "value": 5.78 if passed else 612.4, "ok": passed},
            {"metric": "http_req_failed", "threshold": "rate<0.001", "value": 0.0, "ok": True}],
        "validity": {"valid": valid, "reasons": [] if valid else ["schedule lag p99 3.2 ms"]},
        "passed": passed,
    }


def test_the_verdict_says_passed_valid_target_load_and_endpoint_percentiles_in_colour():
    shown = view.Verdict(_record())._repr_html_()
    assert shown.index("PASSED") < shown.index("heartbeat")
    assert "· " in shown and ">valid<" in shown
    assert "certctl v2.0.71 (commit aad95d3) at u" in shown
    assert "offered 167 req/s, achieved 167 req/s for 300 s; 50,100 scheduled" in shown
    assert f"color:{view.PASS}" in shown and "5.78" in shown and "(&lt; 500)" in shown
    assert "NaN" not in shown and "nan" not in shown


def test_a_breached_invalid_verdict_is_red_and_says_why():
    verdict = view.Verdict(_record(passed=False, valid=False, offered=None))
    shown = verdict._repr_html_()
    assert "BREACHED (1 of 2 thresholds)" in shown
    assert "INVALID: schedule lag p99 3.2 ms" in shown
    assert f'color:{view.FAIL};font-weight:bold">612' in shown  # the breaching percentile
    assert "closed loop, 50 VUs" in shown and "NaN" not in shown
    text = repr(verdict)
    assert text.startswith("BREACHED (1 of 2 thresholds) · INVALID") and "FAIL" in text


def test_tables_round_fold_intervals_and_show_dicts_as_lines():
    frame = pd.DataFrame({"count": [501], "p50": [1.834567], "p50_lo": [1.81], "p50_hi": [1.88],
                          "offered": [np.nan], "driver": [{"engine": "h1", "cpu": 0.123456}]},
                         index=pd.Index(["heartbeat"], name="endpoint"))
    shown = view.frame_html(frame)
    assert "p50_lo" not in shown and "[1.81, 1.88]" in shown and ">1.83<" in shown
    assert ">501<" in shown and "NaN" not in shown and "nan" not in shown
    assert "engine=h1<br>cpu=0.123" in shown and "overflow-x:auto" in shown


def _executed(verdict_output: bool) -> list:
    v4 = nbformat.v4
    progress = v4.new_output("display_data", data={"text/plain": "[driver] 3/300 s sent 9"},
                             metadata={PROGRESS_METADATA: True})
    drive = v4.new_code_cell("run.drive()", id="drive",
                             outputs=[progress, v4.new_output("stream", text="kept\n")])
    verdict = v4.new_code_cell("run.verdict()", id="verdict", outputs=[v4.new_output(
        "display_data", data={"text/html": "<div>PASSED</div>"})] if verdict_output else [])
    return [v4.new_markdown_cell("# Title", id="title"),
            v4.new_code_cell("x = 1", id="parameters"),
            v4.new_markdown_cell("## Drive", id="drive-text"), drive,
            v4.new_markdown_cell("## Figures", id="figures-text"),
            v4.new_code_cell("run.figures()", id="figures"),
            v4.new_markdown_cell("## Verdict", id="verdict-text"), verdict]


def test_the_report_opens_on_the_verdict_then_figures_without_the_progress_line():
    cells = notebook.report_cells(_executed(verdict_output=True))
    assert [c.id for c in cells] == ["title", "verdict-text", "verdict", "figures-text",
                                     "figures", "parameters", "drive-text", "drive"]
    assert [o.output_type for o in cells[-1].outputs] == ["stream"]  # progress left out


def test_a_notebook_that_stopped_before_its_verdict_opens_on_saying_so():
    cells = notebook.report_cells(_executed(verdict_output=False))
    assert cells[0].id == "title" and "No verdict" in cells[1].source
    assert "verdict" not in [c.get("id") for c in cells]


LINES = [format_progress(t, 300.0, 167 * t, 167.0, 0, 0, 5.78) for t in (1, 2, 3)]


def test_the_progress_line_says_elapsed_done_eta_rate_and_errors():
    assert LINES[2] == ("[driver] 3/300 s (1%, ETA 297 s)  sent 501  rate 167.0/s  errors 0  "
                        "dropped 0  p95 so far 5.78 ms")


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_on_a_terminal_progress_rewrites_one_line():
    out = _Tty()
    live = LiveLine(stream=out, notebook=False)
    for line in LINES:
        live(line)
    live("[driver] a shard said something")  # passes through, on its own line
    live.close()
    text = out.getvalue()
    assert text.count("\r") == 3 and text.count("\n") == 2
    assert text.endswith("[driver] a shard said something\n")


def test_without_a_terminal_progress_is_a_line_every_n_seconds_and_the_last_one():
    out = io.StringIO()
    live = LiveLine(stream=out, every_s=3600, notebook=False)
    for line in LINES:
        live(line)
    live.close()
    assert out.getvalue().splitlines() == [LINES[0], LINES[2]]


def test_in_a_notebook_progress_is_one_display_updated_in_place(monkeypatch):
    import IPython.display

    shown = []

    class Handle:
        def update(self, data, **kw):
            shown.append(("update", data["text/plain"], kw["metadata"]))

    def display(data, **kw):
        shown.append(("display", data["text/plain"], kw["metadata"]))
        return Handle()

    monkeypatch.setattr(IPython.display, "display", display)
    monkeypatch.delenv("WORKBENCH_PROGRESS", raising=False)
    live = LiveLine(notebook=True)
    for line in LINES:
        live(line)
    live.close()
    assert [kind for kind, _, _ in shown] == ["display", "update", "update"]
    assert shown[-1][1] == LINES[2] and all(m == {PROGRESS_METADATA: True} for *_, m in shown)


def test_the_combined_report_opens_on_its_verdict_one_row_per_scenario_and_endpoint(tmp_path):
    from workbench.run import suite

    rows = [
        {"scenario": "agent_storm", "endpoint": "heartbeat", "requests": 501.0, "failed": 0.0,
         "dropped": 0.0, "error_rate": 0.0, "achieved_rps": 167.0, "p50": 1.834567,
         "p95": 5.78123, "p99": 9.2612, "max": 17.7, "passed": True, "valid": True,
         "exit_code": 0, "notes": "", "run_dir": str(tmp_path / "R1_agent_storm")},
        {"scenario": "acme_flow", "endpoint": "-", "passed": False, "valid": False,
         "exit_code": 1, "notes": "no requests recorded", "run_dir": str(tmp_path / "R2")},
    ]
    summary = pd.DataFrame(rows, columns=list(suite.COLUMNS))
    identity = {"url": "https://127.0.0.1:8080", "kind": "certctl", "version": "v2.0.71",
                "commit": "aad95d3", "warnings": []}
    suite.write_report(tmp_path, summary, identity, "smoke")
    shown = (tmp_path / "report.html").read_text()
    assert shown.index("FAILED (1 of 2 scenarios): acme_flow") < shown.index("<table")
    assert "INVALID: acme_flow" in shown and "certctl v2.0.71 (commit aad95d3)" in shown
    assert ">501<" in shown and ">1.83<" in shown and ">167<" in shown and ">0<" in shown
    assert "501.0" not in shown and "NaN" not in shown and "nan" not in shown
    assert 'href="../R1_agent_storm/report.html"' in shown
