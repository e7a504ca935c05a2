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
    (["run", "agent_storm", "-p", "rate", "0"], "rate must be positive"),
    (["run", "agent_storm", "-p", "rate", "-3"], "rate must be positive"),
    (["run", "agent_storm", "-p", "duration_s", "0"], "duration_s must be positive"),
    (["run", "agent_storm", "-p", "duration_s", "-1"], "duration_s must be positive"),
    (["run", "all", "-p", "nonsense", "1"], "no scenario takes parameter nonsense"),
    (["run", "all", "-p", "vus", "0"], "parameter vus must be positive"),
    (["run", "agent_storm", "--target", "not-a-url"], "malformed target URL"),
])
def test_bad_input_is_refused_with_one_line(embedded_env, args, needle):
    before = baselines_listing()
    out = workbench(*args)
    assert out.returncode == 2, out.stderr
    assert needle in out.stderr
    assert out.stderr.count("\n") == 1 and out.stderr.startswith("error: ")
    assert baselines_listing() == before


@pytest.mark.parametrize("name,value", [("rate", "NaN"), ("rate", "Infinity"),
                                        ("duration_s", "NaN"), ("duration_s", "Infinity")])
def test_nan_and_infinity_parameters_are_refused_before_anything_is_written(
        embedded_env, tmp_path, name, value):
    out = workbench("run", "agent_storm", "-p", name, value)
    assert out.returncode == 2, out.stderr
    assert f"parameter {name} must be a finite number" in out.stderr
    assert out.stderr.count("\n") == 1 and out.stderr.startswith("error: ")
    assert not (tmp_path / "runs").exists()  # no run folder: nothing seeded, nothing sent


@pytest.mark.parametrize("flag", ["--rate", "--duration", "--fleet-size"])
def test_parameters_are_set_one_way_only(flag):
    out = workbench("run", "agent_storm", flag, "5")
    assert out.returncode == 2 and f"unrecognized arguments: {flag} 5" in out.stderr


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


@pytest.fixture()
def real_target_env(embedded_env, embedded_target_state, monkeypatch):
    """The embedded target addressed as a real certctl would be: URL, CA file, token, DSN."""
    from workbench import target

    monkeypatch.setenv("CERTCTL_TOKEN", target.read_token(embedded_target_state))
    return ["--target", embedded_env.url, "--ca-file", embedded_env.ca_file]


def _create_database(dsn: str, name: str, ddl: str = "") -> str:
    import sqlalchemy as sa

    engine = sa.create_engine(dsn, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sa.text(f"DROP DATABASE IF EXISTS {name}"))
        conn.execute(sa.text(f"CREATE DATABASE {name}"))
    engine.dispose()
    other = sa.engine.make_url(dsn).set(database=name)
    if ddl:
        engine = sa.create_engine(other)
        with engine.begin() as conn:
            conn.exec_driver_sql(ddl)
        engine.dispose()
    return other.render_as_string(hide_password=False)


@pytest.mark.parametrize("case,needle", [
    ("unreachable", "database unreachable"),
    ("not_certctl", "not certctl's: missing tables agents, teams"),
    ("no_parents", "lacks the fixtures' parent rows owners.o-alice, issuers.iss-local"),
    ("unset", "no database to seed: export CERTCTL_DSN"),
    ("remote", "is not on this machine; pass --allow-remote-db"),  # refused before connecting
])
def test_unfit_database_is_refused_before_any_load(real_target_env, embedded_env, monkeypatch,
                                                    tmp_path, case, needle):
    from workbench.standin import schema_sql

    if case == "unreachable":
        dead = f"postgresql+psycopg://certctl@127.0.0.1:{free_port()}/x"
        monkeypatch.setenv("CERTCTL_DSN", dead)
    elif case == "not_certctl":
        monkeypatch.setenv("CERTCTL_DSN", _create_database(embedded_env.dsn, "wb_empty"))
    elif case == "no_parents":
        ddl = schema_sql() + "\nDELETE FROM owners; DELETE FROM issuers;"
        dsn = _create_database(embedded_env.dsn, "wb_noparents", ddl)
        monkeypatch.setenv("CERTCTL_DSN", dsn)
    elif case == "remote":
        monkeypatch.setenv("CERTCTL_DSN", "postgresql+psycopg://certctl:pw@203.0.113.5/certctl")
    before = baselines_listing()
    out = workbench("run", "bulk_renewal", *real_target_env)
    assert out.returncode == 2, out.stderr
    assert needle in out.stderr
    assert out.stderr.strip().splitlines()[-1].startswith("error: ")
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
    assert baselines_listing() == before


@pytest.mark.parametrize("args,needle", [
    (["run", "agent_storm", "-p", "nonsense", "1"], "agent_storm takes no parameter nonsense"),
    (["run", "agent_storm", "-p", "run_dir", "/tmp/x"], "takes no parameter run_dir"),
    (["run", "acme_burst", "-p", "rate", "5"], "acme_burst takes no parameter rate"),
    (["run", "agent_storm", "-p", "thresholds", '{"http_req_duration": ["p95<1"]}'],
     "malformed threshold 'p95<1'"),
    (["run", "agent_storm", "-p", "fleet_size", "ten"], "fleet_size must be an integer"),
])
def test_bad_parameter_overrides_are_refused(embedded_env, args, needle):
    out = workbench(*args)
    assert out.returncode == 2, out.stderr
    assert needle in out.stderr and out.stderr.startswith("error: ")


def test_a_parameter_override_reaches_the_notebook(embedded_env):
    out = workbench("run", "agent_storm", "-p", "duration_s", "1", "-p", "fleet_size", "20",
                    "-p", "thresholds", '{"http_req_duration": ["p(95)<0.001"]}')
    assert out.returncode == 1, out.stderr  # the tightened threshold was applied and breached
    assert "FAIL http_req_duration p(95)<0.001" in out.stdout
