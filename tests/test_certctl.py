"""certctl builds and the certctl servers the workbench runs, on a tiny Go server written into a
temporary git repository (tests/tinycertctl.py): no certctl source needed, one build per
revision for the whole module. The opt-in check of a real checkout is tests/test_certctl_real.py.
"""

from __future__ import annotations

import json
import os
import shutil
import ssl
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import httpx
import psutil
import psycopg
import pytest

from tests import tinycertctl
from tests.loopback import free_port
from workbench.errors import WorkbenchError
from workbench.run import launcher
from workbench.target import certctl, embedded, preflight

pytestmark = pytest.mark.skipif(shutil.which("go") is None, reason="building needs Go on PATH")


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> tuple[Path, str, str]:
    """A tiny server's repository: revision one (tagged v0.1.0), then two (no tag)."""
    path = tinycertctl.make_repo(tmp_path_factory.mktemp("tiny") / "tinycertctl")
    one = tinycertctl.commit(path, "one", tag="v0.1.0")
    two = tinycertctl.commit(path, "two")
    return path, one, two


@pytest.fixture(scope="module")
def state(tmp_path_factory):
    """This module's own state folder (PostgreSQL, builds, instances), stopped at the end."""
    path = tmp_path_factory.mktemp("certctl-state")
    yield path
    embedded.down(path)


@pytest.fixture(scope="module")
def builds(repo, state) -> tuple[certctl.Build, certctl.Build]:
    """Revision one by its commit, and the working tree (clean, at revision two)."""
    path, one, _ = repo
    return certctl.build(path, one, state=state), certctl.build(path, state=state)


@pytest.fixture()
def env(state, tmp_path, monkeypatch):
    """The workbench pointed at this module's state, with no exports of its own."""
    monkeypatch.setenv("WORKBENCH_STATE_DIR", str(state))
    monkeypatch.setenv("WORKBENCH_RUNS_DIR", str(tmp_path / "runs"))
    for name in ("CERTCTL_TOKEN", "CERTCTL_DSN", "CERTCTL_CA_FILE"):
        monkeypatch.delenv(name, raising=False)
    return state


def get(info: embedded.TargetInfo, path: str, token: str | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.get(f"{info.url}{path}", headers=headers, timeout=5.0,
                     verify=ssl.create_default_context(cafile=info.ca_file))


def processes_of(binary: Path) -> list[int]:
    """Running processes whose command line starts with ``binary``."""
    out = []
    for process in psutil.process_iter(["pid", "cmdline", "status"]):
        cmdline = process.info["cmdline"] or []
        if cmdline and cmdline[0] == str(binary) and process.info["status"] != "zombie":
            out.append(process.info["pid"])
    return out


# --- building ----------------------------------------------------------------------------------


def test_a_build_is_stamped_with_its_version_and_commit_and_keeps_its_migrations(repo, builds):
    _, one, two = repo
    at_one, at_two = builds
    assert (at_one.version, at_one.commit, at_one.modified, at_one.key) == ("v0.1.0", one,
                                                                             False, one)
    assert at_two.version == f"v0.1.0-1-g{two[:7]}" and at_two.commit == two
    assert at_one.module == tinycertctl.MODULE
    stamped = subprocess.run(["go", "version", "-m", str(at_one.binary)], capture_output=True,
                             text=True, check=True).stdout
    assert f"vcs.revision={one}" in stamped and "vcs.modified=false" in stamped
    assert f"{tinycertctl.MODULE}/internal/api/handler.Version=v0.1.0" in stamped
    # each build keeps the migrations of its own revision, beside its binary
    assert (at_one.migrations / "000001_schema.up.sql").read_text() == "-- schema of one\n"
    assert (at_two.migrations / "000001_schema.up.sql").read_text() == "-- schema of two\n"
    assert at_one.binary.parent == at_one.migrations.parent


def test_a_second_build_of_a_commit_comes_from_the_cache(repo, builds, state):
    path, one, two = repo
    first = builds[0]
    before = first.binary.stat()
    again = certctl.build(path, one, state=state)
    by_head = certctl.build(path, "HEAD", state=state)  # revision two by name, clean tree
    assert again.cached and again == replace(first, cached=True)
    after = again.binary.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert by_head.cached and by_head.key == two
    assert sorted(p.name for p in certctl.builds_dir(state).iterdir()) == sorted([one, two])
    assert not list(certctl.builds_dir(state).glob(".*"))  # no clone or half build left


def test_a_tree_with_local_changes_is_built_apart_and_marked_modified(repo, tmp_path):
    path, _, two = repo
    work = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", "--no-tags", str(path), str(work)], check=True)
    clean = certctl.build(work, state=tmp_path)
    assert clean.version == two[:7] and clean.key == two  # no tag: named by its commit
    (work / "migrations" / "000002_more.up.sql").write_text("-- local\n")
    changed = certctl.build(work, state=tmp_path)
    assert changed.key.startswith(f"{two}-dirty-") and changed.modified and not changed.cached
    stamped = subprocess.run(["go", "version", "-m", str(changed.binary)], capture_output=True,
                             text=True, check=True).stdout
    assert "vcs.modified=true" in stamped
    assert (changed.migrations / "000002_more.up.sql").exists()
    (work / "migrations" / "000002_more.up.sql").write_text("-- other\n")
    assert certctl.build(work, state=tmp_path).key != changed.key  # other changes, other build


@pytest.mark.parametrize("source, needle", [
    ("missing", "not a certctl checkout"),
    ("no_commit", "not a git checkout with a commit"),
])
def test_a_source_that_cannot_be_built_is_refused(tmp_path, source, needle):
    path = tmp_path / "src"
    if source == "no_commit":
        tinycertctl.make_repo(path)
        tinycertctl.write_revision(path, "one")
    with pytest.raises(WorkbenchError, match=needle):
        certctl.build(path, state=tmp_path)


def test_a_clone_git_cannot_diff_is_refused_with_the_fix(repo, tmp_path):
    """A clone missing an object (seen: a snapshot without a large binary) cannot name a build
    of its working tree: one line saying so and what to do, not git's traceback."""
    work = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", "--no-local", str(repo[0]), str(work)], check=True)
    blob = subprocess.run(["git", "-C", str(work), "rev-parse", "HEAD:go.mod"],
                          capture_output=True, text=True, check=True).stdout.strip()
    for pack in (work / ".git" / "objects" / "pack").glob("*.pack"):  # as loose objects
        moved = pack.rename(tmp_path / pack.name)
        pack.with_suffix(".idx").unlink()
        with moved.open("rb") as objects:
            subprocess.run(["git", "-C", str(work), "unpack-objects", "-q"], stdin=objects,
                           check=True)
    (work / ".git" / "objects" / blob[:2] / blob[2:]).unlink()
    (work / "go.mod").write_text((work / "go.mod").read_text() + "// local\n")
    with pytest.raises(WorkbenchError, match="git cannot diff its working tree.*clone it again"):
        certctl.build(work, state=tmp_path)


def test_an_unknown_revision_is_refused_by_name(repo, tmp_path):
    with pytest.raises(WorkbenchError, match="no commit 'v9.9.9'"):
        certctl.build(repo[0], "v9.9.9", state=tmp_path)


# --- running -----------------------------------------------------------------------------------


def test_up_makes_the_build_the_target_with_the_benchmark_profile(builds, env, monkeypatch):
    at_one = builds[0]
    monkeypatch.setenv("CERTCTL_RATE_LIMIT_RPS", "7")  # the caller's certctl settings stay out
    info = certctl.up(at_one, env, port=free_port())
    resolved = preflight.resolve_target()
    assert (resolved.kind, resolved.url, resolved.dsn) == ("certctl", info.url, info.dsn)
    token = preflight.token_for(resolved)
    identity = preflight.preflight(resolved, token, traps=())
    assert (identity["kind"], identity["version"], identity["commit"]) == (
        "certctl", "v0.1.0", at_one.commit)
    settings = get(info, "/tiny/env").json()
    assert settings["migration"] == "-- schema of one\n"  # the migrations of its own revision
    assert not settings["web_dir"] and settings["cwd"] == str(Path(info.log_file).parent)
    assert settings["CERTCTL_DATABASE_MIGRATIONS_PATH"] == str(at_one.migrations)
    assert f"/{info.database}?" in settings["CERTCTL_DATABASE_URL"]
    assert "sslmode=disable" in settings["CERTCTL_DATABASE_URL"]
    expected = {"CERTCTL_LOG_LEVEL": "warn", "CERTCTL_RATE_LIMIT_ENABLED": "false",
                "CERTCTL_KEYGEN_MODE": "agent", "CERTCTL_DEMO_SEED": "true",
                "CERTCTL_SCHEDULER_RENEWAL_CHECK_INTERVAL": "720h",
                "CERTCTL_SCHEDULER_AGENT_HEALTH_CHECK_INTERVAL": "24h"}
    assert {k: settings.get(k) for k in expected} == expected
    assert "CERTCTL_RATE_LIMIT_RPS" not in settings
    socket_dir = embedded.start_postgres(env / "pg")  # running already: where it listens
    with psycopg.connect(embedded.postgres_url(socket_dir, info.database)):
        pass  # its database exists on the embedded PostgreSQL
    # nothing secret in what other processes read
    saved = (env / "target.json").read_text() + (env / "instances" / "target" /
                                                 "server.json").read_text()
    assert token not in saved and token not in Path(info.log_file).read_text()
    assert Path(info.token_file).stat().st_mode & 0o777 == 0o600


def test_up_twice_is_idempotent_and_another_build_replaces_the_running_one(builds, env):
    at_one, at_two = builds
    port = free_port()
    first = certctl.up(at_one, env, port=port)
    token = embedded.read_token(env)
    assert certctl.up(at_one, env, port=port) == first  # same build, same settings: kept
    assert embedded.read_token(env) == token and processes_of(at_one.binary) == [first.pid]
    second = certctl.up(at_two, env, port=port)
    assert processes_of(at_one.binary) == [] and processes_of(at_two.binary) == [second.pid]
    assert second.database != first.database  # two builds never share a database
    state = embedded.status(env)
    assert (state["kind"], state["version"], state["commit"], state["pid"], state["ready"]) == (
        "certctl", at_two.version, at_two.commit, second.pid, True)
    assert state["database"] == second.database and state["instances"] == []


def test_other_settings_restart_it_and_reach_the_server(builds, env):
    at_one = builds[0]
    port = free_port()
    plain = certctl.up(at_one, env, port=port)
    limited = certctl.up(at_one, env, port=port, keygen_mode="server",
                         env={"CERTCTL_RATE_LIMIT_ENABLED": "true"})
    assert limited.pid != plain.pid and not embedded.server_alive(plain)
    settings = get(limited, "/tiny/env").json()
    assert (settings["CERTCTL_KEYGEN_MODE"], settings["CERTCTL_RATE_LIMIT_ENABLED"]) == (
        "server", "true")


def test_two_instances_run_at_once_each_on_its_own_port_and_database(builds, env):
    at_one, at_two = builds
    a = certctl.start(at_one, "a", port=free_port(), state=env)
    b = certctl.start(at_one, "b", port=free_port(), state=env)
    try:
        assert a.database != b.database and a.port != b.port and a.pid != b.pid
        assert get(a, "/api/v1/auth/check", embedded.read_token_file(Path(a.token_file))
                   ).status_code == 200
        assert get(a, "/api/v1/auth/check", embedded.read_token_file(Path(b.token_file))
                   ).status_code == 401  # each its own key
        assert {i.name for i in embedded.instances(env)} >= {"a", "b"}
    finally:
        certctl.stop("a", env)
        certctl.stop("b", env)
    assert not embedded.server_alive(a) and not embedded.server_alive(b)


@pytest.mark.parametrize("knob, needle", [
    ({"TINY_NEVER_READY": "1"}, "was not ready after 3 s"),
    ({"TINY_EXIT_AT_START": "1"}, "exited with code 3; .*tiny: exiting at start on purpose"),
])
def test_a_server_that_does_not_come_up_is_refused_with_its_log_tail(builds, env, knob, needle):
    at_one = builds[0]
    before = processes_of(at_one.binary)
    with pytest.raises(WorkbenchError, match=needle) as refused:
        certctl.start(at_one, "broken", port=free_port(), env=knob, state=env,
                      ready_timeout_s=3)
    assert "certctl.log" in str(refused.value)
    assert processes_of(at_one.binary) == before  # nothing of it left running
    assert "broken" not in {i.name for i in embedded.instances(env)}


def test_the_ari_fix_disables_every_other_issuer_and_restarts_certctl(builds, env):
    """The tiny server has no schema: its database gets certctl's issuers table beforehand."""
    at_one = builds[0]
    socket_dir = embedded.start_postgres(env / "pg")
    database = certctl.database_name("ari", at_one)
    embedded.create_database(socket_dir, database, fresh=True)
    with psycopg.connect(embedded.postgres_url(socket_dir, database), autocommit=True) as conn:
        conn.execute("CREATE TABLE issuers (id text PRIMARY KEY, enabled boolean NOT NULL)")
        conn.execute("INSERT INTO issuers VALUES ('iss-local', true), ('iss-acme-le', true), "
                     "('iss-vault', true), ('iss-off', false)")
    said = []
    info = certctl.start(at_one, "ari", port=free_port(), state=env, echo=said.append)
    try:
        with psycopg.connect(embedded.postgres_url(socket_dir, database)) as conn:
            enabled = conn.execute("SELECT id FROM issuers WHERE enabled").fetchall()
        assert enabled == [("iss-local",)]
        log = Path(info.log_file).read_text()
        assert log.count("tiny: listening") == 2 and "restart after disabling" in log
        assert any("iss-acme-le, iss-vault" in line for line in said)
        assert certctl.disable_other_issuers(embedded.postgres_url(socket_dir, database)) == []
    finally:
        certctl.stop("ari", env)


def test_the_stand_in_and_certctl_replace_each_other(builds, env):
    info = certctl.up(builds[0], env, port=free_port())
    standin = embedded.up(env, port=free_port())
    assert not embedded.server_alive(info) and embedded.read_info(env) == standin
    assert preflight.resolve_target().kind == "stand-in"
    back = certctl.up(builds[0], env, port=free_port())
    assert not embedded.server_alive(standin) and embedded.status(env)["kind"] == "certctl"
    assert preflight.resolve_target().url == back.url


def test_a_target_that_dies_mid_run_fails_the_run_with_its_log_tail_and_keeps_it(builds, env):
    certctl.up(builds[0], env, port=free_port(), env={"TINY_EXIT_AFTER": "20"})
    run_dir, code = launcher.execute("acme_flow", "smoke")
    assert code == 1
    record = json.loads((run_dir / "record.json").read_text())
    exited = record["run"]["target_exit"]
    assert "exited during the run" in exited and "exiting after 20 ACME requests" in exited
    assert record["passed"] is False and record["target"]["kind"] == "certctl"
    load = record["load"]
    assert load["scheduled"] == load["completed"] + load["failed"] + load["dropped"]
    assert load["failed"] > 0 and (run_dir / "requests.parquet").exists()
    assert (run_dir / "report.html").exists()


def test_down_leaves_no_certctl_and_no_postgresql(builds, env):
    info = certctl.up(builds[0], env, port=free_port())
    other = certctl.start(builds[1], "other", port=free_port(), state=env)
    postmaster = embedded.status(env)["pg_pid"]
    embedded.down(env)
    assert not embedded.server_alive(info) and not embedded.server_alive(other)
    assert processes_of(builds[0].binary) == processes_of(builds[1].binary) == []
    assert embedded.running(postmaster) is None
    assert embedded.status(env)["kind"] is None and embedded.instances(env) == []


# --- the command line --------------------------------------------------------------------------


def workbench(*args: str, state: Path) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("CERTCTL_")}
    return subprocess.run([sys.executable, "-m", "workbench.cli", *args], capture_output=True,
                          text=True, timeout=300,
                          env=environ | {"WORKBENCH_STATE_DIR": str(state)})


def test_target_up_certctl_names_the_build_and_drive_sends_its_token(repo, builds, state,
                                                                      tmp_path):
    path, _, two = repo
    port = free_port()
    up = workbench("target", "up", "--certctl", str(path), "--port", str(port), state=state)
    assert up.returncode == 0, up.stderr
    assert f"cached build {two[:12]}" in up.stdout  # built by the fixture already
    assert f"certctl v0.1.0-1-g{two[:7]} (commit {two[:12]}) at https://127.0.0.1:{port}" \
        in up.stdout
    status = workbench("target", "status", state=state)
    assert f"target: certctl v0.1.0-1-g{two[:7]} (commit {two[:12]}) at " in status.stdout
    drive = workbench("drive", f"https://127.0.0.1:{port}/api/v1/auth/check", "--rate", "20",
                      "--duration", "1", "--send-token", "--threshold",
                      "http_req_failed rate<0.01", "--out", str(tmp_path / "drive"), state=state)
    assert drive.returncode == 0, drive.stdout + drive.stderr  # its token and CA, no exports
    down = workbench("target", "down", state=state)
    assert down.returncode == 0 and processes_of(builds[1].binary) == []


@pytest.mark.parametrize("args, needle", [
    (["--certctl-env", "CERTCTL_X"], "--certctl-env 'CERTCTL_X': write NAME=VALUE"),
    (["--keygen-mode", "server"], "--keygen-mode goes with `workbench target up --certctl"),
    (["--certctl", "/no/such/checkout"], "not a certctl checkout"),
    (["--certctl", "x", "--certctl-bin", sys.executable], "give one"),
    (["--certctl-bin", "/no/such/file"], "/no/such/file is missing; name an existing file"),
    (["--certctl-bin", __file__], "not an executable file"),
])
def test_target_up_refuses_bad_input_in_one_line(repo, tmp_path, args, needle):
    if "--certctl-env" in args:
        args = ["--certctl", str(repo[0]), *args]
    done = workbench("target", "up", *args, state=tmp_path)
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith("error: ") and needle in done.stderr
    assert not (tmp_path / "pg").exists()  # refused before starting anything
