"""Telemetry through every run: the sampler around the timed phase, its files, record, report."""

import json
from datetime import datetime

import numpy as np
import pytest

from workbench.cli import print_summary
from workbench.run import launcher
from workbench.run.scenario import Run
from workbench.target import embedded
from workbench.telemetry import load_telemetry, prometheus


def _epoch_ns(iso: str) -> int:
    return int(datetime.fromisoformat(iso).timestamp() * 1e9)


def test_a_smoke_run_samples_postgres_host_and_the_standin_every_second(embedded_env,
                                                                        embedded_target_state,
                                                                        monkeypatch, capsys):
    token = embedded.read_token(embedded_target_state)
    monkeypatch.setenv("CERTCTL_TOKEN", token)
    # and the target's own metrics, scraped with its token (what `run --scrape certctl` sets)
    monkeypatch.setenv(prometheus.SCRAPE_ENV, json.dumps(["certctl"]))
    run_dir, _ = launcher.execute("agent_storm", "smoke", overrides={"duration_s": 4.0,
                                                                     "fleet_size": 200})
    samples = load_telemetry(run_dir)
    result = json.loads((run_dir / "result.json").read_text())
    # the timed phase: from the load's first intended start (started_at is the driver
    # process's start, before the calibration and the sampler's start overlap it)
    started, ended = result["t0_epoch_ns"], _epoch_ns(result["ended_at"])
    for source in ("postgres", "host", "target_process"):
        t = np.sort(samples[samples["source"] == source]["t_ns"].unique())
        assert t.size, f"no {source} samples"
        # the samples cover the timed phase, and none is more than a tick late (a skipped
        # tick leaves a gap of two intervals): at least one sample per second of the run
        assert t[0] <= started and t[-1] >= ended, (source, t[0] - started, t[-1] - ended)
        assert np.diff(t).max() < 2e9, (source, np.diff(t).max())
        assert t.size >= (ended - started) / 1e9, (source, t.size)
    record = json.loads((run_dir / "record.json").read_text())
    section = record["telemetry"]
    assert section["sampler"]["status"] == "completed"
    assert section["sampler"]["sources"]["target_process"]["enabled"] is True
    window_s = section["window_s"]
    assert window_s == pytest.approx(0.4)  # the latency windows' length: a tenth of 4 s
    commits = section["sources"]["postgres"]["xact_commit_per_s"]
    # one entry per window that holds a sample, labelled by the window's start within the run
    assert len(commits["t_s"]) >= 3 and all(0 <= t < 4.0 for t in commits["t_s"])
    assert all(round(t / window_s, 6).is_integer() for t in commits["t_s"])
    assert max(m for m in commits["mean"] if m is not None) > 0  # the heartbeats committed
    scraped = section["sampler"]["sources"]["certctl_metrics"]
    assert scraped["kind"] == "prometheus" and scraped["failed"] == 0 and scraped["samples"] >= 1
    assert scraped["url"] == embedded_env.url + "/api/v1/metrics/prometheus"
    metrics = samples[samples["source"] == "certctl_metrics"]
    # the scrape is throttled: whether one lands inside a 4 s run's windows is timing, so the
    # fleet is read from the samples, not from the record's per-window section
    assert metrics[metrics["metric"] == "certctl_agent_total"]["value"].max() >= 200
    online = metrics[metrics["metric"] == "certctl_agent_online"]["value"]
    assert online.max() >= 1  # the storm's heartbeats
    for path in run_dir.rglob("*"):
        assert not path.is_file() or token.encode() not in path.read_bytes(), path
    html = (run_dir / "report.html").read_text()
    assert html.count("<img") >= 5  # the four latency figures and latency with telemetry
    assert "Telemetry: certctl (" in html and "certctl_metrics (" in html
    capsys.readouterr()
    print_summary(run_dir)
    line = next(x for x in capsys.readouterr().out.splitlines() if "telemetry" in x)
    assert line.startswith("  telemetry (completed): samples certctl ")
    assert "target_process " in line and " off" not in line


def test_a_sampler_that_cannot_start_never_breaks_the_run(embedded_env, embedded_target_state,
                                                          monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("CERTCTL_TOKEN", embedded.read_token(embedded_target_state))

    def refuse(self, *args, **kwargs):
        raise OSError("no processes left")

    monkeypatch.setattr("workbench.telemetry.TelemetrySampler.start", refuse)
    r = Run("agent_storm", {"duration_s": 1.0, "fleet_size": 50}, run_dir=tmp_path / "r")
    r.seed()
    outcome = r.drive()
    assert outcome["status"] == "completed"
    assert "telemetry not sampled: OSError: no processes left" in capsys.readouterr().err
    assert r.telemetry() is None
    r.record()
    assert r.baseline["telemetry"] is None
    assert len(r.figures()) == 4


def test_a_sampler_that_dies_mid_run_keeps_what_it_sampled(embedded_env, embedded_target_state,
                                                           monkeypatch, tmp_path):
    monkeypatch.setenv("CERTCTL_TOKEN", embedded.read_token(embedded_target_state))
    r = Run("agent_storm", {"duration_s": 3.0, "fleet_size": 50}, run_dir=tmp_path / "r")
    r.seed()
    original = r.start_telemetry

    def start_then_kill():
        original()
        r._sampler.process.kill()  # as the OOM killer would, before the load starts

    monkeypatch.setattr(r, "start_telemetry", start_then_kill)
    assert r.drive()["status"] == "completed"
    assert r.telemetry_sidecar["status"] == "interrupted"
    r.record()
    assert r.baseline["telemetry"]["sampler"]["status"] == "interrupted"
