"""Shards: N processes (or Dask workers) merge to exactly the single-process run."""

from __future__ import annotations

import logging
import os

import numpy as np
import pyarrow.parquet as pq
import pytest

from tests.loopback import LoopbackServer
from workbench.analyse import hdr
from workbench.driver import DriveSpec, RequestTemplate, drive, launch
from workbench.errors import WorkbenchError

MIX = (RequestTemplate("GET", "/status/200", "ok"),
       RequestTemplate("GET", "/status/503", "down"),
       RequestTemplate("GET", "/status/429", "limited"),
       RequestTemplate("GET", "/status/204", "ok"))
QUIET = dict(echo=lambda _: None)


def rows_of(run_dir):
    return pq.read_table(run_dir / "requests.parquet").to_pandas().sort_values("intended_ns")


def test_two_shards_merge_to_the_single_process_result(tmp_path):
    with LoopbackServer() as srv:
        spec = DriveSpec(srv.url, MIX, rate=160, duration_s=1.0)
        one = drive(spec, tmp_path / "one", shards=1, **QUIET)
        two = drive(spec, tmp_path / "two", shards=2, **QUIET)
    for key in ("scheduled", "planned", "completed", "failed", "dropped", "errors",
                "response_kinds", "iterations"):
        assert one[key] == two[key], key
    assert {t: v["count"] for t, v in one["by_tag"].items()} == {
        t: v["count"] for t, v in two["by_tag"].items()}
    assert two["driver"]["shards"] == 2 and len({s["pid"] for s in two["shards"]}) == 2
    assert [s["scheduled"] for s in two["shards"]] == [80, 80]
    # the same schedule: identical intended offsets from t0 (each shard anchors its own clock,
    # so allow a few microseconds) and the same endpoint at each of them
    a, b = rows_of(tmp_path / "one"), rows_of(tmp_path / "two")
    offsets_a = a["intended_ns"].to_numpy() - one["t0_epoch_ns"]
    offsets_b = b["intended_ns"].to_numpy() - two["t0_epoch_ns"]
    assert len(a) == len(b) == 160
    assert np.abs(offsets_a - offsets_b).max() < 100_000
    assert (a["tag"].astype(str).to_numpy() == b["tag"].astype(str).to_numpy()).all()
    assert not (tmp_path / "two" / "shard-0").exists()
    # merged histograms hold exactly the recorded requests: added, never averaged
    for tag in ("ok", "down", "limited"):
        for klass, blob in two["histograms"][tag].items():
            recorded = b[(b["tag"] == tag) & (b["status"] // 100 == int(klass[0]))]
            rebuilt = hdr.new()
            hdr.record_array(rebuilt, ((recorded["end_ns"] - recorded["intended_ns"] + 500)
                                       // 1000).to_numpy())
            assert hdr.decode(blob).equals(rebuilt), (tag, klass)


def test_auto_shards_follow_the_rate_and_stop_at_the_cores():
    assert launch.auto_shards(DriveSpec("http://x", MIX, rate=167, duration_s=1)) == 1
    assert launch.auto_shards(DriveSpec("http://x", MIX, executor="constant-vus", vus=500,
                                        duration_s=1)) == 1
    huge = DriveSpec("http://x", MIX, rate=10 * launch.SHARD_CAPACITY_RPS, duration_s=1)
    assert launch.auto_shards(huge) == min(10, os.cpu_count())


def test_dask_local_cluster_runs_the_shards_and_they_merge(tmp_path):
    from distributed import LocalCluster

    secret = "tok-dask-never-written-5521"
    with LoopbackServer() as srv, LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
            scheduler_port=0, silence_logs=logging.ERROR) as cluster:
        spec = DriveSpec(srv.url, (
            RequestTemplate("POST", "/bulk", "bulk", "{}", sum_fields=("total_matched",)),
            RequestTemplate("GET", "/status/200", "ok")), rate=60, duration_s=1.0,
            token_env="DASK_TEST_TOKEN")
        result = drive(spec, tmp_path, cluster=cluster.scheduler_address,
                       env={"DASK_TEST_TOKEN": secret}, **QUIET)
        with pytest.raises(WorkbenchError, match="need 3 Dask workers"):
            drive(spec, tmp_path / "too-many", cluster=cluster.scheduler_address, shards=3,
                  **QUIET)
        assert srv.bulk_headers["Authorization"] == f"Bearer {secret}"
    assert result["driver"]["shards"] == 2 and result["status"] == "completed"
    assert result["scheduled"] == 60 == result["completed"]
    assert {s["pid"] for s in result["shards"]}.isdisjoint({os.getpid()})
    assert result["response_totals"] == {"bulk": {"total_matched": 300}}
    assert len(rows_of(tmp_path)) == 60
    for path in tmp_path.rglob("*"):
        assert path.is_dir() or secret.encode() not in path.read_bytes()


def test_unreachable_cluster_is_refused_with_the_fix(tmp_path, monkeypatch):
    from tests.loopback import free_port

    monkeypatch.setattr(launch, "CLUSTER_CONNECT_TIMEOUT_S", 1.0)
    spec = DriveSpec("http://127.0.0.1:9", MIX, rate=10, duration_s=1.0)
    with pytest.raises(WorkbenchError, match="dask scheduler"):
        drive(spec, tmp_path, cluster=f"tcp://127.0.0.1:{free_port()}", **QUIET)
    with pytest.raises(WorkbenchError, match="tcp://HOST:8786"):
        drive(spec, tmp_path, cluster="127.0.0.1:8786", **QUIET)
