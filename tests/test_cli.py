"""Bad input and unfit targets: one line naming the problem and the fix, exit 2, nothing sent."""

import subprocess
import sys

import pytest

from tests.loopback import free_port
from workbench.paths import baselines_dir


def workbench(*args, env=None):
    return subprocess.run([sys.executable, "-m", "workbench.cli", *args], capture_output=True,
                          text=True, timeout=120, env=env)


def baselines_listing():
    return sorted(p.as_posix() for p in baselines_dir().rglob("*"))


@pytest.mark.parametrize("args,needle", [
    (["run", "no_such_scenario"], "unknown scenario 'no_such_scenario'"),
    (["run", "agent_storm", "--profile", "huge"], "unknown profile 'huge'"),
    (["run", "agent_storm", "--rate", "0"], "rate must be positive"),
    (["run", "agent_storm", "--rate", "-3"], "rate must be positive"),
    (["run", "agent_storm", "--duration", "0"], "duration_s must be positive"),
    (["run", "agent_storm", "--duration", "-1"], "duration_s must be positive"),
    (["run", "agent_storm", "--target", "not-a-url"], "malformed target URL"),
])
def test_bad_input_is_refused_with_one_line(embedded_env, args, needle):
    before = baselines_listing()
    out = workbench(*args)
    assert out.returncode == 2, out.stderr
    assert needle in out.stderr
    assert out.stderr.count("\n") == 1 and out.stderr.startswith("error: ")
    assert baselines_listing() == before


def test_unreachable_target_is_refused_before_any_load(embedded_env, monkeypatch):
    monkeypatch.setenv("CERTCTL_TOKEN", "some-token")
    out = workbench("run", "agent_storm", "--target", f"https://127.0.0.1:{free_port()}")
    assert out.returncode == 2
    assert "unreachable" in out.stderr and "workbench target up" in out.stderr


def test_wrong_token_is_refused(embedded_env, monkeypatch):
    monkeypatch.setenv("CERTCTL_TOKEN", "definitely-wrong")
    out = workbench("run", "agent_storm")
    assert out.returncode == 2
    assert "refused the API token (401)" in out.stderr and "CERTCTL_TOKEN" in out.stderr


def test_tls_verification_failure_suggests_the_ca_file(embedded_env, monkeypatch):
    monkeypatch.setenv("CERTCTL_TOKEN", "some-token")
    # the stand-in's certificate is signed by the workbench's own CA, unknown to the system store
    out = workbench("run", "agent_storm", "--target", embedded_env.url)
    assert out.returncode == 2
    assert "TLS verification" in out.stderr and "--ca-file" in out.stderr


def test_target_down_is_reported(embedded_env, tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_STATE_DIR", str(tmp_path / "nothing-here"))
    out = workbench("run", "agent_storm")
    assert out.returncode == 2 and "workbench target up" in out.stderr


def test_drive_ad_hoc_writes_parquet_and_result(tmp_path):
    from tests.loopback import LoopbackServer

    with LoopbackServer() as srv:
        out = workbench("drive", f"{srv.url}/delay?ms=1", "--rate", "50", "--duration", "1",
                        "--out", str(tmp_path / "adhoc"))
    assert out.returncode == 0, out.stderr
    assert "50 scheduled = 50 completed" in out.stdout
    assert (tmp_path / "adhoc" / "requests.parquet").exists()
