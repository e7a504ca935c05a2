"""The repository's own promises: dependency lists agree and cover every import, the lock pins
them and the record names it, notebooks are clean and parameterized."""

import ast
import hashlib
import re
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import nbformat
import pytest

from workbench.report import machine

ROOT = Path(__file__).resolve().parents[1]


def _name(requirement: str) -> str:
    return re.sub(r"[-_.]+", "-",
                  re.split(r"[<>=!~\[ ]", requirement.strip(), maxsplit=1)[0].lower())


def _project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def test_environment_yml_lists_the_same_dependencies_as_pyproject():
    project = _project()
    wanted = {_name(r) for r in project["dependencies"]
              + [r for extra in project["optional-dependencies"].values() for r in extra]}
    text = (ROOT / "environment.yml").read_text().split("dependencies:", 1)[1]
    env_lines = [ln.strip()[2:] for ln in text.splitlines() if ln.strip().startswith("- ")]
    listed = {_name(ln) for ln in env_lines if not ln.startswith(("python", "pip", "-e"))}
    listed.discard("")
    assert listed == wanted


def test_product_card_packages_are_required():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = {_name(r) for r in project["dependencies"]}
    assert {"jupyterlab", "papermill", "pandas", "matplotlib", "httpx", "sqlalchemy"} <= names


@pytest.mark.parametrize("path", sorted((ROOT / "notebooks").glob("*.ipynb")), ids=lambda p: p.name)
def test_committed_notebooks_have_no_outputs_and_a_parameters_cell(path):
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code)
    assert sum("parameters" in c.metadata.get("tags", []) for c in code) == 1


def test_required_top_level_layout_exists():
    for name in ("notebooks", "workbench", "seed", "baselines", "environment.yml", "README.md",
                 "Makefile", ".ci/run"):
        assert (ROOT / name).exists(), name
    ignored = (ROOT / ".gitignore").read_text().split()
    assert "runs/" in ignored and ".workbench/" in ignored


def _imports(path: Path) -> list[tuple[str, bool]]:
    """Top-level third-party modules a file imports, and whether at module level."""
    tree = ast.parse(path.read_text())
    nested = {id(n) for f in ast.walk(tree) if isinstance(f, ast.FunctionDef | ast.AsyncFunctionDef)
              for n in ast.walk(f)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        for name in names:
            top = name.split(".")[0]
            if top not in sys.stdlib_module_names and top not in ("workbench", "tests",
                                                                  "benchmarks"):
                found.append((top, id(node) not in nested))
    return found


def test_every_third_party_import_is_declared():
    """Each import is a declared dependency; an extra's only inside the function needing it."""
    project = _project()
    required = {_name(r) for r in project["dependencies"]}
    extras = {name: {_name(r) for r in reqs}
              for name, reqs in project["optional-dependencies"].items()}
    dists = {m: {_name(d) for d in ds} for m, ds in metadata.packages_distributions().items()}
    problems = []
    for folder in ("workbench", "tests", "benchmarks"):
        allowed = required | (set().union(*extras.values()) if folder != "workbench" else set())
        for path in sorted((ROOT / folder).rglob("*.py")):
            for module, top_level in _imports(path):
                owners = dists.get(module, {f"(no installed distribution has {module})"})
                if owners & allowed:
                    continue
                if folder == "workbench" and owners & set().union(*extras.values()):
                    if top_level:
                        problems.append(f"{path.relative_to(ROOT)}: {module} is an extra, "
                                        "imported at module level")
                    continue
                problems.append(f"{path.relative_to(ROOT)}: {module} ({', '.join(owners)}) "
                                "is not declared")
    assert not problems, problems


def test_the_lock_pins_every_dependency_and_make_install_applies_it():
    text = (ROOT / machine.LOCK_FILE).read_text()
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    assert all(re.fullmatch(r"[A-Za-z0-9_.-]+==[A-Za-z0-9_.+!-]+", ln) for ln in lines), lines
    pinned = {_name(name) for name in machine.lock_pins(text)}
    project = _project()
    declared = {_name(r) for r in project["dependencies"]
                + [r for extra in project["optional-dependencies"].values() for r in extra]}
    assert declared <= pinned, declared - pinned
    assert len(pinned) == len(lines)  # one pin a package
    makefile = (ROOT / "Makefile").read_text()
    stamp = re.search(r"^\$\(STAMP\): (.*)$", makefile, re.MULTILINE).group(1).split()
    assert machine.LOCK_FILE in stamp  # a new lock reinstalls
    assert re.search(r"pip install .*-c requirements\.lock -e '\.\[test,cluster\]'", makefile)


def test_the_record_names_the_lock_and_whether_the_installed_stack_matches_it(tmp_path):
    facts = machine.software()["lock"]
    data = (ROOT / machine.LOCK_FILE).read_bytes()
    assert facts["file"] == "requirements.lock"
    assert facts["sha256"] == hashlib.sha256(data).hexdigest()
    assert facts["pins"] == len(machine.lock_pins(data.decode()))
    assert facts["matches"] and facts["mismatched"] == [], facts["mismatched"]  # make install
    (tmp_path / "requirements.lock").write_text("numpy==0.0.1\nno-such-package==1.0\n")
    other = machine.lock(tmp_path)
    assert not other["matches"] and other["mismatched"] == [
        "no-such-package missing (lock 1.0)", f"numpy {metadata.version('numpy')} (lock 0.0.1)"]
    assert machine.lock(tmp_path / "nowhere") is None


@pytest.mark.slow
def test_cluster_without_distributed_is_one_clear_error_before_any_load(tmp_path):
    code = ("import sys; sys.modules['distributed'] = None\n"  # as if the extra were absent
            "from workbench.cli import main\n"
            "sys.exit(main(['drive', 'http://127.0.0.1:9/', '--rate', '5', '--duration', '1',"
            " '--cluster', 'tcp://127.0.0.1:9', '--out', sys.argv[1]]))\n")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "run")],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert out.stderr == ("error: --cluster needs Dask distributed, which is not installed; "
                          "install the cluster extra: pip install -e '.[cluster]'\n")

