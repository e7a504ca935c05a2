import numpy as np
import pandas as pd
import pytest

from workbench import analysis
from workbench.errors import WorkbenchError


def frame(latencies_ms, errors=None, tag="hb"):
    n = len(latencies_ms)
    intended = np.arange(n, dtype=np.int64) * 10_000_000
    end = intended + (np.asarray(latencies_ms) * 1e6).astype(np.int64)
    return analysis.with_derived(pd.DataFrame({
        "intended_ns": intended, "send_ns": intended, "end_ns": end,
        "status": np.full(n, 200), "bytes": np.full(n, 30),
        "error": errors if errors is not None else [""] * n, "tag": [tag] * n}))


def test_parse_k6_thresholds_with_tag_selector():
    parsed = analysis.parse_thresholds({"http_req_duration{endpoint:heartbeat}": ["p(99.9)<=5"],
                                        "http_req_failed": "rate<0.01"})
    assert [(t.agg, t.q, t.op, t.limit, t.tag) for t in parsed] == [
        ("p", 99.9, "<=", 5.0, "heartbeat"), ("rate", None, "<", 0.01, None)]


@pytest.mark.parametrize("spec", [
    {"http_req_duration": ["p95<500"]}, {"http_req_duration": ["p(95)<<500"]},
    {"http_req_duration": ["p(95)<fast"]}, {"http_latency": ["p(95)<500"]},
    {"http_req_duration{scenario:x}": ["p(95)<500"]}, ["p(95)<500"]])
def test_malformed_thresholds_are_refused_with_the_offending_text(spec):
    with pytest.raises(WorkbenchError, match="threshold|metric|mapping"):
        analysis.parse_thresholds(spec)


def test_thresholds_pass_and_fail_on_known_values():
    df = frame(list(range(1, 101)), errors=[""] * 99 + ["http_5xx"])
    verdicts = analysis.evaluate_thresholds(df, {
        "http_req_duration": ["p(95)<96", "p(99)<99", "max<=100"],
        "http_req_failed": ["rate<0.02", "rate<0.005"]})
    assert verdicts["value"].tolist() == [95, 99, 100, 0.01, 0.01]
    assert verdicts["ok"].tolist() == [True, False, True, True, False]
    with pytest.raises(analysis.ThresholdBreach, match="rate<0.005"):
        analysis.assert_thresholds(verdicts)


def test_a_threshold_on_an_endpoint_with_no_samples_fails():
    verdicts = analysis.evaluate_thresholds(frame([1, 2, 3]),
                                            {"http_req_duration{endpoint:nope}": ["p(95)<500"]})
    assert not verdicts["ok"].any()


def test_summary_excludes_dropped_and_counts_rate():
    df = frame([5.0] * 8 + [0, 0], errors=[""] * 8 + ["dropped", "dropped"])
    summary = analysis.summarize(df, duration_s=2.0)
    assert list(summary.index) == ["hb"]  # no redundant "all" row for a single endpoint
    row = summary.loc["hb"]
    assert row["requests"] == 8 and row["dropped"] == 2 and row["achieved_rps"] == 4.0
    assert row["p50"] == pytest.approx(5.0) and row["error_rate"] == 0.0
