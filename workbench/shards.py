"""Scaling the driver out: N shards of one schedule, on local processes or a Dask cluster.

Arrival i of the global schedule goes to shard ``i mod N`` (k6's striped execution segments),
VUs are split the same way, and every shard starts at one UTC instant, so the union of the
shards is exactly the single-process schedule. Each shard measures with its own monotonic
clock (latency needs no clock sync across hosts). Merging adds HDR histograms and counters
(percentiles are never averaged) and concatenates the shards' Parquet row groups.

On Dask distributed (``--cluster tcp://HOST:8786``) the same shard function,
:func:`workbench.driver.process.run_shard`, runs inside the workers, one shard per worker, and
returns its report and its Parquet bytes. The API token travels as a task argument over the
Dask connection (use Dask's TLS on a network you do not trust); it is never written to a file.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pyarrow.parquet as pq

from workbench.driver.process import RESULT_FILE, SHARD_FILE, _write_json
from workbench.driver.spec import DriveSpec
from workbench.driver.summary import iso, summarize
from workbench.errors import WorkbenchError

# Open-loop requests/s to give one driver process: it holds 2,000/s with schedule-lag p99 well
# under 1 ms, and open loop costs about 65 us of CPU per request at 10,000/s on the
# development machine (benchmarks/run.py), so 5,000/s keeps a process near a third of a core.
SHARD_CAPACITY_RPS = 5000.0
CLUSTER_START_MARGIN_NS = 3_000_000_000  # Dask: time for every worker to start its shard
CLUSTER_CONNECT_TIMEOUT_S = 10.0


def auto_shards(spec: DriveSpec) -> int:
    """Processes for a spec: enough for its peak request rate, at most one per core."""
    if not spec.open_loop:
        return 1
    need = math.ceil(spec.peak_rate * spec.steps / SHARD_CAPACITY_RPS)
    return max(1, min(os.cpu_count() or 1, need))


def merge_shard_dirs(spec: DriveSpec, out_dir: Path, shard_dirs: list[Path],
                     exit_codes: list[int | None] | None = None) -> dict:
    """Merge shard folders (``shard.json`` + ``requests.parquet``) into ``out_dir``.

    Writes ``out_dir/requests.parquet`` (the shards' row groups, concatenated) and
    ``out_dir/result.json``; removes the shard folders. Refuses when a shard left no report.
    """
    reports = []
    for k, d in enumerate(shard_dirs):
        if not (d / SHARD_FILE).exists() or not (d / "requests.parquet").exists():
            code = exit_codes[k] if exit_codes else None
            raise WorkbenchError(f"driver shard {k} exited with code {code} and wrote no "
                                 f"result in {d}; see the lines above")
        reports.append(json.loads((d / SHARD_FILE).read_text()))
    concat_parquet([d / "requests.parquet" for d in shard_dirs], out_dir / "requests.parquet")
    result = summarize(spec, reports,
                       started_at=min(r["started_at"] for r in reports),
                       ended_at=max(r["ended_at"] for r in reports))
    _write_json(out_dir / RESULT_FILE, result)
    for d in shard_dirs:
        shutil.rmtree(d, ignore_errors=True)
    return result


def concat_parquet(parts: list[Path], dest: Path) -> None:
    """Append every row group of ``parts`` to ``dest``, one group in memory at a time."""
    tmp = dest.with_name(dest.name + ".tmp")
    writer = None
    try:
        for part in parts:
            pf = pq.ParquetFile(part)
            if writer is None:
                writer = pq.ParquetWriter(tmp, pf.schema_arrow)
            for i in range(pf.num_row_groups):
                writer.write_table(pf.read_row_group(i))
    finally:
        if writer is not None:
            writer.close()
    tmp.replace(dest)


def shard_task(spec_json: str, shard: int, shards: int, start_epoch_ns: int,
               token: str) -> tuple[dict, bytes]:
    """Run one shard where this function is called (a Dask worker); return report + Parquet."""
    from workbench.driver.process import run_shard

    spec = DriveSpec.from_json(spec_json)
    started_at = iso(time.time_ns())
    with tempfile.TemporaryDirectory(prefix="workbench-shard-") as tmp:
        report = run_shard(spec, Path(tmp), shard, shards, start_epoch_ns=start_epoch_ns,
                           token=token, handle_signals=False)
        data = (Path(tmp) / "requests.parquet").read_bytes()
    return report | {"started_at": started_at, "ended_at": iso(time.time_ns())}, data


def drive_on_cluster(spec: DriveSpec, out_dir: Path, address: str, shards: int | None = None,
                     env: dict[str, str] | None = None,
                     echo: Callable[[str], None] = print) -> dict:
    """Run the shards on the Dask scheduler at ``address``, one per worker, and merge them."""
    try:  # an extra: only --cluster needs it
        from distributed import Client
    except ImportError:
        raise WorkbenchError("--cluster needs Dask distributed, which is not installed; "
                             "install the cluster extra: pip install -e '.[cluster]'") from None

    if not address.startswith(("tcp://", "tls://", "inproc://", "ucx://")):
        raise WorkbenchError(f"cluster address {address!r} must look like tcp://HOST:8786")
    try:
        client = Client(address, timeout=f"{CLUSTER_CONNECT_TIMEOUT_S}s")
    except (OSError, TimeoutError) as exc:
        raise WorkbenchError(f"cannot reach the Dask scheduler at {address} ({exc}); start it "
                             f"with `dask scheduler` and workers with `dask worker {address}`"
                             ) from None
    with client:
        workers = sorted(client.scheduler_info()["workers"])
        if not workers:
            raise WorkbenchError(f"the Dask cluster at {address} has no workers; start some "
                                 f"with `dask worker {address}`")
        n = shards or len(workers)
        if n > len(workers):
            raise WorkbenchError(f"{n} shards need {n} Dask workers (one shard each), the "
                                 f"cluster has {len(workers)}; add workers or pass --shards "
                                 f"{len(workers)}")
        env = os.environ | (env or {})
        token = env.get(spec.token_env, "") if spec.token_env else ""
        start = time.time_ns() + CLUSTER_START_MARGIN_NS
        echo(f"[driver] {n} shards on {address}, starting at {iso(start)}")
        futures = [client.submit(shard_task, spec.to_json(), k, n, start, token, pure=False,
                                 workers=[workers[k]], allow_other_workers=False)
                   for k in range(n)]
        try:
            results = client.gather(futures)
        except KeyboardInterrupt:
            client.cancel(futures)
            raise
    dirs = []
    for k, (report, data) in enumerate(results):
        d = out_dir / f"shard-{k}"
        d.mkdir(parents=True, exist_ok=True)
        (d / "requests.parquet").write_bytes(data)
        _write_json(d / SHARD_FILE, report)
        dirs.append(d)
    return merge_shard_dirs(spec, out_dir, dirs)
