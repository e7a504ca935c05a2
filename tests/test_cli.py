"""Unfit targets: one line naming the problem and the fix, exit 2, nothing sent (bad input:
tests/test_bad_input.py); conventions of the command line."""

import ast
import json
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

from tests.loopback import free_port
from workbench.paths import baselines_dir, project_root


def workbench(*args, env=None):
    return subprocess.run([sys.executable, "-m", "workbench.cli", *args], capture_output=True,
                          text=True, timeout=120, env=env)


def baselines_listing():
    return sorted(p.as_posix() for p in baselines_dir().rglob("*"))


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


def test_drive_takes_load_tool_flags_and_prints_one_json_object(tmp_path):
    from tests.loopback import LoopbackServer

    body = tmp_path / "body.json"
    body.write_text('{"ids": ["a", "b"]}')
    with LoopbackServer() as srv:
        out = workbench("drive", f"{srv.url}/bulk", "-m", "post", "-d", f"@{body}",
                        "-H", "X-Test: yes", "--rate", "50", "--duration", "1s",
                        "--timeout", "500ms", "--out", str(tmp_path / "adhoc"), "--json")
        assert srv.bulk_bodies[-1] == body.read_bytes() and srv.bulk_headers["X-Test"] == "yes"
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)  # stdout: the one object, nothing else
    assert summary["exit_code"] == 0 and summary["scheduled"] == summary["completed"] == 50
    assert summary["run_dir"] == str(tmp_path / "adhoc") and summary["passed"] is True
    assert "50 scheduled = 50 completed" in out.stderr  # the human text
    spec = json.loads((tmp_path / "adhoc" / "spec.json").read_text())["spec"]
    assert spec["timeout_s"] == 0.5 and spec["duration_s"] == 1.0
    assert (tmp_path / "adhoc" / "requests.parquet").exists()


def test_compare_json_is_the_verdict_and_every_row():
    record = next(p for p in sorted(baselines_dir().rglob("*.json")) if "capacity" not in p.parts)
    # committed records predate calibration: --force compares them anyway
    out = workbench("compare", str(record), str(record), "--json", "--resamples", "100",
                    "--force")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["exit_code"] == 0 and result["comparable"] is False  # but forced
    assert result["verdict"] in ("no change", "inconclusive", "insufficient data")
    assert {row["endpoint"] for row in result["rows"]} >= {"all"}
    assert "verdict" in out.stderr


def test_bare_workbench_shows_help_and_version_and_run_help_lists_scenarios():
    from workbench import scenarios

    bare = workbench()
    assert bare.returncode == 0 and bare.stdout.startswith("usage: workbench")
    assert all(command in bare.stdout for command in ("run", "drive", "compare", "baseline"))
    version = workbench("--version")
    assert version.returncode == 0
    assert version.stdout.strip() == f"workbench {metadata.version('certctl-workbench')}"
    run_help = workbench("run", "--help").stdout
    for name in scenarios.names():
        assert f"  {name}  " in run_help
        assert all(param in run_help for param in scenarios.get(name).takes)
    assert "smoke" in run_help and "canonical" in run_help


def _read_environment() -> dict[str, str]:
    """Every environment variable the package reads by a literal name (``os.environ.get``,
    ``env["X"]``, a ``*_ENV`` constant), with a file that reads it."""
    def environ(node: ast.AST) -> bool:
        return (isinstance(node, ast.Attribute) and node.attr == "environ") or (
            isinstance(node, ast.Name) and node.id in ("environ", "env"))

    found = {}
    for path in sorted((project_root() / "workbench").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            name = None
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) and any(
                    isinstance(t, ast.Name) and t.id.endswith("_ENV") for t in node.targets):
                name = node.value.value
            elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                  and node.func.attr in ("get", "pop") and environ(node.func.value)
                  and node.args and isinstance(node.args[0], ast.Constant)):
                name = node.args[0].value
            elif isinstance(node, ast.Subscript) and environ(node.value) and isinstance(
                    node.slice, ast.Constant):
                name = node.slice.value
            if isinstance(name, str):
                found.setdefault(name, str(path.relative_to(project_root())))
    return found


def test_every_environment_variable_the_code_reads_is_documented():
    readme = (project_root() / "README.md").read_text()
    start = readme.index("### Environment variables")
    section = readme[start:readme.index("\n## ", start)]  # up to the next top-level section
    read = _read_environment()
    assert {"WORKBENCH_MACHINE", "WORKBENCH_RUNS_DIR", "CERTCTL_TOKEN"} <= set(read)
    missing = {name: where for name, where in read.items() if f"`{name}`" not in section}
    assert not missing, f"undocumented in README's Environment variables: {missing}"


@pytest.fixture()
def real_target_env(embedded_env, embedded_target_state, monkeypatch):
    """The embedded target addressed as a real certctl would be: URL, CA file, token, DSN."""
    from workbench.target import embedded

    monkeypatch.setenv("CERTCTL_TOKEN", embedded.read_token(embedded_target_state))
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
    from workbench.target.standin import schema_sql

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


def test_a_parameter_override_reaches_the_notebook_and_a_breach_exits_99(embedded_env):
    out = workbench("run", "agent_storm", "-p", "duration_s", "1500ms", "-p", "fleet_size", "20",
                    "-p", "thresholds", '{"http_req_duration": ["p(95)<0.001"]}', "--json")
    assert out.returncode == 99, out.stderr  # the tightened threshold was applied and breached
    assert "FAIL http_req_duration p(95)<0.001" in out.stderr  # --json: the text on stderr
    summary = json.loads(out.stdout)
    assert summary["exit_code"] == 99 and summary["passed"] is False
    assert [t["threshold"] for t in summary["thresholds"] if not t["ok"]] == ["p(95)<0.001"]
    record = json.loads((Path(summary["run_dir"]) / "record.json").read_text())
    assert record["parameters"]["duration_s"] == 1.5  # "1500ms", in seconds
