import numpy as np
import pandas as pd
import pytest

from workbench.analyse import analysis
from workbench.driver import DriveSpec, RequestTemplate
from workbench.driver.result import validity_checks
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


def mixed_frame():
    """Two endpoints, every status class, drops, at 10 requests per second for 10 s."""
    n = 100
    latency = np.arange(1, n + 1, dtype=float)  # 1 .. 100 ms
    status = np.array([200] * 70 + [404] * 10 + [503] * 10 + [0] * 5 + [0] * 5)
    errors = [""] * 70 + ["http_4xx"] * 10 + ["http_5xx"] * 10 + ["timeout"] * 5 + ["dropped"] * 5
    tags = np.where(np.arange(n) % 2 == 0, "directory", "new-nonce")
    df = frame(latency, errors=errors)
    df["status"] = status
    df["tag"] = tags
    return analysis.with_derived(df[["intended_ns", "send_ns", "end_ns", "status", "bytes",
                                     "error", "tag"]])


def test_percentiles_per_endpoint_and_status_class_with_intervals():
    df = frame(np.arange(1, 1001, dtype=float))  # 1 .. 1000 ms, one endpoint
    table = analysis.percentiles(df, "agent_storm")
    assert list(table.index) == [("agent_storm", "hb", "all"), ("agent_storm", "hb", "2xx")]
    row = table.loc[("agent_storm", "hb", "all")]
    assert row["count"] == 1000 and row["max"] == 1000
    assert [row["p50"], row["p99"], row["p99.9"]] == [500, 990, 999]
    lo, hi = analysis.stats.ci_ranks(1000, 50)
    assert (row["p50_lo"], row["p50_hi"]) == (lo[0], hi[0])  # value of rank k is k ms here
    assert np.isnan(row["p99.9_hi"])  # 1000 samples cannot bound p99.9 from above


def test_status_classes_and_the_all_rows():
    table = analysis.percentiles(mixed_frame(), "acme_burst")
    counts = table["count"].droplevel("scenario")
    assert counts[("all", "all")] == 95  # dropped arrivals were never sent
    assert {c: counts[("all", c)] for c in ("2xx", "4xx", "5xx", "error")} == {
        "2xx": 70, "4xx": 10, "5xx": 10, "error": 5}
    assert counts[("directory", "all")] + counts[("new-nonce", "all")] == 95
    assert table.loc[("acme_burst", "all", "4xx"), "max"] == 80


def test_load_errors_windows_and_validity():
    df = mixed_frame()
    load = analysis.load(df, offered_rate=10.0, duration_s=10.0)
    assert load.loc["all", "offered_rps"] == 10.0 and load.loc["all", "achieved_rps"] == 9.5
    assert load.loc["directory", "offered_rps"] == 5.0 and load.loc["all", "failed"] == 25
    errors = analysis.errors(df)
    assert errors.loc["all", ["http_4xx", "http_5xx", "timeout", "dropped"]].tolist() == [
        10, 10, 5, 5]
    assert errors.loc["all", "error_rate"] == pytest.approx(25 / 95)
    w = analysis.windows(df, seconds=0.5)  # 50 requests per window
    assert w["requests"].tolist() == [50, 45] and w["dropped"].tolist() == [0, 5]
    assert w.loc[0.0, "p50"] == 25 and w.loc[0.0, "max"] == 50
    by_ep = analysis.windows(df, seconds=0.5, by_endpoint=True)
    assert by_ep.loc[("directory", 0.0), "requests"] == 25


def judged(dropped: int = 0, lag_p99_ms: float = 0.1) -> dict:
    """The validity part of a driver result for an open loop of 100/s, judged by the driver's
    own check function."""
    spec = DriveSpec("http://x", (RequestTemplate("GET", "/", "hb"),), rate=100.0,
                     duration_s=1.0)
    checks, reasons = validity_checks(spec, "completed", dropped, lag_p99_ms, achieved=100.0,
                                      offered=100.0, cpu=0.2, spin=False)
    return {"checks": checks, "valid": not reasons, "invalid_reasons": reasons}


def test_analyse_bundles_everything_and_shows_the_drivers_validity():
    df = frame(np.full(100, 2.0))
    result = analysis.analyse(df, "agent_storm", offered_rate=100.0, duration_s=1.0,
                              reported=judged())
    assert result.valid is True and result.invalid_reasons == []
    assert list(result.validity["check"]) == [c["check"] for c in judged()["checks"]]
    assert result.window_s == pytest.approx(0.1)  # a tenth of a short run
    assert len(result.windows) == 10
    late = analysis.analyse(df, "agent_storm", 100.0, 1.0, reported=judged(lag_p99_ms=5.0))
    assert late.valid is False
    assert late.invalid_reasons == ["schedule-lag p99 (ms): 5.0 (limit 2.0)"]


def test_a_frame_without_a_driver_result_is_not_judged():
    result = analysis.analyse(frame(np.full(20, 2.0)), "imported", 20.0, 1.0)
    assert result.valid is None and result.invalid_reasons == []
    assert result.validity.to_dict("records") == [
        {"check": "validity", "measured": analysis.NOT_JUDGED, "limit": None, "ok": None}]


def test_load_requests_keeps_nanoseconds_exact(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    t0 = 1_780_000_000_123_456_789  # an epoch in ns: a float64 would round it
    table = pa.table({
        "intended_ns": pa.array([t0, t0 + 1000]),
        "send_ns": pa.array([t0 + 7, None], type=pa.int64()),
        "end_ns": pa.array([t0 + 1_234_567, None], type=pa.int64()),
        "status": pa.array(np.array([200, 0], np.int16)),
        "bytes": pa.array(np.array([10, 0], np.int32)),
        "error": pa.DictionaryArray.from_arrays(pa.array(np.array([0, 1], np.int8)),
                                                pa.array(["", "dropped"])),
        "tag": pa.DictionaryArray.from_arrays(pa.array(np.array([0, 0], np.int16)),
                                              pa.array(["hb"])),
    })
    pq.write_table(table, tmp_path / "requests.parquet")
    df = analysis.load_requests(tmp_path)
    assert df["latency_ms"].iloc[0] == 1.234567 and df["lag_ms"].iloc[0] == 0.000007
    assert df["dropped"].tolist() == [False, True] and np.isnan(df["latency_ms"].iloc[1])


@pytest.fixture()
def close_figures():
    import matplotlib.pyplot as plt

    yield
    plt.close("all")


def test_a_target_named_with_dollars_draws_its_titles_as_written(close_figures):
    import io

    from workbench.report import plots

    target = "certctl v1$\\frac{1}{$ $x$ @ https://127.0.0.1:1"
    fig = plots.percentile_plot(mixed_frame(), "acme_burst", target, "2026-11-26 12:00 UTC")
    fig.savefig(io.BytesIO(), format="png")  # mathtext would fail here, or draw a fraction
    assert target in fig.axes[0].get_title()


def test_every_figure_is_titled_with_scenario_target_and_date(close_figures):
    from tests.synthetic import make_record, requests_frame
    from workbench.compare import runs
    from workbench.report import plots

    df = mixed_frame()
    args = ("acme_burst", "stand-in standin-0.1 @ https://127.0.0.1:1", "2026-11-26 12:00 UTC")
    figures = [plots.percentile_plot(df, *args), plots.cdf_plot(df, *args),
               plots.latency_over_time(df, *args),
               plots.throughput_and_errors(df, *args, offered_rate=10.0),
               plots.percentile_plot(requests_frame(np.array([]), 10.0), *args)]
    a, b = make_record(seed=1), make_record("20261126T130000Z_agent_storm_bbbbbbbb", seed=2)
    comparison = runs.compare([a], [b])
    figures.append(plots.compare_percentiles(comparison))
    figures.append(plots.trend_plot(runs.trend([a, b]), "agent_storm"))
    for fig in figures:
        title = fig.axes[0].get_title()
        assert fig.axes[0].get_title() and "\n" in title
        scenario, rest = title.split(": ", 1)
        assert scenario in ("acme_burst", "agent_storm") and " · " in rest.splitlines()[1]
    assert "2026-11-26 12:00 UTC" in figures[0].axes[0].get_title()
    assert "stand-in" in figures[-2].axes[0].get_title()
    assert "2026-11-26" in figures[-1].axes[0].get_title()
    errors = figures[3].axes[1].get_legend()
    assert {t.get_text() for t in errors.get_texts()} == {"http_4xx", "http_5xx", "timeout",
                                                         "dropped"}


def test_a_closed_loop_run_offers_no_rate():
    df = frame(np.full(50, 3.0))
    result = analysis.analyse(df, "acme_flow", offered_rate=None, duration_s=1.0)
    assert np.isnan(result.load.loc["hb", "offered_rps"])
    assert result.load.loc["hb", "achieved_rps"] == 50.0
