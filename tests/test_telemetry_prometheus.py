"""Prometheus scrape targets as telemetry: exposition text served over real HTTP on loopback,
parsed into the long format, counters as rates, node_exporter's and postgres_exporter's series
recognised, the certctl shorthand with its token, the bounds, the figure and the record."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pandas as pd
import pytest

from tests.synthetic import T0, requests_frame
from workbench import telemetry
from workbench.errors import WorkbenchError
from workbench.report import view
from workbench.telemetry import prometheus
from workbench.telemetry.prometheus import ScrapeSource, parse_option, parse_options
from workbench.telemetry.sources import SourceError

TOKEN = "prom-token-3c1d9e"


def node_text(idle: float, user: float, commits: int, rollbacks: int, restarted=False) -> str:
    """node_exporter's and postgres_exporter's series as they expose them (two CPUs: cpu 0
    counts ``user``/``idle`` seconds, cpu 1 idles)."""
    return f"""# HELP node_cpu_seconds_total Seconds the CPUs spent in each mode.
# TYPE node_cpu_seconds_total counter
node_cpu_seconds_total{{cpu="0",mode="idle"}} {idle}
node_cpu_seconds_total{{cpu="0",mode="user"}} {user}
node_cpu_seconds_total{{cpu="0",mode="iowait"}} 0
node_cpu_seconds_total{{cpu="1",mode="idle"}} {idle + user}
node_cpu_seconds_total{{cpu="1",mode="user"}} 0
# TYPE node_load1 gauge
node_load1 0.75
# TYPE node_memory_MemTotal_bytes gauge
node_memory_MemTotal_bytes 8.0e+09
# TYPE node_memory_MemAvailable_bytes gauge
node_memory_MemAvailable_bytes 6.0e+09
# TYPE pg_stat_database_xact_commit counter
pg_stat_database_xact_commit{{datid="1",datname="certctl"}} {commits}
pg_stat_database_xact_commit{{datid="2",datname="postgres"}} {0 if restarted else 100}
# TYPE pg_stat_database_xact_rollback counter
pg_stat_database_xact_rollback{{datid="1",datname="certctl"}} {rollbacks}
# TYPE pg_stat_activity_count gauge
pg_stat_activity_count{{datname="certctl",state="active"}} 3
pg_stat_activity_count{{datname="certctl",state="idle in transaction"}} 1
pg_stat_activity_count{{datname="postgres",state="active"}} 1
# TYPE pg_locks_count gauge
pg_locks_count{{datname="certctl",mode="rowexclusivelock"}} 4
pg_locks_count{{datname="certctl",mode="accesssharelock"}} 2
# TYPE http_request_duration_seconds histogram
http_request_duration_seconds_bucket{{le="0.1",path="/a,b \\"q\\""}} {commits}
http_request_duration_seconds_bucket{{le="+Inf",path="/a,b \\"q\\""}} {commits}
http_request_duration_seconds_count{{path="/a,b \\"q\\""}} {commits}
http_request_duration_seconds_sum{{path="/a,b \\"q\\""}} 1.5
http_request_duration_seconds_created{{path="/a,b \\"q\\""}} 1.7e+09
"""


class Exporter:
    """A real HTTP server on loopback serving ``pages`` in turn (the last one from then on);
    with ``token`` it answers 401 to a request without ``Authorization: Bearer <token>``."""

    def __init__(self, pages: list[str], token: str | None = None, delay_s: float = 0.0):
        self.pages, self.token, self.delay_s = list(pages), token, delay_s
        self.served: list[dict] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's name
                outer.served.append(dict(self.headers))
                time.sleep(outer.delay_s)
                if outer.token and self.headers.get("Authorization") != f"Bearer {outer.token}":
                    self.send_response(401)
                    self.end_headers()
                    return
                body = (outer.pages.pop(0) if len(outer.pages) > 1 else outer.pages[0]).encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/metrics"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture()
def exporter_factory():
    made = []

    def make(*args, **kwargs):
        made.append(Exporter(*args, **kwargs))
        return made[-1]

    yield make
    for exporter in made:
        exporter.close()


def test_gauges_are_values_counters_rates_and_exporters_series_are_recognised(exporter_factory):
    exporter = exporter_factory([node_text(idle=100, user=10, commits=1000, rollbacks=10),
                                 node_text(idle=103, user=11, commits=1400, rollbacks=30)])
    source = ScrapeSource("db:9100", exporter.url, max_duty=None)
    first = source.sample()
    second = source.sample()
    source.close()
    assert exporter.served[0]["Accept"].startswith("text/plain;version=0.0.4")
    assert "Authorization" not in exporter.served[0]
    # gauges on every scrape; counters only once there is an interval to take a rate over
    assert first["node_load1"] == second["node_load1"] == 0.75
    assert first['pg_locks_count{datname="certctl",mode="accesssharelock"}'] == 2.0
    assert not any(k.endswith("_per_s") or "_per_s{" in k for k in first)
    commits = second['pg_stat_database_xact_commit_per_s{datid="1",datname="certctl"}']
    rollbacks = second['pg_stat_database_xact_rollback_per_s{datid="1",datname="certctl"}']
    assert commits > 0 and commits / rollbacks == pytest.approx(400 / 20)
    assert second['pg_stat_database_xact_commit_per_s{datid="2",datname="postgres"}'] == 0.0
    # a histogram's parts are rates, its _created timestamp is left out, labels are escaped
    path = 'path="/a,b \\"q\\""'
    assert second[f'http_request_duration_seconds_count_per_s{{{path}}}'] == commits
    assert second[f'http_request_duration_seconds_bucket_per_s{{le="0.1",{path}}}'] == commits
    assert not any("_created" in k for k in first | second)
    # recognised: cpu 0 spent 1 s of 4 in user (25 % busy), cpu 1 idled; over both, 1 of 8
    assert second["cpu.0"] == pytest.approx(25.0) and second["cpu.1"] == 0.0
    assert second["cpu.all"] == pytest.approx(12.5) and second["cpu.iowait"] == 0.0
    assert "cpu.0" not in first  # a busy share needs an interval too
    assert first["memory.used_bytes"] == 2e9 and first["memory.available_bytes"] == 6e9
    assert first["load.1"] == 0.75
    assert second["pg.xact_commit_per_s"] == pytest.approx(commits)  # both databases summed
    assert second["pg.xact_rollback_per_s"] == pytest.approx(rollbacks)
    assert first["pg.connections.active"] == 4.0
    assert first["pg.connections.idle_in_transaction"] == 1.0
    assert first["pg.connections.total"] == 5.0 and first["pg.locks.held"] == 6.0


def test_a_counter_that_went_down_was_reset_and_has_no_rate_for_that_interval(exporter_factory):
    exporter = exporter_factory([node_text(100, 10, 1000, 10),
                                 node_text(101, 11, 1100, 11, restarted=True)])
    source = ScrapeSource("db", exporter.url, max_duty=None)
    source.sample()
    after = source.sample()
    source.close()
    assert 'pg_stat_database_xact_commit_per_s{datid="2",datname="postgres"}' not in after
    assert after['pg_stat_database_xact_commit_per_s{datid="1",datname="certctl"}'] > 0


def test_certctl_metrics_are_scraped_with_the_token_and_refused_without(exporter_factory):
    page = ("# TYPE certctl_job_pending gauge\ncertctl_job_pending 7\n"
            "# TYPE certctl_job_completed_total counter\ncertctl_job_completed_total 40\n")
    exporter = exporter_factory([page], token=TOKEN)
    refused = ScrapeSource("certctl_metrics", exporter.url, max_duty=None)
    with pytest.raises(SourceError, match=r"answered HTTP 401"):
        refused.sample()
    refused.close()
    source = ScrapeSource("certctl_metrics", exporter.url, token=TOKEN, max_duty=None)
    assert source.sample() == {"certctl_job_pending": 7.0}
    assert source.sample() == {"certctl_job_pending": 7.0,
                               "certctl_job_completed_total_per_s": 0.0}
    source.close()
    assert exporter.served[-1]["Authorization"] == f"Bearer {TOKEN}"


def test_a_slow_target_is_scraped_at_most_its_duty_cycle(exporter_factory):
    exporter = exporter_factory(["up 1\n"], delay_s=0.05)
    source = ScrapeSource("slow", exporter.url, max_duty=0.001)  # 50 ms: one scrape in 50 s
    assert source.sample() == {"up": 1.0}
    assert source.sample() is None  # skipped: counted by the sampler, neither sample nor failure
    assert len(exporter.served) == 1
    assert source.notes and "scraped as seldom as every" in source.notes[0]
    source.close()


def test_what_a_target_sends_is_bounded(exporter_factory, monkeypatch):
    series = "".join(f'x{{i="{i}"}} {i}\n' for i in range(50))
    samples, dropped = prometheus.parse(series, max_series=20)
    assert len(samples) == 20 and dropped == 30
    monkeypatch.setattr(prometheus, "MAX_BODY", 1000)
    big = exporter_factory(["# padding\n" * 200 + "up 1\n"])
    source = ScrapeSource("big", big.url, max_duty=None)
    with pytest.raises(SourceError, match="sent more than"):
        source.sample()
    source.close()
    garbage = exporter_factory(["<html>not metrics</html>\n"])
    source = ScrapeSource("garbage", garbage.url, max_duty=None)
    with pytest.raises(SourceError, match="not Prometheus text exposition"):
        source.sample()
    source.close()
    with pytest.raises(SourceError, match="127.0.0.1:9/metrics: ConnectError"):
        ScrapeSource("down", "http://127.0.0.1:9/metrics", max_duty=None).sample()


@pytest.mark.slow  # the sampler's own process
def test_the_sampler_process_writes_scraped_series_into_the_long_format(exporter_factory,
                                                                         tmp_path):
    exporter = exporter_factory([node_text(100 + i, 10 + i, 1000 + 100 * i, 10)
                                 for i in range(200)])
    certctl = exporter_factory(["# TYPE certctl_job_pending gauge\ncertctl_job_pending 3\n"],
                               token=TOKEN)
    handle = telemetry.TelemetrySampler(
        tmp_path, target_url="https://certctl.example.test:8443", interval_s=0.1,
        scrapes=[{"name": "db:9100", "url": exporter.url},
                 {"name": "certctl_metrics", "url": certctl.url, "token": TOKEN}]).start()
    assert handle.error is None
    deadline = time.monotonic() + 60
    while len(exporter.served) < 4 and time.monotonic() < deadline:
        time.sleep(0.05)
    sidecar = handle.stop()
    assert sidecar["status"] == "completed"
    node = sidecar["sources"]["db:9100"]
    assert node["kind"] == "prometheus" and node["url"] == exporter.url and node["samples"] >= 2
    assert sidecar["sources"]["certctl_metrics"]["samples"] >= 1
    assert sidecar["sources"]["host"]["reason"].startswith("the target is not on this host")
    frame = telemetry.load_telemetry(tmp_path)
    rows = frame[frame["source"] == "db:9100"]
    metrics = set(rows["metric"].astype(str))
    assert {"cpu.0", "cpu.all", "memory.used_bytes", "pg.xact_commit_per_s",
            'http_request_duration_seconds_count_per_s{path="/a,b \\"q\\""}'} <= metrics
    assert set(frame.loc[frame["source"] == "certctl_metrics", "value"]) == {3.0}
    for path in tmp_path.iterdir():
        assert TOKEN.encode() not in path.read_bytes(), path.name


@pytest.mark.parametrize("value, expected", [
    ("certctl", {"name": "certctl_metrics", "url": "certctl"}),
    ("http://db-host:9100/metrics", {"name": "db-host:9100", "url": "http://db-host:9100/metrics"}),
    ("https://db-host/metrics", {"name": "db-host:443", "url": "https://db-host/metrics"}),
    ("node=http://10.0.0.5:9100/metrics", {"name": "node", "url": "http://10.0.0.5:9100/metrics"}),
])
def test_scrape_options_name_their_targets(value, expected):
    assert parse_option(value) == expected


@pytest.mark.parametrize("values, message", [
    (["ftp://db/metrics"], "give certctl .* or an exporter's URL"),
    (["db-host:9100"], "give certctl"),
    (["host=http://x:1/"], "not one of the built-in sources"),
    (["bad name=http://x:1/"], "must be 1-64 letters"),
    (["http://x:1/a", "http://x:1/b"], "names x:1 twice"),
])
def test_bad_scrape_options_are_refused_with_the_fix(values, message):
    with pytest.raises(WorkbenchError, match=message):
        parse_options(values)


def test_scrape_targets_reach_the_kernel_through_the_environment(monkeypatch):
    monkeypatch.delenv(prometheus.SCRAPE_ENV, raising=False)
    assert prometheus.from_env() == []
    monkeypatch.setenv(prometheus.SCRAPE_ENV, "")  # restored after the test
    prometheus.to_env(["certctl", "node=http://db:9100/metrics"])
    assert prometheus.from_env() == [{"name": "certctl_metrics", "url": "certctl"},
                                     {"name": "node", "url": "http://db:9100/metrics"}]
    monkeypatch.setenv(prometheus.SCRAPE_ENV, '{"x": 1}')
    with pytest.raises(WorkbenchError, match="JSON list"):
        prometheus.from_env()


def test_a_bad_scrape_option_is_one_error_line_before_anything_starts(capsys, tmp_path,
                                                                      monkeypatch):
    from workbench.cli import main

    monkeypatch.setenv("WORKBENCH_RUNS_DIR", str(tmp_path / "runs"))
    assert main(["run", "agent_storm", "--scrape", "ftp://db/metrics"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --scrape 'ftp://db/metrics': give certctl") and \
        err.count("\n") == 1
    assert not (tmp_path / "runs").exists()
    assert main(["run", "agent_storm", "--find-capacity", "--scrape", "certctl"]) == 2
    assert capsys.readouterr().err.startswith("error: --scrape adds to a run's telemetry")


def test_the_record_keeps_recognised_and_certctl_series_the_parquet_everything():
    rows = [("db:9100", "cpu.all"), ("db:9100", 'node_cpu_seconds_total_per_s{cpu="0"}'),
            ("certctl_metrics", "certctl_job_pending"), ("postgres", "xact_commit_per_s")]
    windows = pd.DataFrame(
        {"samples": 1, "mean": 1.0, "min": 1.0, "max": 1.0},
        index=pd.MultiIndex.from_tuples([(s, m, 0.0) for s, m in rows],
                                        names=["source", "metric", "t_s"]))
    summary = telemetry.record_summary(windows, 10.0, scraped=["db:9100", "certctl_metrics"])
    assert {s: sorted(m) for s, m in summary["sources"].items()} == {
        "certctl_metrics": ["certctl_job_pending"], "db:9100": ["cpu.all"],
        "postgres": ["xact_commit_per_s"]}


def test_the_figure_draws_a_scraped_host_and_database_beside_the_local_ones():
    from workbench.report import plots

    requests = requests_frame(np.full(1000, 2.0), rate=100.0)
    t = T0 + np.arange(10) * 10**9
    lines = {("target_process", "cpu_percent"): 40.0, ("db:9100", "cpu.0"): 30.0,
             ("db:9100", "cpu.1"): 10.0, ("db:9100", "memory.used_bytes"): 2.0**31,
             ("pg", "pg.xact_commit_per_s"): 120.0, ("pg", "pg.locks.held"): 6.0,
             ("certctl_metrics", "certctl_job_pending"): 5.0}
    frame = pd.DataFrame({
        "t_ns": np.tile(t, len(lines)),
        "source": pd.Categorical(np.repeat([s for s, _ in lines], t.size)),
        "metric": pd.Categorical(np.repeat([m for _, m in lines], t.size)),
        "value": np.repeat(list(lines.values()), t.size)})
    fig = plots.latency_and_telemetry(requests, frame, "agent_storm", "certctl", "2026-12-07")
    axes = fig.get_axes()
    labels = {a.get_ylabel(): [ln.get_label() for ln in a.get_lines()] for a in axes[1:]}
    assert labels == {
        "CPU (% of one core)": ["target process", "db:9100 cpu.0", "db:9100 cpu.1"],
        "memory (GiB)": ["used (db:9100)"],
        "database rows and\ntransactions per s": ["commits (pg)"],
        "sessions": ["locks held (pg)"],
        "certctl jobs": ["pending (certctl_metrics)"]}
    memory = next(a for a in axes if a.get_ylabel() == "memory (GiB)").get_lines()[0]
    assert set(memory.get_ydata()) == {2.0}
    import matplotlib.pyplot as plt

    plt.close("all")


def test_the_report_says_which_sources_a_remote_target_had():
    sources = {
        "host": {"enabled": False, "reason": "the target is not on this host (scrape its "
                                             "node_exporter: --scrape URL)"},
        "postgres": {"enabled": True, "samples": 12, "failed": 0},
        "certctl_metrics": {"enabled": True, "samples": 6, "failed": 1, "kind": "prometheus",
                            "url": "https://certctl:8443/api/v1/metrics/prometheus"}}
    text = view.telemetry_text({"telemetry": {"sampler": {"sources": sources}}})
    assert text == ("postgres (12 samples), certctl_metrics (6 samples, 1 failed, scraped from "
                    "https://certctl:8443/api/v1/metrics/prometheus); not sampled: host: the "
                    "target is not on this host (scrape its node_exporter: --scrape URL)")
    assert view.telemetry_text({"telemetry": None}) is None
    assert json.dumps(sources)  # as the record holds it
