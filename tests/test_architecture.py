"""The shape of the code: no import cycles in workbench/ or benchmarks/, no benchmark on tests/.

Imports are read from the source (``ast``), so an import inside a function counts as much as
one at the top: a cycle hidden in a function still ties the modules together.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("workbench", "benchmarks")


def module_files(packages: tuple[str, ...] = PACKAGES) -> dict[str, Path]:
    """``{dotted module name: file}`` of every module in ``packages`` (``__init__`` as the
    package itself)."""
    out = {}
    for package in packages:
        for path in sorted((ROOT / package).rglob("*.py")):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            out[name.removesuffix(".__init__")] = path
    return out


def imported_names(path: Path, module: str) -> set[str]:
    """Every dotted name ``path`` imports anywhere in it, relative imports resolved; ``from
    a.b import c`` yields both ``a.b`` and ``a.b.c`` (c may be a module)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def import_graph(packages: tuple[str, ...] = PACKAGES) -> dict[str, set[str]]:
    """Module -> the project modules it imports (a package's own submodules excepted: a
    package's ``__init__`` may gather them)."""
    files = module_files(packages)
    graph = {}
    for module, path in files.items():
        graph[module] = {name for name in imported_names(path, module)
                         if name in files and name != module
                         and not module.startswith(name + ".")}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as ``[a, b, ..., a]``, or None (depth-first search, white-grey-black)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: finished
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_checker_finds_a_cycle_hidden_in_a_function(tmp_path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from pkg import b\n")
    (pkg / "b.py").write_text("def f():\n    from . import c\n")
    (pkg / "c.py").write_text("import pkg.a\n")
    graph = {}
    for name in ("a", "b", "c"):
        module = f"pkg.{name}"
        graph[module] = {n for n in imported_names(pkg / f"{name}.py", module)
                         if n in ("pkg.a", "pkg.b", "pkg.c") and n != module}
    assert find_cycle(graph) == ["pkg.a", "pkg.b", "pkg.c", "pkg.a"]
    assert find_cycle({"x": {"y"}, "y": set()}) is None


def test_no_import_cycle_in_workbench_or_benchmarks():
    graph = import_graph()
    assert len(graph) > 40  # the checker sees the code base, not an empty folder
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_benchmarks_and_the_package_do_not_import_the_tests():
    for module, path in module_files().items():
        tests = sorted(n for n in imported_names(path, module)
                       if n == "tests" or n.startswith("tests."))
        assert not tests, f"{module} imports {', '.join(tests)}: move what it needs out of tests/"


def test_the_core_names_no_scenario():
    """What a scenario owns reaches the run, the capacity search and the notebooks through its
    hooks (workbench/scenarios/__init__.py), so adding one edits none of them."""
    names = [p.stem for p in (ROOT / "workbench" / "scenarios").glob("*.py")
             if not p.stem.startswith("_")]
    assert len(names) > 3
    for module in ("run/scenario", "capacity/runner", "report/notebook", "run/launcher"):
        text = (ROOT / "workbench" / f"{module}.py").read_text()
        named = sorted(name for name in names if name in text)
        assert not named, f"workbench/{module}.py names {', '.join(named)}: use a hook"


# The executor registry: the only modules that may branch on an executor's name
EXECUTOR_REGISTRY = ("workbench/driver/spec.py", "workbench/driver/executors/")


def executor_aliases(names: set[str], classes: set[str]) -> set[str]:
    """Module-level names bound to an executor's name anywhere in workbench/ (``X = "..."`` or
    ``X = SomeExecutor.name``): a branch on one of them is a branch on the name."""
    out = set()
    for path in (ROOT / "workbench").rglob("*.py"):
        for node in ast.parse(path.read_text(), str(path)).body:
            if not isinstance(node, ast.Assign):
                continue
            value = node.value
            named = (isinstance(value, ast.Constant) and value.value in names) or (
                isinstance(value, ast.Attribute) and value.attr == "name"
                and isinstance(value.value, ast.Name) and value.value.id in classes)
            if named:
                out.update(t.id for t in node.targets if isinstance(t, ast.Name))
    return out


def executor_branches(source: str, names: set[str], aliases: set[str]) -> list[str]:
    """Where ``source`` compares with an executor's name, keys a dict literal or matches a
    case on one: ``line: text`` of each."""

    def is_name(node: ast.AST) -> bool:
        return ((isinstance(node, ast.Constant) and node.value in names)
                or (isinstance(node, ast.Name) and node.id in aliases)
                or (isinstance(node, ast.Attribute) and node.attr in aliases))

    def mentions(node: ast.AST) -> bool:  # the name, or a tuple/list/set holding it
        if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            return any(is_name(e) for e in node.elts)
        return is_name(node)

    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Compare):
            hit = any(mentions(n) for n in (node.left, *node.comparators))
        elif isinstance(node, ast.Dict):
            hit = any(k is not None and is_name(k) for k in node.keys)
        elif isinstance(node, ast.MatchValue):
            hit = is_name(node.value)
        else:
            continue
        if hit:
            found.append(f"{node.lineno}: {ast.get_source_segment(source, node)}")
    return found


def _registry_names() -> tuple[set[str], set[str]]:
    from workbench.driver import spec

    classes = set(spec._REGISTRY.values())
    return set(spec._REGISTRY), {c.__name__ for c in classes}


def test_the_executor_checker_finds_a_branch_on_a_name():
    names, aliases = {"constant-vus", "agent-fleet"}, {"CONSTANT_VUS"}
    source = ("if spec.executor == 'agent-fleet':\n    pass\n"
              "closed = kind in (CONSTANT_VUS, 'x')\n"
              "unit = {'constant-vus': 1}[kind]\n"
              "match kind:\n    case 'agent-fleet':\n        pass\n"
              "ok = s.open_loop and 'agent-fleet-ish' == x\n")
    assert [hit.split(":")[0] for hit in executor_branches(source, names, aliases)] == [
        "1", "3", "4", "6"]


def test_nothing_branches_on_an_executor_name_outside_the_registry():
    """Each executor owns its facts (open loop, run time, rates, clients, capacity unit, its
    scenario parameters): the rest of the code asks the registry, never names one."""
    names, classes = _registry_names()
    assert {"constant-arrival-rate", "constant-vus", "scripted"} <= names
    aliases = executor_aliases(names, classes)
    assert {"ARRIVAL_RATE", "CONSTANT_VUS", "AGENT_FLEET"} <= aliases  # the scenarios' names
    branches = []
    for path in sorted((ROOT / "workbench").rglob("*.py")):
        where = path.relative_to(ROOT).as_posix()
        if where.startswith(EXECUTOR_REGISTRY):
            continue
        branches += [f"{where}:{hit}" for hit in executor_branches(path.read_text(), names,
                                                                   aliases)]
    assert not branches, ("branches on an executor's name; ask its class (spec.executor_type, "
                          "executor_named) instead:\n" + "\n".join(branches))


def test_every_spec_field_is_shared_or_some_executor_s_own():
    """An executor's own DriveSpec fields are declared by it (k6: its config type), so a
    field added for a new executor is found where that executor is."""
    from dataclasses import fields

    from workbench.driver import spec

    declared = {f for kind in spec._REGISTRY.values() for f in kind.fields}
    undeclared = {f.name for f in fields(spec.DriveSpec)} - set(spec.SHARED_FIELDS) - declared
    assert not undeclared, f"DriveSpec fields no executor declares: {sorted(undeclared)}"
    unknown = declared - {f.name for f in fields(spec.DriveSpec)}
    assert not unknown, f"executors declare fields DriveSpec lacks: {sorted(unknown)}"
