"""The shipped GitHub workflow: it parses, and it runs what README.md tells users to run."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
WORKFLOW = ROOT / ".github" / "workflows" / "workbench.yml"
DOC_FILES = (ROOT / "README.md",)  # where users read the commands the workflow runs
ANY = "<value>"  # a token that stands for any argument: a shell variable or a doc placeholder


def _workflow() -> dict:
    return yaml.safe_load(WORKFLOW.read_text())


def _steps() -> list[dict]:
    return [step for job in _workflow()["jobs"].values() for step in job["steps"]]


def _normalize(tokens: list[str]) -> tuple[str, ...]:
    """Drop ``VAR=value`` prefixes and the ``.venv/bin/`` path; any value becomes ``ANY``."""
    while tokens and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", tokens[0]):
        tokens = tokens[1:]
    out = []
    for i, token in enumerate(tokens):
        if i == 0:
            token = token.removeprefix(".venv/bin/")
        placeholder = ("$" in token or token.startswith(("<", "/", "https://", "http://"))
                       or re.fullmatch(r"[A-Z][A-Z_]+", token))
        out.append(ANY if placeholder else token)
    return tuple(out)


def _commands(script: str) -> list[tuple[str, ...]]:
    """The ``make`` and ``workbench`` command lines of a shell script, normalized."""
    found = []
    for line in script.replace("\\\n", " ").splitlines():
        line = line.split(" #", 1)[0].strip()
        try:
            tokens = shlex.split(line)
        except ValueError:
            continue
        command = _normalize(tokens)
        if command and command[0] in ("make", "workbench"):
            found.append(command)
    return found


def _expand(command: tuple[str, ...]) -> list[tuple[str, ...]]:
    """``target up|down`` means each alternative; a ``[--port 8443]`` group is optional."""
    text = re.sub(r"\s*\[[^\]]*\]", "", " ".join(command))
    variants = [[]]
    for token in text.split():
        options = token.split("|") if "|" in token and not token.startswith("<") else [token]
        variants = [v + [o] for v in variants for o in options]
    return [tuple(v) for v in variants]


def _documented() -> set[tuple[str, ...]]:
    documented = set()
    for path in DOC_FILES:
        if not path.exists():
            continue
        for block in re.findall(r"```(?:sh|bash)?\n(.*?)```", path.read_text(), re.DOTALL):
            for command in _commands(block):
                documented.update(_expand(command))
    return documented


def _matches(command: tuple[str, ...], documented: tuple[str, ...]) -> bool:
    return len(command) == len(documented) and all(
        a == b or ANY in (a, b) for a, b in zip(command, documented, strict=True))


def _run_scripts() -> list[str]:
    return [step["run"] for step in _steps() if "run" in step]


def test_the_workflow_runs_on_pull_requests_and_weekly():
    workflow = _workflow()
    triggers = workflow.get("on", workflow.get(True))  # YAML 1.1 reads a bare `on` as True
    assert "pull_request" in triggers
    (cron,) = [entry["cron"] for entry in triggers["schedule"]]
    minute, hour, day, month, weekday = cron.split()
    assert day == month == "*" and weekday not in ("*", "") and hour.isdigit()


def _jobs() -> dict[str, dict]:
    return _workflow()["jobs"]


def test_it_installs_python_311_from_pyproject_into_the_venv_the_docs_use():
    for name, job in _jobs().items():
        setup = [s for s in job["steps"] if s.get("uses", "").startswith("actions/setup-python@")]
        assert len(setup) == 1 and str(setup[0]["with"]["python-version"]) == "3.11", name
    assert ("make", "install") in [c for script in _run_scripts() for c in _commands(script)]
    install = re.search(r"^\$\(STAMP\):.*?(?=^\S)", (ROOT / "Makefile").read_text(),
                        re.MULTILINE | re.DOTALL)
    assert install and "pip install" in install.group(0) and "-e '." in install.group(0)


def test_every_command_it_runs_is_one_the_readme_documents():
    documented = _documented()
    commands = [c for script in _run_scripts() for c in _commands(script)]
    assert commands, "the workflow runs no make or workbench command"
    undocumented = [" ".join(c) for c in commands
                    if not any(_matches(c, d) for d in documented)]
    assert not undocumented, f"not documented in README.md: {undocumented}"


def test_it_runs_the_smoke_suite_on_both_targets_and_a_breach_fails_the_job():
    commands = [c for script in _run_scripts() for c in _commands(script)]
    smoke = ("workbench", "run", "all", "--profile", "smoke")
    assert smoke in commands  # the embedded stand-in
    assert any(c[:7] == (*smoke, "--target", ANY) for c in commands)  # a configured certctl
    assert ("workbench", "target", "up") in commands
    for step in _steps():
        assert not step.get("continue-on-error"), step.get("name")
        assert "|| true" not in step.get("run", ""), step.get("name")


def _smoke_jobs() -> dict[str, dict]:
    """The jobs that run the smoke suite (``workbench run``)."""
    return {name: job for name, job in _jobs().items()
            if any(c[:2] == ("workbench", "run") for s in job["steps"] if "run" in s
                   for c in _commands(s["run"]))}


def test_runs_are_uploaded_even_on_failure_and_never_the_state_folder():
    names = set()
    assert set(_smoke_jobs()) == {"smoke", "certctl"}
    for job in _smoke_jobs().values():
        uploads = [s for s in job["steps"]
                   if s.get("uses", "").startswith("actions/upload-artifact@")]
        assert len(uploads) == 1
        (upload,) = uploads
        assert "always()" in upload["if"]
        paths = [p.strip() for p in str(upload["with"]["path"]).splitlines() if p.strip()]
        assert paths == ["runs/"]  # .workbench/ holds the targets' tokens
        names.add(upload["with"]["name"])
    assert len(names) == len(_smoke_jobs())  # one artifact per job, none overwriting another


def test_a_manual_run_builds_certctl_at_the_ref_given_and_runs_the_smoke_suite_on_it():
    workflow = _workflow()
    dispatch = workflow.get("on", workflow.get(True))["workflow_dispatch"]
    assert dispatch["inputs"]["certctl_ref"]["default"]
    job = _jobs()["certctl"]
    assert "workflow_dispatch" in job["if"]
    steps = job["steps"]
    checkout = [s for s in steps if s.get("uses", "").startswith("actions/checkout@")
                and s.get("with", {}).get("repository") == "shankar0123/certctl"]
    assert len(checkout) == 1 and "inputs.certctl_ref" in checkout[0]["with"]["ref"]
    assert checkout[0]["with"]["fetch-depth"] == 0  # tags: the build is named by git describe
    go = [s for s in steps if s.get("uses", "").startswith("actions/setup-go@")]
    assert len(go) == 1 and go[0]["with"]["go-version-file"].endswith("go.mod")
    commands = [c for s in steps if "run" in s for c in _commands(s["run"])]
    up = ("workbench", "target", "up", "--certctl", ANY)
    smoke = ("workbench", "run", "all", "--profile", "smoke")
    assert commands.index(up) < commands.index(smoke)  # no --target: the build just started
    down = [s for s in steps if "run" in s and ("workbench", "target", "down") in
            _commands(s["run"])]
    assert len(down) == 1 and "always()" in down[0]["if"]


def test_it_never_commits_or_pushes_and_keeps_secrets_in_env():
    workflow = _workflow()
    assert workflow["permissions"] == {"contents": "read"}
    scripts = "\n".join(_run_scripts())
    for forbidden in ("git commit", "git push", "baseline commit", "git add"):
        assert forbidden not in scripts
    assert "secrets." not in scripts  # secrets reach commands only through env, never inline
    text = WORKFLOW.read_text()
    assert re.findall(r"secrets\.(\w+)", text) and "CERTCTL_TOKEN" in text


def test_every_action_is_pinned_to_a_commit_with_its_tag_beside_it():
    uses = re.findall(r"^\s*(?:-\s*)?uses:\s*(\S+)(.*)$", WORKFLOW.read_text(), re.MULTILINE)
    assert len(uses) == sum("uses" in step for step in _steps()) >= 10
    for action, comment in uses:
        name, _, ref = action.partition("@")
        assert re.fullmatch(r"[0-9a-f]{40}", ref), f"{action} is not pinned to a commit"
        assert re.fullmatch(r"\s*# v\d+\.\d+\.\d+", comment), f"{action}: no '# vX.Y.Z'"
    dependabot = yaml.safe_load((ROOT / ".github" / "dependabot.yml").read_text())
    assert dependabot["version"] == 2
    assert [(u["package-ecosystem"], u["directory"]) for u in dependabot["updates"]] == [
        ("github-actions", "/")]


def test_the_pip_cache_is_keyed_on_the_lock_as_well_as_pyproject():
    for name, job in _jobs().items():
        (setup,) = [s for s in job["steps"]
                    if s.get("uses", "").startswith("actions/setup-python@")]
        keyed = str(setup["with"]["cache-dependency-path"]).split()
        assert setup["with"]["cache"] == "pip" and keyed == ["pyproject.toml",
                                                              "requirements.lock"], name


def test_each_smoke_job_publishes_its_junit_xml_as_a_check_even_on_failure():
    for name, job in _smoke_jobs().items():
        published = [s for s in job["steps"]
                     if s.get("uses", "").startswith("mikepenz/action-junit-report@")]
        assert len(published) == 1, name
        assert "always()" in published[0]["if"]
        assert published[0]["with"]["report_paths"] == "runs/**/junit.xml"  # exports.py's file
        assert job["permissions"] == {"contents": "read", "checks": "write"}, name


def test_a_remote_certctl_is_seeded_with_consent_and_scraped_and_the_readme_says_so():
    scripts = [c for s in _jobs()["smoke"]["steps"] if "run" in s for c in _commands(s["run"])]
    remote = [c for c in scripts if c[:3] == ("workbench", "run", "all") and "--target" in c]
    assert remote == [("workbench", "run", "all", "--profile", "smoke", "--target", ANY,
                       "--allow-remote-db", "--scrape", "certctl")]
    readme = (ROOT / "README.md").read_text()
    start = readme.index("## For CI")
    ci = readme[start:readme.index("\n## ", start)]
    assert "--allow-remote-db" in ci and "--scrape certctl" in ci


def test_a_fast_job_lints_and_runs_the_unit_tests_beside_the_smoke_suite():
    job = _jobs()["checks"]
    commands = [c for s in job["steps"] if "run" in s for c in _commands(s["run"])]
    assert commands == [("make", "install"), ("make", "test-fast")]
    assert job["timeout-minutes"] <= 20 and "if" not in job  # on every pull request


@pytest.mark.parametrize("command, documented, expected", [
    (("workbench", "run", "agent_storm", "--profile", "smoke"),
     ("workbench", "run", "agent_storm", "--profile", "smoke"), True),
    (("workbench", "run", "agent_storm", "--profile", "smoke", "--target", ANY),
     ("workbench", "run", "agent_storm", "--profile", "smoke"), False),
    (("workbench", "run", "agent_storm", "--profile", "canonical"),
     ("workbench", "run", "agent_storm", "--profile", "smoke"), False),
])
def test_the_matcher_tells_documented_from_undocumented(command, documented, expected):
    assert _matches(command, documented) is expected


def test_command_extraction_normalizes_paths_variables_and_alternatives():
    script = ('CERTCTL_TOKEN=<key> .venv/bin/workbench run x --target "$CERTCTL_BASE"  # go\n'
              "echo done\nmake bench\n")
    assert _commands(script) == [("workbench", "run", "x", "--target", ANY), ("make", "bench")]
    assert _expand(("workbench", "target", "up|down", "[--port", "8443]")) == [
        ("workbench", "target", "up"), ("workbench", "target", "down")]
