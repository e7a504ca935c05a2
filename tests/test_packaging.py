"""The repository's own promises: dependency lists agree, notebooks are clean and parameterized."""

import re
import tomllib
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[ ]", requirement.strip(), maxsplit=1)[0].lower()


def test_environment_yml_lists_the_same_dependencies_as_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = {_name(r) for r in project["dependencies"] + project["optional-dependencies"]["test"]}
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
