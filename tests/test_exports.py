"""CI-native and HdrHistogram-native exports, read back by the parsers their users run:
xml.etree for JUnit, hdrh's HistogramLogReader for .hlog, raw samples for .hgrm."""

from __future__ import annotations

import io
import math
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from hdrh.log import HistogramLogReader

from tests.synthetic import T0, make_record, requests_frame
from workbench.analyse import analysis, hdr, stats
from workbench.report import exports

TOKEN = "tok-3f9a1c-distinctive"
PASSWORD = "pw-7Qz-distinctive"


@pytest.fixture()
def run():
    """A two-endpoint synthetic run, its record and threshold verdicts (one pass, two fail)."""
    tags = ("directory", "new-nonce")
    record = make_record("20261126T120000Z_acme_burst_aaaaaaaa", tags=tags, seed=4, n=6000)
    df = requests_frame(np.random.default_rng(4).lognormal(np.log(2.0), 0.4, 6000), 100.0, tags)
    verdicts = analysis.evaluate_thresholds(df, {
        "http_req_duration": ["p(95)<500", "p(99)<1"],
        "http_req_duration{endpoint:missing}": ["p(95)<500"]})
    record["thresholds"] = [dict(r) for r in verdicts.to_dict("records")]
    record["target"]["dsn"] = f"postgresql+psycopg://loadtest:{PASSWORD}@db.internal/certctl"
    return record, df, verdicts


def test_junit_has_one_testcase_per_threshold_and_failures_with_the_measured_value(run,
                                                                                  tmp_path):
    record, _, verdicts = run
    path = exports.write_junit(tmp_path, record, verdicts)
    assert path.name == "junit.xml"
    root = ET.parse(path).getroot()
    assert root.tag == "testsuites"
    assert (root.get("tests"), root.get("failures"), root.get("errors")) == ("3", "2", "0")
    (suite,) = root.findall("testsuite")
    assert suite.get("name") == "agent_storm" and suite.get("timestamp") == "2026-11-26T12:00:00"
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors"),
            suite.get("skipped")) == ("3", "2", "0", "0")
    assert float(suite.get("time")) == 60.0
    props = {p.get("name"): p.get("value") for p in suite.find("properties")}
    assert props["run_id"] == record["run_id"] and props["valid"] == "True"
    cases = suite.findall("testcase")
    assert [c.get("name") for c in cases] == [
        "http_req_duration p(95)<500", "http_req_duration p(99)<1",
        "http_req_duration{endpoint:missing} p(95)<500"]
    assert {c.get("classname") for c in cases} == {"agent_storm"}
    assert all(float(c.get("time")) == 0 for c in cases)
    assert list(cases[0]) == []  # a pass has no child
    failure = cases[1].find("failure")
    measured = float(failure.get("message").split()[1].rstrip(","))
    assert measured == pytest.approx(verdicts["value"][1], rel=1e-5) and measured > 1
    assert failure.get("message").endswith("threshold p(99)<1") and failure.get("type")
    assert cases[2].find("failure").get("message") == ("measured nothing (no samples), "
                                                       "threshold p(95)<500")
    assert PASSWORD not in path.read_text()


def test_junit_defaults_to_the_records_own_thresholds(tmp_path):
    record = make_record(passed=False)
    root = ET.fromstring(exports.junit_xml(record))
    assert root.get("failures") == "1" and root.find("testsuite/testcase/failure") is not None


def test_step_summary_appends_a_table_only_in_ci_and_never_a_secret(run, tmp_path, monkeypatch):
    record, _, verdicts = run
    summary = tmp_path / "summary.md"
    summary.write_text("earlier step\n")
    assert exports.github_step_summary(record, verdicts, environ={}) is None
    monkeypatch.setenv("CERTCTL_TOKEN", TOKEN)
    env = {"GITHUB_STEP_SUMMARY": str(summary), "CERTCTL_TOKEN": TOKEN}
    assert exports.github_step_summary(record, verdicts, environ=env) == summary
    text = summary.read_text()
    assert text.startswith("earlier step\n### certctl workbench: agent_storm (smoke)")
    assert "**FAILED**" in text and "Measured against the workbench's stand-in" in text
    assert "| `http_req_duration p(99)<1` |" in text and "| **FAIL** |" in text
    rows = [ln for ln in text.splitlines() if ln.startswith("| directory ")]
    assert len(rows) == 1 and rows[0].count("|") == 8  # a Markdown row of 7 cells
    for secret in (TOKEN, PASSWORD, "db.internal", record["target"]["url"]):
        assert secret not in text


def _raw_us(seed: int = 9) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.lognormal(np.log(2000), 0.6, 20_000),
                           rng.uniform(50_000, 400_000, 40)]).astype(np.int64)


def _parse_hgrm(text: str):
    rows, footer = [], {}
    for line in text.splitlines():
        if line.startswith("#["):
            for part in line[2:-1].split(","):
                key, value = part.split("=")
                footer[key.strip()] = float(value)
        elif line.strip() and not line.lstrip().startswith("Value"):
            rows.append(line.split())
    return rows, footer


def test_hgrm_is_hdrhistograms_percentile_distribution_checked_against_raw_samples(tmp_path):
    raw = _raw_us()
    hist = hdr.new()
    hdr.record_array(hist, raw)
    path = exports.write_hgrm(tmp_path / "latency.hgrm", hist)
    text = path.read_text()
    assert text.startswith("       Value     Percentile TotalCount 1/(1-Percentile)\n\n")
    rows, footer = _parse_hgrm(text)
    # the plotters' reading: four numeric columns on every line but the last (100 %)
    assert all(len(r) == 4 for r in rows[:-1]) and len(rows[-1]) == 3
    assert [r[1] for r in rows[:12]] == [f"{p:.12f}" for p in (
        0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.775)]  # HdrHistogram's ticks
    raw_sorted = np.sort(raw)
    for r in rows:
        value_us, level, count = round(float(r[0]) * 1000), float(r[1]), int(r[2])
        # exact: the value is its bucket's top, so the raw samples at or below it are the count
        assert count == np.searchsorted(raw_sorted, value_us, side="right")
        assert count / raw.size >= level - 1e-12
        truth = raw_sorted[max(math.ceil(level * raw.size - 1e-9), 1) - 1]  # nearest rank
        assert truth <= value_us <= truth * 1.001 + 1  # within HdrHistogram's 3 digits
        if len(r) == 4:
            assert float(r[3]) == pytest.approx(1 / (1 - level), abs=0.006)
    assert rows[-1][1] == "1.000000000000" and int(rows[-1][2]) == raw.size
    assert footer["Total count"] == raw.size
    assert footer["Mean"] == pytest.approx(raw.mean() / 1000, rel=1e-3)
    assert footer["StdDeviation"] == pytest.approx(raw.std() / 1000, rel=1e-3)
    assert raw.max() / 1000 <= footer["Max"] <= raw.max() * 1.001 / 1000
    assert (footer["Buckets"], footer["SubBuckets"]) == (hist.bucket_count, 2048)


# The Percentile column of Java HdrHistogram's outputPercentileDistribution for 10,000 values,
# from a published run; the levels depend only on the iterator, never on the values.
JAVA_LEVELS = """
0.000000000000 0.100000000000 0.200000000000 0.300000000000 0.400000000000 0.500000000000
0.550000000000 0.600000000000 0.650000000000 0.700000000000 0.750000000000 0.775000000000
0.800000000000 0.825000000000 0.850000000000 0.875000000000 0.887500000000 0.900000000000
0.912500000000 0.925000000000 0.937500000000 0.943750000000 0.950000000000 0.956250000000
0.962500000000 0.968750000000 0.971875000000 0.975000000000 0.978125000000 0.981250000000
0.984375000000 0.985937500000 0.987500000000 0.989062500000 0.990625000000 0.992187500000
0.992968750000 0.993750000000 0.994531250000 0.995312500000 0.996093750000 0.996484375000
0.996875000000 0.997265625000 0.997656250000 0.998046875000 0.998242187500 0.998437500000
0.998632812500 0.998828125000 0.999023437500 0.999121093750 0.999218750000 0.999316406250
0.999414062500 0.999511718750 0.999560546875 0.999609375000 0.999658203125 0.999707031250
0.999755859375 0.999780273438 0.999804687500 0.999829101563 0.999853515625 0.999877929688
0.999890136719 0.999902343750 1.000000000000""".split()


def test_hgrm_steps_through_percentiles_as_java_hdrhistogram_does():
    """hdrh's own output_percentile_distribution does not (it drops Java's integer rounding of
    the halvings), so the workbench writes the format itself; here against Java's output."""
    hist = hdr.new()
    hdr.record_array(hist, (1000 * 1.0011 ** np.arange(10_000)).astype(np.int64))
    assert stats.bucket_counts(hist)[0].size == 10_000  # one value per bucket: every level shows
    rows, _ = _parse_hgrm(exports.hgrm_text(hist))
    assert [r[1] for r in rows] == JAVA_LEVELS
    theirs = io.BytesIO()
    hist.output_percentile_distribution(theirs, 1000.0)
    assert theirs.getvalue().split(b"\n")[4].split()[1] != b"0.300000000000"  # hdrh's drift


def test_hlog_reads_back_with_hdrhistograms_log_reader(run, tmp_path):
    record, df, _ = run
    start = exports.start_epoch_s(record, df)
    assert start == T0 / 1e9
    path = exports.write_hlog(tmp_path / "latency.hlog", record, start)
    lines = path.read_text().splitlines()
    assert lines[1] == "#[Histogram log format version 1.3]"
    assert lines[2].startswith(f"#[StartTime: {start:.3f} (seconds since epoch), ")
    assert lines[4] == ('"StartTimestamp","Interval_Length","Interval_Max",'
                        '"Interval_Compressed_Histogram"')
    reader = HistogramLogReader(str(path), hdr.new())
    read = []
    while (hist := reader.get_next_interval_histogram()) is not None:
        read.append(hist)
    assert reader.get_start_time_sec() == pytest.approx(start)
    untagged = [h for h in read if h.get_tag() is None]
    windows = record["windows"]["by_endpoint"]
    assert len(untagged) == 10 and len(read) == 30  # 10 windows, and each of 2 endpoints
    for i, h in enumerate(untagged):
        assert h.get_start_time_stamp() == pytest.approx((start + 6.0 * i) * 1000, abs=1)
        assert h.get_end_time_stamp() - h.get_start_time_stamp() == pytest.approx(6000, abs=1)
        assert h.get_total_count() == sum(w[i]["requests"] for w in windows.values())
    for tag in ("directory", "new-nonce"):
        mine = [h for h in read if h.get_tag() == tag]
        assert [h.get_total_count() for h in mine] == [w["requests"] for w in windows[tag]]
    total = hdr.new()
    for h in untagged:
        total.add(h)
    whole = exports.endpoint_histograms(record)["all"]
    for got, want in zip(stats.bucket_counts(total), stats.bucket_counts(whole), strict=True):
        np.testing.assert_array_equal(got, want)
    maxes = [float(ln.split(",")[2]) for ln in lines[5:] if not ln.startswith("Tag=")]
    assert maxes == [h.get_max_value() / 1000 for h in untagged]


def test_write_all_writes_every_export_of_a_run(run, tmp_path):
    record, df, verdicts = run
    summary = tmp_path / "summary.md"
    written = exports.write_all(tmp_path, record, df, verdicts,
                                environ={"GITHUB_STEP_SUMMARY": str(summary)})
    assert [p.name for p in written] == ["junit.xml", "latency.hgrm", "latency.directory.hgrm",
                                         "latency.new-nonce.hgrm", "latency.hlog", "summary.md"]
    for p in written:
        text = p.read_text()
        assert TOKEN not in text and PASSWORD not in text
    single = tmp_path / "single"
    single.mkdir()
    names = [p.name for p in exports.write_all(single, make_record(), environ={})]
    assert names == ["junit.xml", "latency.hgrm", "latency.hlog"]


HOSTILE = ("v1 [click](https://evil.example) ![i](https://evil.example/i.png) <img src=x> "
           "``` `x` | \x1b[2J\x00\x07 \u202e")


def test_junit_stays_parseable_whatever_the_target_calls_itself(run):
    record, _, verdicts = run
    record["target"]["version"] = record["target"]["commit"] = HOSTILE
    root = ET.fromstring(exports.junit_xml(record, verdicts))
    props = {p.get("name"): p.get("value") for p in root.iter("property")}
    assert props["target_version"].startswith("v1 [click]") and "\\x1b[2J" in props[
        "target_version"]


def test_the_step_summary_shows_the_targets_version_literally(run):
    import mistune

    record, _, verdicts = run
    record["target"]["version"] = record["target"]["commit"] = HOSTILE
    text = exports.step_summary_markdown(record, verdicts)
    html = mistune.create_markdown(escape=False, plugins=["table", "url"])(text)
    assert "<a " not in html and "<img" not in html and "\x1b" not in text
    assert "[click](https://evil.example)" in html
