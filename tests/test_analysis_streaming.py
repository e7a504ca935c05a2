"""The analysis of a run streamed from ``requests.parquet`` one row group at a time: the same
numbers as the whole frame gives, exact percentiles by rank selection, and memory that does
not grow with the number of requests."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from workbench.analyse import analysis, stats
from workbench.driver import ERROR_CLASSES
from workbench.driver.recorder import PHASE_COLUMNS
from workbench.report import record

T0 = 1_780_000_000 * 10**9
ROW_GROUP = 2_000
THRESHOLDS = {"http_req_duration": ["p(99)<500", "p(95)<3", "avg<10", "med<2", "max<100",
                                    "min>0", "count>10", "p(99.9)<50"],
              "http_req_duration{endpoint:b}": ["p(90)<3"],
              "http_req_service_time": ["p(50)<5"],
              "http_req_failed": ["rate<0.5"], "http_req_server_error": ["rate<0.1"]}


def write_run(run_dir: Path, n: int, seed: int = 0, phases: bool = False,
              grain_ns: int = 1) -> Path:
    """A ``requests.parquet`` of n requests in completion order (as shards and the writer
    leave them: not sorted by intended start), small row groups, three endpoints, every
    status class, errors, drops and ties; times are multiples of ``grain_ns`` after the
    intended start."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    intended = T0 + np.round(np.arange(n) * 1e9 / 2000).astype(np.int64)
    send = intended + rng.integers(0, 100_000, n) // grain_ns * grain_ns
    service = (rng.lognormal(np.log(2e6), 0.6, n) * np.where(rng.random(n) < 0.02, 30, 1)
               ).astype(np.int64) // grain_ns * grain_ns
    service[rng.random(n) < 0.05] = 1_500_000  # ties
    end = send + service
    error = np.zeros(n, np.int8)
    status = rng.choice(np.array([200, 201, 302, 404, 503], np.int16), n,
                        p=[0.8, 0.1, 0.03, 0.04, 0.03])
    error[status == 404], error[status == 503] = (ERROR_CLASSES.index("http_4xx"),
                                                  ERROR_CLASSES.index("http_5xx"))
    transport = rng.random(n) < 0.01
    error[transport], status[transport] = ERROR_CLASSES.index("timeout"), 0
    dropped = rng.random(n) < 0.01
    error[dropped], status[dropped] = ERROR_CLASSES.index("dropped"), 0
    order = np.argsort(np.where(dropped, intended, end), kind="stable")  # completion order
    columns = {
        "intended_ns": pa.array(intended[order]),
        "send_ns": pa.array(send[order], mask=dropped[order]),
        "end_ns": pa.array(end[order], mask=dropped[order]),
        "status": pa.array(status[order]),
        "bytes": pa.array(np.full(n, 120, np.int32)),
        "error": pa.DictionaryArray.from_arrays(pa.array(error[order]),
                                                pa.array(list(ERROR_CLASSES))),
        "tag": pa.DictionaryArray.from_arrays(pa.array((np.arange(n) % 3).astype(np.int16)),
                                              pa.array(["c", "a", "b"])),
    }
    if phases:
        connected = send + rng.integers(50_000, 200_000, n) // grain_ns * grain_ns
        columns |= {PHASE_COLUMNS[0]: pa.array(connected[order], mask=dropped[order]),
                    PHASE_COLUMNS[1]: pa.array((connected + 300_000)[order],
                                               mask=(dropped | transport)[order]),
                    PHASE_COLUMNS[2]: pa.array((end - 10_000)[order],
                                               mask=(dropped | transport)[order])}
    run_dir.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(columns), run_dir / "requests.parquet", row_group_size=ROW_GROUP)
    return run_dir


def everything(requests, window_s: float = 1.0) -> dict:
    """Every number the record, report and exports show, from ``requests``."""
    analysed = analysis.analyse(requests, "synthetic", 2000.0, 10.0, window_s=window_s)
    return {"summary": analysed.summary, "percentiles": analysed.percentiles,
            "load": analysed.load, "errors": analysed.errors, "windows": analysed.windows,
            "phases": analysis.phases(requests),
            "thresholds": analysis.evaluate_thresholds(requests, THRESHOLDS),
            "sections": record.latency_sections(requests, window_s)}


def test_select_ranks_is_exact_for_any_chunking_ties_and_signs(monkeypatch):
    monkeypatch.setattr(stats, "SELECT_GATHER", 4)  # many refining passes, not one gather
    rng = np.random.default_rng(3)
    values = np.concatenate([rng.lognormal(0, 2, 3000), np.full(500, 2.5), -rng.random(200),
                             [0.0, 1e-300, 1e300]])
    groups = rng.integers(0, 4, values.size)
    chunks = np.array_split(np.arange(values.size), 17)
    queries_g, queries_r, expected = [], [], []
    for g in range(4):
        ordered = np.sort(values[groups == g])
        for r in (1, 2, ordered.size // 2, ordered.size - 1, ordered.size):
            queries_g.append(g)
            queries_r.append(r)
            expected.append(ordered[r - 1])
    got = stats.select_ranks(lambda: ((groups[c], values[c]) for c in chunks),
                             np.array(queries_g), np.array(queries_r))
    assert got.tolist() == expected
    same = stats.select_ranks(lambda: iter([(np.zeros(5, np.int64), np.full(5, 7.0))]),
                              np.array([0, 0]), np.array([1, 5]))
    assert same.tolist() == [7.0, 7.0]


@pytest.mark.parametrize("n", [1, 2, 3, 7, 10, 99, 100, 101, 1000, 1001, 12345])
def test_threshold_ranks_are_numpys_inverted_cdf(n):
    values = np.arange(1, n + 1, dtype=float)
    for p in (0.0, 0.1, 1.0, 33.3, 50.0, 90.0, 95.0, 99.0, 99.9, 99.99, 100.0):
        assert analysis.numpy_rank(n, p) == np.percentile(values, p, method="inverted_cdf")


def test_the_streamed_run_gives_every_number_the_whole_frame_gives(tmp_path):
    run_dir = write_run(tmp_path / "run", 30_000, phases=True)
    streamed = analysis.open_requests(run_dir)
    whole = analysis.load_requests(run_dir)
    a, b = everything(streamed), everything(whole)
    for key in ("summary", "percentiles", "load", "errors", "windows", "phases"):
        pd.testing.assert_frame_equal(a[key], b[key], check_exact=True)
    # avg adds chunk by chunk: the same mean, to the last bits of a float
    pd.testing.assert_frame_equal(a["thresholds"], b["thresholds"], check_exact=False,
                                  rtol=1e-12)
    assert a["sections"] == b["sections"]
    assert streamed.largest_chunk == ROW_GROUP  # never more than one row group at a time


def test_streamed_percentiles_are_the_sorted_values_at_their_nearest_ranks(tmp_path):
    run_dir = write_run(tmp_path / "run", 20_000, seed=1)
    whole = analysis.load_requests(run_dir)
    sent = whole[~whole["dropped"]]
    table = analysis.percentiles(analysis.open_requests(run_dir), "synthetic")
    for (_, endpoint, cls), row in table.iterrows():
        mine = sent if endpoint == analysis.ALL else sent[sent["tag"] == endpoint]
        mine = mine if cls == analysis.ALL else mine[mine["status_class"] == cls]
        ordered = np.sort(mine["latency_ms"].to_numpy())
        assert row["count"] == ordered.size and row["max"] == ordered[-1]
        for p in analysis.PERCENTILES:
            rank = int(stats.nearest_rank(ordered.size, p))
            assert row[stats.label(p)] == ordered[rank - 1]
            for bound, r in zip(("_lo", "_hi"), stats.ci_ranks(ordered.size, p), strict=True):
                r = int(r[0])  # 0: not identifiable from this many values
                np.testing.assert_equal(row[stats.label(p) + bound],
                                        ordered[r - 1] if r else np.nan)


def _peak_bytes(run_dir: Path, window_s: float) -> int:
    """The most memory numpy and Python held at once while analysing ``run_dir`` streamed,
    drawing its figures included."""
    import matplotlib.pyplot as plt

    from workbench.report import plots

    def analyse_and_draw() -> None:
        requests = analysis.open_requests(run_dir)
        everything(requests, window_s)
        for draw in (plots.percentile_plot, plots.cdf_plot):
            plt.close(draw(requests, "synthetic", "target", "date"))
        for draw in (plots.latency_over_time, plots.throughput_and_errors):
            plt.close(draw(requests, "synthetic", "target", "date", seconds=window_s))

    analyse_and_draw()  # imports and caches out of the measurement
    tracemalloc.start()
    try:
        analyse_and_draw()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        plt.close("all")


def test_memory_does_not_grow_with_the_number_of_requests(tmp_path, monkeypatch):
    # what stays bounded whatever the number of requests is held small here (the selection's
    # counts, the curves' points, the figure's sample; times on a 0.1 ms grain fill few
    # histogram buckets), so that what would grow with every request shows
    monkeypatch.setattr(stats, "SELECT_DIGIT_BITS", (4, 4))
    monkeypatch.setattr("workbench.report.plots.CURVE_POINTS", 50)
    monkeypatch.setattr("workbench.report.plots.MAX_POINTS", 1000)
    # six times the requests, as many windows: what grows with a run's length (one entry per
    # window) is set aside, so only what is held per request could differ
    small = _peak_bytes(write_run(tmp_path / "small", 10_000, 0, True, 100_000), 0.5)
    large = _peak_bytes(write_run(tmp_path / "large", 60_000, 0, True, 100_000), 3.0)
    # the whole frame held ~100 B per request (5 MB more here); one float each would be 400 kB
    assert large - small < 50_000 * 4, (small, large)


def test_sparse_histograms_match_one_histogram_per_key_and_merge_only_what_a_chunk_touches():
    """Per-window histograms from shuffled chunks encode as one dense histogram per window
    would; a chunk's merge allocates for the windows it touches, not for every window held."""
    from workbench.analyse import hdr

    rng = np.random.default_rng(7)
    keys = np.repeat(np.arange(300), 2_000)
    values = rng.lognormal(np.log(3_000), 1.0, keys.size).astype(np.int64)
    sparse = hdr.SparseHistograms()
    order = rng.permutation(keys.size)
    for part in np.array_split(order, 40):
        sparse.add(keys[part], values[part])
    encoded = sparse.encode()
    for key in (0, 150, 299):
        dense = hdr.new()
        hdr.record_array(dense, values[keys == key])
        assert encoded[key] == hdr.encode(dense)
    assert sorted(encoded) == list(range(300))

    # one more chunk touching a single window: its peak is that window's, not all 300 held
    tracemalloc.start()
    sparse.add(np.full(2_000, 5), values[:2_000])
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    held = sum(b.nbytes + c.nbytes for b, c, _, _ in sparse._keys.values())
    assert peak < held / 4, (peak, held)
