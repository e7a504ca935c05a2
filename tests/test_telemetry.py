"""Telemetry: every source against the real thing (embedded PostgreSQL, this host's processes),
the sampler's loop and files, its process handle, the drain helper, windows and the figure."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import psycopg
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

from tests.synthetic import T0, requests_frame
from workbench import scenarios, telemetry
from workbench.analyse import analysis
from workbench.errors import WorkbenchError
from workbench.scenarios import bulk_renewal
from workbench.telemetry import sampler as sampler_module
from workbench.telemetry.sources import (
    APPLICATION_NAME,
    HostSource,
    JobsSource,
    PostgresSource,
    ProcessSource,
    SourceError,
    libpq_conninfo,
)

SECRET = "s3cret-telemetry-pw"


def wait_until(condition, what: str, timeout_s: float = 30.0):
    """Poll ``condition`` until it returns a truthy value (a deadline, never a timing assert)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def connect(dsn: str) -> psycopg.Connection:
    return psycopg.connect(libpq_conninfo(dsn), autocommit=True)


# --- postgres ----------------------------------------------------------------------------------


def test_postgres_counters_become_rates_covering_what_happened_between_samples(embedded_target):
    source = PostgresSource(embedded_target.dsn)
    try:
        before = time.monotonic()
        first = source.sample()
        assert not any(k.endswith("_per_s") for k in first)  # no rate from one sample
        with connect(embedded_target.dsn) as other:
            for _ in range(25):
                other.execute("SELECT 1")
        # a backend flushes its counters when it exits; wait until they are visible
        with connect(embedded_target.dsn) as probe:
            wait_until(lambda: probe.execute(
                "SELECT pg_stat_clear_snapshot(), xact_commit FROM pg_stat_database"
                " WHERE datname = current_database()").fetchone()[1] >= 25, "commit counters")
        second = source.sample()
        elapsed_at_most = time.monotonic() - before
        assert second["xact_commit_per_s"] * elapsed_at_most >= 25
        assert {"tup_returned_per_s", "blks_hit_per_s", "deadlocks_per_s",
                "temp_bytes_per_s"} <= set(second)
        assert second["server_cpu_percent"] >= 0  # PostgreSQL runs on this host
    finally:
        source.close()


def test_sessions_by_state_waits_and_ungranted_locks(embedded_target):
    dsn = embedded_target.dsn
    with connect(dsn) as admin:
        admin.execute("CREATE TABLE IF NOT EXISTS telemetry_lock_probe (id int)")
    holder, waiter = connect(dsn), connect(dsn)
    holder.autocommit = waiter.autocommit = False
    holder.execute("LOCK TABLE telemetry_lock_probe IN ACCESS EXCLUSIVE MODE")  # idle in txn
    blocked = threading.Thread(target=lambda: waiter.execute(
        "LOCK TABLE telemetry_lock_probe IN ACCESS EXCLUSIVE MODE"))
    blocked.start()
    source = PostgresSource(dsn)
    try:
        with connect(dsn) as probe:
            wait_until(lambda: probe.execute(
                "SELECT 1 FROM pg_stat_activity WHERE pid = %s AND wait_event_type = 'Lock'",
                (waiter.info.backend_pid,)).fetchone(), "the waiter to block")
        values = source.sample()
        assert values["waiting.Lock"] >= 1 and values["locks.ungranted"] >= 1
        assert values["locks.ungranted.relation"] >= 1
        assert values["connections.idle_in_transaction"] >= 1
        assert values["connections.total"] >= 2
    finally:
        holder.rollback()
        blocked.join()
        for conn in (holder, waiter):
            conn.rollback()
            conn.close()
        source.close()
        with connect(dsn) as admin:
            admin.execute("DROP TABLE IF EXISTS telemetry_lock_probe")


def test_the_samplers_own_sessions_are_not_counted(embedded_target):
    source, jobs = PostgresSource(embedded_target.dsn), JobsSource(embedded_target.dsn)
    try:
        jobs.sample()
        source.sample()
        with connect(embedded_target.dsn) as probe:
            ours = probe.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name"
                                 " = %s", (APPLICATION_NAME,)).fetchone()[0]
            everyone = probe.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND backend_type = 'client backend'").fetchone()[0]
        assert ours == 2
        assert source.sample()["connections.total"] <= everyone - ours
    finally:
        source.close()
        jobs.close()


# --- certctl jobs and the drain ----------------------------------------------------------------


def add_jobs(dsn: str, statuses: list[str]) -> None:
    with connect(dsn) as conn:
        for i, status in enumerate(statuses, start=1):
            conn.execute("INSERT INTO jobs (id, type, certificate_id, status) VALUES"
                         " (%s, 'Renewal', %s, %s)",
                         (f"job-telemetry-{i}", bulk_renewal.certificate_ids(40)[i], status))


def test_jobs_are_counted_by_titlecase_status(embedded_target):
    dsn = embedded_target.dsn
    scenarios.get("bulk_renewal").seed_size(dsn, 40)  # removes the fixture's jobs
    add_jobs(dsn, ["Pending", "Pending", "Running", "Completed", "Failed", "AwaitingCSR"])
    source = JobsSource(dsn, certificate_like="mc-loadtest-bulk-%")
    try:
        values = source.sample()
    finally:
        source.close()
        scenarios.get("bulk_renewal").seed_size(dsn, 40)
    assert {k: v for k, v in values.items() if v} == {
        "jobs.Pending": 2, "jobs.Running": 1, "jobs.Completed": 1, "jobs.Failed": 1,
        "jobs.AwaitingCSR": 1, "jobs.total": 6}
    assert values["jobs.Cancelled"] == 0 and values["jobs.AwaitingApproval"] == 0


def test_counting_jobs_keeps_to_its_duty_cycle(embedded_target, tmp_path):
    # a duty cycle so small that one count (a few ms) rules out the next hour of ticks
    source = JobsSource(embedded_target.dsn, max_duty=1e-6)
    loop = telemetry.Sampler([source], tmp_path, interval_s=0.05)
    sidecar = run_ticks(loop, 3)
    log = sidecar["sources"]["certctl"]
    assert (log["samples"], log["skipped"], log["failed"]) == (1, 2, 0)
    assert log["notes"][0].startswith("counting jobs took up to")
    frame = telemetry.load_telemetry(tmp_path)
    assert frame.loc[frame["source"] == "sampler", "metric"].astype(str).tolist() == [
        "certctl.cpu_ms", "certctl.wall_ms", "certctl.server_cpu_ms"]  # one sample's cost


def test_drain_ends_when_the_backlog_is_empty(embedded_target):
    dsn = embedded_target.dsn
    scenarios.get("bulk_renewal").seed_size(dsn, 40)
    add_jobs(dsn, ["Pending", "Running", "AwaitingCSR", "Completed"])
    seen = threading.Event()

    def worker():  # certctl's processor, played by hand: after two samples, finish everything
        with connect(dsn) as conn:
            wait_until(seen.is_set, "two drain samples")
            conn.execute("UPDATE jobs SET status = 'Completed' WHERE id LIKE 'job-telemetry-%'")

    thread = threading.Thread(target=worker)
    thread.start()
    original = JobsSource.sample
    calls = []

    def counting(self):
        calls.append(1)
        if len(calls) >= 2:
            seen.set()
        return original(self)

    try:
        JobsSource.sample = counting
        drain = telemetry.wait_for_drain(dsn, timeout_s=60, interval_s=0.1,
                                         certificate_like="mc-loadtest-bulk-%")
    finally:
        JobsSource.sample = original
        thread.join()
        scenarios.get("bulk_renewal").seed_size(dsn, 40)
    assert drain.drained and drain.initial_backlog == 3 and drain.final_backlog == 0
    assert len(drain.samples) >= 3 and drain.samples["backlog"].iloc[-1] == 0
    assert drain.samples["jobs.Completed"].iloc[-1] == 4
    assert drain.drained_per_s == 3 / drain.seconds


def test_drain_stops_at_the_timeout_with_the_backlog_it_saw(embedded_target):
    dsn = embedded_target.dsn
    scenarios.get("bulk_renewal").seed_size(dsn, 40)
    add_jobs(dsn, ["Pending", "AwaitingCSR"])
    try:
        drain = telemetry.wait_for_drain(dsn, timeout_s=0.5, interval_s=0.1,
                                         certificate_like="mc-loadtest-bulk-%")
    finally:
        scenarios.get("bulk_renewal").seed_size(dsn, 40)
    assert not drain.drained
    assert drain.initial_backlog == drain.final_backlog == 2
    assert 2 <= len(drain.samples) <= 6  # one sample per interval slot, never more
    assert drain.drained_per_s == 0


@pytest.mark.parametrize("kwargs, message", [
    ({"timeout_s": 0}, "drain timeout must be a positive number"),
    ({"timeout_s": 5, "interval_s": -1}, "drain interval must be a positive number"),
    ({"timeout_s": 5, "statuses": ()}, "at least one job status"),
])
def test_drain_refuses_bad_arguments_before_connecting(kwargs, message):
    with pytest.raises(WorkbenchError, match=message):
        telemetry.wait_for_drain("postgresql+psycopg://nobody@/nowhere", **kwargs)


def test_a_database_without_certctls_tables_is_a_recorded_reason(embedded_target):
    with connect(embedded_target.dsn) as admin:
        admin.execute("DROP DATABASE IF EXISTS wb_no_jobs")
        admin.execute("CREATE DATABASE wb_no_jobs")
    dsn = embedded_target.dsn.replace("/certctl?", "/wb_no_jobs?")
    jobs, postgres = JobsSource(dsn), PostgresSource(dsn)
    try:
        with pytest.raises(SourceError, match=r'missing in this database: relation "jobs"'):
            jobs.sample()
        assert "connections.total" in postgres.sample()  # the other source goes on
    finally:
        jobs.close()
        postgres.close()
        with connect(embedded_target.dsn) as admin:
            admin.execute("DROP DATABASE IF EXISTS wb_no_jobs WITH (FORCE)")


# --- the loop: failures, lost connections, files ------------------------------------------------


def test_a_lost_connection_is_recorded_and_reopened_on_the_next_tick(embedded_target, tmp_path):
    sources = [PostgresSource(embedded_target.dsn), JobsSource(embedded_target.dsn)]
    loop = telemetry.Sampler(sources, tmp_path, interval_s=1.0, dsn=embedded_target.dsn)
    loop.tick()
    pids = [s.backend_pid for s in sources]
    with connect(embedded_target.dsn) as admin:
        for pid in pids:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        wait_until(lambda: not admin.execute("SELECT 1 FROM pg_stat_activity WHERE pid = ANY(%s)",
                                             (pids,)).fetchone(), "the backends to end")
    lost = loop.tick()
    again = loop.tick()
    sidecar = loop.sidecar("completed")
    for source in sources:
        log = sidecar["sources"][source.name]
        assert (log["samples"], log["failed"]) == (2, 1)
        (reason, entry), = log["failures"].items()
        assert reason.startswith("database connection failed or lost") and entry["count"] == 1
        assert source.backend_pid not in pids  # a new session
    assert {s for _, s, _, _ in lost} == {"sampler"}  # only costs in the failed tick
    assert {s for _, s, _, _ in again} == {"postgres", "certctl", "sampler"}
    for source in sources:
        source.close()


class Broken:
    """A fake source for the loop's own test: it fails, or raises a bug carrying a secret."""

    notes: list[str] = []
    backend_pid = None

    def __init__(self, name: str, error: Exception) -> None:
        self.name, self.error = name, error

    def sample(self):
        raise self.error

    def close(self):
        pass


def run_ticks(loop: telemetry.Sampler, n: int) -> dict:
    """Run the real loop, stopping it after ``n`` ticks; returns its sidecar."""
    stop = threading.Event()
    original = loop.tick

    def tick():
        if loop.ticks + 1 == n:
            stop.set()
        return original()

    loop.tick = tick
    return loop.run(stop)


def test_a_failing_source_records_why_and_the_others_go_on(tmp_path):
    dsn = f"postgresql+psycopg://wb:{SECRET}@127.0.0.1:1/certctl"
    sources = [Broken("postgres", SourceError("permission denied: pg_stat_activity")),
               Broken("certctl", RuntimeError(f"bug near {SECRET}")), HostSource()]
    loop = telemetry.Sampler(sources, tmp_path, interval_s=0.05, dsn=dsn,
                             disabled={"target_process": "no target given"})
    sidecar = run_ticks(loop, 3)
    assert sidecar["status"] == "completed" and sidecar["ticks"] == 3
    failures = sidecar["sources"]["postgres"]["failures"]
    assert list(failures) == ["permission denied: pg_stat_activity"]
    entry = failures["permission denied: pg_stat_activity"]
    assert entry["count"] == 3 and entry["first_t_ns"] < entry["last_t_ns"]
    assert list(sidecar["sources"]["certctl"]["failures"]) == ["RuntimeError: bug near ***"]
    assert sidecar["sources"]["host"]["samples"] == 3
    assert sidecar["sources"]["target_process"] == {"enabled": False,
                                                    "reason": "no target given"}
    assert sidecar["dsn"] == "postgresql+psycopg://wb@127.0.0.1:1/certctl"
    for path in tmp_path.iterdir():
        assert SECRET.encode() not in path.read_bytes(), path.name
    frame = telemetry.load_telemetry(tmp_path)
    assert set(frame["source"].unique()) == {"host", "sampler"}
    costs = set(frame.loc[frame["source"] == "sampler", "metric"].astype(str))
    assert {"postgres.cpu_ms", "certctl.wall_ms", "host.cpu_ms"} <= costs


def test_telemetry_parquet_is_long_format_with_dictionary_strings(tmp_path):
    run_ticks(telemetry.Sampler([HostSource()], tmp_path, interval_s=0.05), 2)
    schema = pq.read_schema(tmp_path / telemetry.PARQUET_FILE)
    assert [f.name for f in schema] == ["t_ns", "source", "metric", "value"]
    assert str(schema.field("t_ns").type) == "int64"
    assert str(schema.field("value").type) == "double"
    assert str(schema.field("source").type).startswith("dictionary<values=string")
    assert str(schema.field("metric").type).startswith("dictionary<values=string")
    assert not (tmp_path / sampler_module.SPOOL_FILE).exists()
    frame = telemetry.load_telemetry(tmp_path / telemetry.PARQUET_FILE)
    assert {f"cpu.{i}" for i in range(os.cpu_count())} <= set(frame["metric"].astype(str))


def test_a_spool_line_cut_short_by_a_kill_is_dropped(tmp_path):
    spool = tmp_path / sampler_module.SPOOL_FILE
    spool.write_text("1000,host,load.1,0.5\n2000,host,load.1,0.75\n3000,host,lo")
    frame = telemetry.load_telemetry(tmp_path)
    assert frame["t_ns"].tolist() == [1000, 2000] and frame["value"].tolist() == [0.5, 0.75]


# --- host and target process -------------------------------------------------------------------


def test_host_cpu_per_core_load_and_memory():
    source = HostSource()
    values = source.sample()
    cores = [values[f"cpu.{i}"] for i in range(os.cpu_count())]
    assert all(0 <= c <= 100 for c in cores) and 0 <= values["cpu.all"] <= 100
    assert values["load.1"] >= 0 and values["memory.used_bytes"] > 0
    assert values["memory.available_bytes"] > 0


def test_target_process_is_found_by_its_listening_port():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        source = ProcessSource(port=listener.getsockname()[1])
        first = source.sample()
        spent = time.process_time() + 0.05
        while time.process_time() < spent:  # 50 ms of CPU: five of the kernel's 10 ms ticks
            sum(i * i for i in range(1000))
        second = source.sample()
    assert first["pid"] == second["pid"] == os.getpid()
    assert "cpu_percent" not in first and second["cpu_percent"] > 0
    assert second["rss_bytes"] > 0 and second["threads"] >= 1


def test_no_listener_and_a_gone_process_are_reasons():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # bound, never listening
        with pytest.raises(SourceError, match=f"no process listens on TCP port {port}"):
            ProcessSource(port=port).sample()
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    with pytest.raises(SourceError, match=f"process {child.pid} is gone|no permission"):
        ProcessSource(pid=child.pid).sample()


def test_sources_are_chosen_from_what_the_run_has():
    sources, disabled = telemetry.build_sources(None, "https://certctl.example.test:8443")
    assert sources == []
    assert disabled["postgres"].startswith("no database DSN")
    assert disabled["host"].startswith("the target is not on this host (scrape its node_")
    assert disabled["target_process"].startswith("the target is not on this host")
    sources, disabled = telemetry.build_sources("postgresql+psycopg://u@/db",
                                                "https://127.0.0.1:8443")
    assert [s.name for s in sources] == ["postgres", "certctl", "host", "target_process"]
    assert sources[-1].port == 8443 and disabled == {}
    sources, _ = telemetry.build_sources(None, "https://certctl.example.test", target_pid=42)
    assert [(s.name, s.fixed_pid) for s in sources] == [("target_process", 42)]


@pytest.mark.parametrize("kwargs, message", [
    ({"interval_s": 0}, "telemetry interval must be 0.05..60.0 seconds"),
    ({"interval_s": "1"}, "telemetry interval must be"),
    ({"target_pid": -3}, "--target-pid must be a process id"),
])
def test_bad_sampler_settings_are_refused_before_anything_starts(tmp_path, kwargs, message):
    with pytest.raises(WorkbenchError, match=message):
        telemetry.TelemetrySampler(tmp_path / "run", **kwargs)
    assert not (tmp_path / "run").exists()


# --- the sampler process -----------------------------------------------------------------------


def spooled_ticks(run_dir: Path) -> int:
    """Ticks in the spool so far: each tick records the postgres source's cost once."""
    frame = sampler_module.read_spool(run_dir / sampler_module.SPOOL_FILE)
    return int((frame["metric"] == "postgres.wall_ms").sum())


def test_sampler_process_samples_every_source_and_writes_its_files(embedded_target, tmp_path):
    handle = telemetry.TelemetrySampler(tmp_path, dsn=embedded_target.dsn,
                                        target_url=embedded_target.url, interval_s=0.2).start()
    assert handle.error is None and handle.running
    wait_until(lambda: spooled_ticks(tmp_path) >= 3, "three ticks")
    sidecar = handle.stop()
    assert not handle.running and sidecar["status"] == "completed"
    assert sidecar == telemetry.read_sidecar(tmp_path)
    assert not (tmp_path / sampler_module.SPOOL_FILE).exists()
    for name in telemetry.sampler.SOURCES:
        log = sidecar["sources"][name]
        assert log["enabled"] and log["failed"] == 0, (name, log)
        # certctl's count may skip ticks (at most 1% of the time): every other source samples all
        assert log["samples"] + log["skipped"] == sidecar["ticks"] >= 3, (name, log)
        assert log["samples"] == sidecar["ticks"] or name == "certctl", (name, log)
        assert log["samples"] >= 1 and log["cost"]["wall_ms_max"] > 0, (name, log)
    assert sidecar["sources"]["postgres"]["cost"]["server_cpu_ms_mean"] >= 0
    frame = telemetry.load_telemetry(tmp_path)
    pid = frame[(frame["source"] == "target_process") & (frame["metric"] == "pid")]["value"]
    assert set(pid) == {embedded_target.pid}
    assert frame["t_ns"].is_monotonic_increasing


def test_a_killed_sampler_keeps_every_whole_tick(embedded_target, tmp_path):
    handle = telemetry.TelemetrySampler(tmp_path, dsn=embedded_target.dsn, interval_s=0.1,
                                        host=True).start()
    wait_until(lambda: spooled_ticks(tmp_path) >= 3, "three ticks")
    handle.process.kill()
    handle.process.wait()
    spooled = sampler_module.read_spool(tmp_path / sampler_module.SPOOL_FILE)
    sidecar = handle.stop()
    assert sidecar["status"] == "interrupted"
    frame = telemetry.load_telemetry(tmp_path)
    assert len(frame) == len(spooled) > 0


def test_a_sampler_that_cannot_start_is_recorded_not_raised(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "executable", "/bin/false")
    handle = telemetry.TelemetrySampler(tmp_path, host=True).start(ready_timeout_s=30)
    assert "exited with code 1 before its first sample" in handle.error
    sidecar = handle.stop()
    assert sidecar["status"].startswith("failed: the telemetry sampler exited with code 1")
    assert telemetry.load_telemetry(tmp_path).empty


def test_the_dsn_password_reaches_no_file_of_the_sampler(tmp_path):
    dsn = f"postgresql+psycopg://wb:{SECRET}@127.0.0.1:1/certctl"  # nothing listens there
    handle = telemetry.TelemetrySampler(tmp_path, dsn=dsn, host=True, interval_s=0.1).start()
    wait_until(lambda: spooled_ticks(tmp_path) >= 2, "two ticks")
    sidecar = handle.stop()
    failures = sidecar["sources"]["postgres"]["failures"]
    assert all(r.startswith("database connection failed or lost") for r in failures)
    assert sidecar["sources"]["host"]["samples"] >= 2
    assert sidecar["dsn"] == "postgresql+psycopg://wb@127.0.0.1:1/certctl"
    for path in tmp_path.iterdir():
        assert SECRET.encode() not in path.read_bytes(), path.name


# --- windows, the record's summary and the figure -----------------------------------------------


def synthetic_telemetry(t0_ns: int, seconds: int = 30) -> pd.DataFrame:
    """A sample a second from 3 s before ``t0_ns``: commits/s rise by 10 each second."""
    t = t0_ns + np.arange(-3, seconds) * 10**9 + 250_000_000
    n = t.size
    return pd.DataFrame({
        "t_ns": np.concatenate([t] * 5),
        "source": pd.Categorical(["postgres"] * n + ["target_process"] * n + ["certctl"] * n
                                 + ["host"] * 2 * n),
        "metric": pd.Categorical(["xact_commit_per_s"] * n + ["cpu_percent"] * n
                                 + ["jobs.Pending"] * n + ["cpu.0"] * n + ["load.1"] * n),
        "value": np.concatenate([10.0 * np.arange(-3, seconds), np.full(n, 50.0),
                                 np.maximum(0, 20 - np.arange(n, dtype=float)),
                                 np.full(n, 70.0), np.full(n, 1.5)]),
    })


def test_telemetry_windows_share_the_latency_windows_edges():
    requests = requests_frame(np.full(3000, 2.0), rate=100.0)  # 30 s from T0
    latency = analysis.windows(requests, 10.0)
    frame = synthetic_telemetry(T0)
    windows = telemetry.telemetry_windows(frame, T0, 10.0, n_windows=len(latency))
    commits = windows.loc[("postgres", "xact_commit_per_s")]
    assert commits.index.tolist() == latency.index.tolist() == [0.0, 10.0, 20.0]
    assert commits["samples"].tolist() == [10, 10, 10]
    assert commits["mean"].tolist() == [45.0, 145.0, 245.0]  # the samples at 0.25 ... 9.25 s
    assert commits["min"].tolist() == [0.0, 100.0, 200.0]
    assert telemetry.telemetry_windows(frame, T0, 10.0, n_windows=2).index.get_level_values(
        "t_s").max() == 10.0
    summary = telemetry.record_summary(windows, 10.0)
    json.dumps(summary, allow_nan=False)
    assert summary["sources"]["postgres"]["xact_commit_per_s"]["mean"] == [45.0, 145.0, 245.0]
    assert summary["window_s"] == 10.0


def test_the_latency_and_telemetry_figure_shares_one_time_axis(close_figures):
    requests = requests_frame(np.full(3000, 2.0), rate=100.0)
    from workbench.report import plots

    fig = plots.latency_and_telemetry(requests, synthetic_telemetry(T0), "agent_storm",
                                      "stand-in", "2026-12-03")
    axes = fig.get_axes()
    assert [a.get_ylabel() for a in axes] == ["response time (ms)", "CPU (% of one core)",
                                               "database rows and\ntransactions per s",
                                               "certctl jobs"]
    assert all(a.get_shared_x_axes().joined(axes[0], a) for a in axes[1:])
    assert "agent_storm" in axes[0].get_title() and "2026-12-03" in axes[0].get_title()
    assert [ln.get_label() for ln in axes[1].get_lines()] == ["target process", "host cpu.0"]
    jobs = axes[-1].get_lines()
    assert [ln.get_label() for ln in jobs] == ["Pending"]  # all-zero statuses are left out
    assert jobs[0].get_xdata()[0] == pytest.approx(-2.75)  # sampled before the load started
    empty = plots.latency_and_telemetry(requests, synthetic_telemetry(T0).iloc[:0], "s", "t",
                                        "d")
    assert len(empty.get_axes()) == 1


@pytest.fixture()
def close_figures():
    import matplotlib.pyplot as plt

    yield
    plt.close("all")


def test_the_sampler_session_sees_the_fixture_database(embedded_target):
    """The libpq URI built from the SQLAlchemy URL reaches the same database SQLAlchemy does."""
    engine = sa.create_engine(embedded_target.dsn)
    with engine.connect() as conn:
        expected = conn.execute(sa.text("SELECT current_database()")).scalar_one()
    engine.dispose()
    with connect(embedded_target.dsn) as conn:
        assert conn.execute("SELECT current_database()").fetchone()[0] == expected
