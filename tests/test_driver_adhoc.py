"""``workbench drive``: ad-hoc load on any URL, end to end through the command line."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time

import pyarrow.parquet as pq
import pytest

from tests.loopback import LoopbackServer

RESULT_KEYS = {"scheduled", "completed", "failed", "dropped", "offered_rate", "achieved_rate",
               "latency_ms", "service_time_ms", "schedule_lag_ms", "valid"}
COLUMNS = {"intended_ns", "send_ns", "end_ns", "status", "error", "tag"}


def workbench(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "workbench.cli", *args], capture_output=True,
                          text=True, timeout=timeout)


def test_adhoc_drive_sends_the_request_and_writes_the_documented_files(tmp_path):
    with LoopbackServer() as srv:
        out = workbench("drive", f"{srv.url}/bulk", "--method", "post", "--body", '{"a": 1}',
                        "--header", "X-Trace: adhoc-7", "--rate", "40", "--duration", "1",
                        "--vus", "40", "--out", str(tmp_path / "adhoc"))  # a VU each: no drop
        assert out.returncode == 0, out.stderr
        assert srv.bulk_headers["X-Trace"] == "adhoc-7"
        assert srv.bulk_bodies[0] == b'{"a": 1}' and len(srv.bulk_bodies) == 40
    assert "40 scheduled = 40 completed + 0 failed + 0 dropped" in out.stdout
    result = json.loads((tmp_path / "adhoc" / "result.json").read_text())
    assert RESULT_KEYS <= set(result)
    assert {"p50", "p95", "p99", "max"} <= set(result["latency_ms"])
    assert {"p50", "p99"} <= set(result["service_time_ms"]) & set(result["schedule_lag_ms"])
    assert result["offered_rate"] == 40 and result["driver"]["max_vus"] == 40
    table = pq.read_table(tmp_path / "adhoc" / "requests.parquet")
    assert COLUMNS <= set(table.column_names) and table.num_rows == 40
    assert set(table.column("status").to_pylist()) == {200}


def test_adhoc_drive_with_shards_prints_progress_and_merges(tmp_path):
    with LoopbackServer() as srv:
        out = workbench("drive", f"{srv.url}/status/200", "--rate", "100", "--duration", "2.5",
                        "--shards", "2", "--out", str(tmp_path / "run"))
    assert out.returncode == 0, out.stderr
    progress = [line for line in out.stderr.splitlines() if line.startswith("[driver]")]
    assert progress and "p95 so far" in progress[0] and "rate" in progress[0]
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert result["driver"]["shards"] == 2 and result["scheduled"] == 250
    assert pq.read_table(tmp_path / "run" / "requests.parquet").num_rows == 250


def test_adhoc_bad_input_is_one_line_before_any_load(tmp_path):
    for args, needle in ((["--header", "no-colon"], "write NAME:VALUE"),
                         (["--ca-file", str(tmp_path / "none.pem")], "--ca-file"),
                         (["--cluster", "localhost:8786"], "tcp://HOST:PORT")):
        out = workbench("drive", "http://127.0.0.1:9/", "--rate", "5", "--duration", "1",
                        "--out", str(tmp_path / "x"), *args)
        assert out.returncode == 2 and needle in out.stderr, out.stderr
        assert out.stderr.startswith("error: ") and out.stderr.count("\n") == 1
        assert not (tmp_path / "x" / "requests.parquet").exists()
    out = workbench("drive", "http://127.0.0.1:9/", "--rate", "5", "--duration", "1",
                    "--shards", "0")
    assert out.returncode == 2 and "--shards" in out.stderr


def test_interrupted_sharded_run_flushes_readable_parquet_and_says_so(tmp_path):
    with LoopbackServer() as srv:
        proc = subprocess.Popen(
            [sys.executable, "-m", "workbench.cli", "drive", f"{srv.url}/delay?ms=2", "--rate",
             "200", "--duration", "60", "--shards", "2", "--out", str(tmp_path / "run")],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 30
        for line in proc.stderr:  # wait for the first progress line: load is flowing
            if line.startswith("[driver]") or time.monotonic() > deadline:
                break
        proc.send_signal(signal.SIGINT)
        stdout, _ = proc.communicate(timeout=30)
    assert proc.returncode == 130
    assert "interrupted" in stdout
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert result["status"] == "interrupted" and not result["valid"]
    assert 200 <= result["scheduled"] < 60 * 200
    assert result["scheduled"] == result["completed"] + result["failed"] + result["dropped"]
    table = pq.read_table(tmp_path / "run" / "requests.parquet")
    assert table.num_rows == result["scheduled"]


def _one_error_line(out):
    assert out.returncode == 2, out.stderr
    assert out.stderr.startswith("error: ") and out.stderr.count("\n") == 1, out.stderr
    assert "Traceback" not in out.stderr


def test_drive_out_onto_an_existing_file_is_one_line_and_the_file_is_kept(tmp_path):
    existing = tmp_path / "notes.txt"
    existing.write_text("mine\n")
    out = workbench("drive", "http://127.0.0.1:9/", "--rate", "5", "--duration", "1",
                    "--out", str(existing))
    _one_error_line(out)
    assert "is a file" in out.stderr and existing.read_text() == "mine\n"


def test_drive_out_into_an_existing_run_folder_is_refused_and_the_run_kept(tmp_path):
    run = tmp_path / "run"
    with LoopbackServer() as srv:
        first = workbench("drive", f"{srv.url}/status/200", "--rate", "5", "--duration", "1",
                          "--out", str(run))
        assert first.returncode == 0, first.stderr
        before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
        again = workbench("drive", f"{srv.url}/status/200", "--rate", "5", "--duration", "1",
                          "--out", str(run))
    _one_error_line(again)
    assert "already holds files" in again.stderr
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before


@pytest.mark.parametrize("headers", [[], ["--header", "Content-Type: application/json"],
                                     ["--header", "Content-Type: application/problem+json"]])
def test_drive_refuses_a_body_that_is_not_json_when_sent_as_json(tmp_path, headers):
    with LoopbackServer() as srv:
        out = workbench("drive", f"{srv.url}/bulk", "--method", "post", "--body", "{bad",
                        *headers, "--rate", "5", "--duration", "1", "--out", str(tmp_path / "r"))
        assert srv.bulk_bodies == []  # nothing sent
    _one_error_line(out)
    assert "body is not JSON" in out.stderr
    assert not (tmp_path / "r").exists()


def test_drive_sends_a_non_json_body_with_its_own_content_type(tmp_path):
    with LoopbackServer() as srv:
        out = workbench("drive", f"{srv.url}/bulk", "--method", "post", "--body", "{bad",
                        "--header", "Content-Type: text/plain", "--rate", "5", "--duration", "1",
                        "--vus", "5", "--out", str(tmp_path / "r"))
        assert out.returncode == 0, out.stderr
        assert srv.bulk_bodies and set(srv.bulk_bodies) == {b"{bad"}


def test_adhoc_drive_writes_a_record_a_report_and_exports_and_two_of_them_compare(tmp_path):
    runs = [tmp_path / "a", tmp_path / "b"]
    with LoopbackServer() as srv:
        for run in runs:
            out = workbench("drive", f"{srv.url}/delay?ms=2&secret=s3cr3t", "--header",
                            "Authorization: Bearer s3cr3t", "--rate", "50", "--duration", "2",
                            "--threshold", "p(95)<5000",
                            "--threshold", "http_req_failed rate<0.01", "--out", str(run))
            assert out.returncode == 0, out.stderr
    record = json.loads((runs[0] / "record.json").read_text())
    assert record["scenario"] == "adhoc" and record["schema_version"] == 3
    cal = record["calibration"]  # the machine, read before and after the drive
    assert cal["measured"] and cal["figures"]["cpu_ms"] > 0 and cal["figures"]["loopback_ms"] > 0
    assert cal["before"]["postgres"] == {"error": "no database: the run has no DSN"}
    assert cal["after"]["loopback"]["errors"] == 0
    assert record["target"]["kind"] == "unknown"  # a loopback server, not certctl
    assert record["parameters"]["path"] == "/delay" and record["parameters"]["rate"] == 50
    assert record["parameters"]["headers"] == ["authorization"]
    assert [t["ok"] for t in record["thresholds"]] == [True, True] and record["passed"]
    assert record["load"]["scheduled"] == 100 and record["validity"]["valid"] is not None
    html = (runs[0] / "report.html").read_text()
    assert html.index("PASSED (2 thresholds)") < html.index("<img") < html.index("Details")
    assert html.count('src="data:image/png;base64,') == 4  # every figure, drawn beside the record
    assert "Machine calibration: cpu " in html
    text = re.sub(r'src="data:[^"]*"', "", html)  # base64 figures may spell anything
    assert "NaN" not in text and "[driver]" not in text
    junit = (runs[0] / "junit.xml").read_text()
    assert junit.count("<testcase") == 2 and "<failure" not in junit
    assert (runs[0] / "latency.hgrm").exists() and (runs[0] / "latency.hlog").exists()
    # what this step writes holds no header value or query (spec.json is the driver's own)
    for name in ("record.json", "report.html", "junit.xml", "latency.hgrm", "latency.hlog"):
        assert b"s3cr3t" not in (runs[0] / name).read_bytes(), name
    assert f"record: {runs[0] / 'record.json'}" in out.stdout or "record:" in out.stdout
    # whether the machine drifted between the two is calibration's own test, not this one's
    compared = workbench("compare", str(runs[0]), str(runs[1]), "--calibration-tolerance", "1")
    assert compared.returncode == 0, compared.stderr
    assert "schema version" not in compared.stderr and "adhoc" in compared.stdout


def test_a_breached_adhoc_threshold_exits_99_with_the_record_kept(tmp_path):
    with LoopbackServer() as srv:
        out = workbench("drive", f"{srv.url}/delay?ms=5", "--rate", "20", "--duration", "1",
                        "--threshold", "http_req_duration p(95)<0.001",
                        "--out", str(tmp_path / "run"))
    assert out.returncode == 99, out.stderr
    record = json.loads((tmp_path / "run" / "record.json").read_text())
    assert record["passed"] is False
    assert "BREACHED (1 of 1 threshold)" in (tmp_path / "run" / "report.html").read_text()
    assert "<failure" in (tmp_path / "run" / "junit.xml").read_text()


def test_a_bad_adhoc_threshold_is_refused_before_any_load(tmp_path):
    out = workbench("drive", "http://127.0.0.1:9/", "--rate", "5", "--duration", "1",
                    "--threshold", "p95<1", "--out", str(tmp_path / "x"))
    assert out.returncode == 2 and out.stderr.startswith("error: ")
    assert not (tmp_path / "x" / "requests.parquet").exists()


HOSTILE_VERSION = ("v1 $\\frac{1}{$ [click](https://evil.example) ![i](https://evil.example/i.png)"
                   " <img src=https://evil.example/h.png> ``` `x` \x1b]0;pwned\x07\x1b[2J\x00"
                   "\r\nsecond line \u202eright-to-left")


def test_a_hostile_version_string_reaches_no_output_raw(tmp_path):
    """What the target says it is lands in the terminal, junit.xml, the step summary and the
    figures' titles: none of them may run it (escape sequences, Markdown, mathtext)."""
    import os
    import xml.etree.ElementTree as ET

    import mistune

    summary = tmp_path / "summary.md"
    with LoopbackServer() as srv:
        srv.version = HOSTILE_VERSION
        out = subprocess.run(
            [sys.executable, "-m", "workbench.cli", "drive", f"{srv.url}/status/200", "--rate",
             "20", "--duration", "1", "--out", str(tmp_path / "run")], capture_output=True,
            text=True, timeout=300, env={**os.environ, "GITHUB_STEP_SUMMARY": str(summary)})
    assert out.returncode == 0, out.stderr
    for control in ("\x1b", "\x07", "\x00", "\u202e"):
        assert control not in out.stdout + out.stderr
    assert "v1 $\\frac{1}{$" in out.stdout  # shown, escaped where it must be
    assert (tmp_path / "run" / "report.html").stat().st_size > 0  # the figures were drawn
    props = {p.get("name"): p.get("value") for p in ET.parse(
        tmp_path / "run" / "junit.xml").getroot().iter("property")}
    assert props["target_version"].startswith("v1 $\\frac{1}{$ [click]")
    html = mistune.create_markdown(escape=False, plugins=["table", "url"])(summary.read_text())
    assert "<a " not in html and "<img" not in html
    assert "[click](https://evil.example)" in html
