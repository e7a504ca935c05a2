"""The launcher: everything outside the notebook kernel, and the notebooks it runs.

``workbench run`` (:func:`execute`) and ``--find-capacity`` (:func:`execute_capacity`) check
their input and the target (:func:`prepare`, before any load), then have papermill execute a
notebook into ``runs/<run-id>/`` (:func:`execute_notebook`) and render its HTML report
(:func:`render_html`). Inside the kernel the notebook's cells call
:class:`workbench.run.scenario.Run` and :class:`workbench.capacity.runner.ScenarioCapacity`; this
module never runs there.

The notebooks are generated here too. Every scenario notebook is :func:`render` of its registry
entry: the scenario's title and description, a parameters cell (papermill's ``parameters`` tag)
holding the smoke profile and the default thresholds, then one call per step on a
:class:`~workbench.run.scenario.Run`, each after a markdown cell saying what it measures; the
capacity notebook is :func:`capacity_notebook`. ``workbench notebooks render`` writes them and
README's scenario table; ``--check`` fails when a committed file differs, as ``baseline render
--check`` does. Nothing in a notebook is written by hand, so nothing in one goes untested.
"""

from __future__ import annotations

import json
import sys
import textwrap
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from workbench import exitcodes, scenarios
from workbench.analyse import analysis
from workbench.capacity.runner import exit_code, scenario_options
from workbench.capacity.search import CAPACITY_FILE
from workbench.jsonio import write_text
from workbench.paths import notebooks_dir, project_root, runs_dir
from workbench.run.kernel import CAPACITY_PRELOAD, KERNEL_NAME, Kernel, for_terminal
from workbench.run.scenario import new_run_id, write_preflight
from workbench.scenarios import Scenario
from workbench.target import preflight

if TYPE_CHECKING:  # imported where used: under jsonschema it costs a kernel 0.5-2 s to load
    import nbformat

CAPACITY_NOTEBOOK = "capacity.ipynb"


# --- the papermill launcher --------------------------------------------------------------------


def prepare(scenario: str, profile: str, overrides: Mapping | None, target_url: str | None,
            ca_file: str | None, insecure: bool, strict: bool,
            identity: Mapping | None = None, label: str | None = None,
            check: Callable[[scenarios.Scenario, dict], object] | None = None
            ) -> tuple[scenarios.Scenario, dict, Mapping | None, Path]:
    """Everything before a run's notebook: parameters and thresholds checked (and ``check``,
    a caller's own), preflight once (unless ``identity`` says what an earlier check found),
    and a new run folder holding ``preflight.json``. Bad input and an unfit target are refused
    here, before any load. Returns the scenario, its parameters, the thresholds override and
    the run folder (named ``<run id>_<label or scenario>``)."""
    spec = scenarios.get(scenario)
    overrides = dict(overrides or {})
    thresholds = overrides.pop("thresholds", None)
    if thresholds is not None:
        analysis.parse_thresholds(thresholds)
    params = spec.params_for(profile, overrides)
    if check is not None:
        check(spec, params)
    if identity is None:
        target = spec.target(params, target_url, ca_file, insecure)
        identity = spec.check_target(target, spec.token(target), params, strict)  # before load
        for warning in identity["warnings"]:
            print(f"warning: {warning}", file=sys.stderr)
        if spec.needs_database:
            preflight.check_database(target, parents="fixture_parents" in spec.traps)
    run_dir = runs_dir() / new_run_id(label or scenario)
    run_dir.mkdir(parents=True)
    write_preflight(run_dir, spec.name, params, identity)
    return spec, params, thresholds, run_dir


def execute(scenario: str, profile: str, target_url: str | None = None,
            ca_file: str | None = None, insecure: bool = False,
            overrides: Mapping | None = None, strict: bool = False,
            seed_fixtures: bool = True, identity: Mapping | None = None,
            kernel: Kernel | None = None) -> tuple[Path, int]:
    """Run a scenario's notebook through papermill, then render the HTML report.

    Returns the run directory and an exit code (:mod:`workbench.exitcodes`).
    Bad input and an unfit target are refused before the notebook starts; certctl's traps are
    printed as warnings first (refused with ``strict``). What preflight found goes into the run
    folder, so the notebook does not check again. ``identity``: the target as ``workbench run
    all`` found it (checked once for every scenario); ``seed_fixtures=False`` only resets what
    an earlier run changed (``workbench run all`` seeds once). ``kernel``: one started for
    several runs (:func:`workbench.run.kernel.for_terminal`); None starts one for this run.
    """
    if kernel is None:
        with for_terminal() as own:  # started now: its imports overlap preflight
            return execute(scenario, profile, target_url, ca_file, insecure, overrides, strict,
                           seed_fixtures, identity, own)

    spec, params, thresholds, run_dir = prepare(scenario, profile, overrides, target_url,
                                                ca_file, insecure, strict, identity)
    out_nb = run_dir / spec.notebook
    started = time.monotonic()
    code = execute_notebook(spec.notebook, out_nb, {
        "target_url": target_url, "ca_file": ca_file, "insecure": insecure, "profile": profile,
        "run_dir": str(run_dir), "seed_fixtures": seed_fixtures, **params,
        **({"thresholds": thresholds} if thresholds is not None else {})}, kernel)
    print(f"[workbench] {scenario} ({profile}) took {time.monotonic() - started:.1f} s",
          file=sys.stderr)
    return run_dir, code


def execute_notebook(name: str, out_nb: Path, parameters: Mapping,
                     kernel: Kernel | None = None) -> int:
    """Run ``notebooks/<name>`` through papermill into ``out_nb`` (in ``kernel``, or a kernel
    of its own), then its HTML report beside it; its exit code (:mod:`workbench.exitcodes`:
    99 when a threshold was breached, 1 when a cell crashed)."""
    import papermill

    if kernel is None:
        with for_terminal() as own:
            return execute_notebook(name, out_nb, parameters, own)
    exporter = html_exporter()  # its imports before the notebook runs: nothing is measured yet
    code = exitcodes.PASSED
    try:
        papermill.execute_notebook(
            str(notebooks_dir() / name), str(out_nb), parameters=dict(parameters),
            kernel_name=KERNEL_NAME, km=kernel.prepare(), progress_bar=False,
            log_output=False, stdout_file=sys.stdout, stderr_file=sys.stderr,
            cwd=str(project_root()),
            # written once at the end (a failed one too), not twice a cell and every 30 s
            # while the load runs: this process stays quiet in the timed phase
            request_save_on_cell_execute=False)
    except papermill.PapermillExecutionError as exc:
        print(f"notebook failed: {exc.ename}: {exc.evalue.splitlines()[0] if exc.evalue else ''}",
              file=sys.stderr)
        code = exitcodes.for_exception(exc.ename)
    if out_nb.exists():
        render_html(out_nb, out_nb.parent / "report.html", exporter)
    return code


def html_exporter():
    """nbconvert's HTML exporter as the reports use it: code cells and prompts hidden."""
    from nbconvert import HTMLExporter

    return HTMLExporter(exclude_input=True, exclude_input_prompt=True,
                        exclude_output_prompt=True)


def render_html(notebook: Path, html: Path, exporter=None) -> None:
    """The executed notebook as HTML with code cells hidden, in the report's order: the
    verdict first, figures next, details after (:func:`workbench.report.notebook.report_cells`);
    the driver's live progress line is left out."""
    import nbformat

    from workbench.report.notebook import report_cells

    exporter = exporter or html_exporter()
    nb = nbformat.read(notebook, as_version=4)
    nb.cells = report_cells(nb.cells)
    body, _ = exporter.from_notebook_node(nb)
    write_text(html, body)  # whole or absent: a reader never sees half a report


def execute_capacity(scenario: str, profile: str, target_url: str | None, ca_file: str | None,
            insecure: bool, overrides: Mapping, options: Mapping,
            strict: bool = False, notebook_kernel: Kernel | None = None
            ) -> tuple[Path, int, str | None]:
    """``workbench run SCENARIO --find-capacity``: preflight once, then the capacity notebook
    through papermill (in ``notebook_kernel``, or one started here) into a new run folder, and
    its HTML report. Returns the run folder, the exit code (:func:`exit_code` once the notebook
    ran) and the conclusion (None when the notebook failed)."""
    if notebook_kernel is None:
        with for_terminal(CAPACITY_PRELOAD) as own:  # started now: its imports overlap preflight
            return execute_capacity(scenario, profile, target_url, ca_file, insecure,
                                    overrides, options, strict, own)

    _, _, thresholds, run_dir = prepare(
        scenario, profile, overrides, target_url, ca_file, insecure, strict,
        label=f"{scenario}_capacity",
        check=lambda spec, params: scenario_options(spec, params, options))  # before any load
    out_nb = run_dir / CAPACITY_NOTEBOOK
    code = execute_notebook(CAPACITY_NOTEBOOK, out_nb, {
        "scenario": scenario, "profile": profile, "target_url": target_url, "ca_file": ca_file,
        "insecure": insecure, "run_dir": str(run_dir), "params": overrides,
        "thresholds": thresholds, "options": dict(options)}, notebook_kernel)
    conclusion = None
    if (run_dir / CAPACITY_FILE).exists() and code == 0:
        doc = json.loads((run_dir / CAPACITY_FILE).read_text())
        conclusion = "\n".join(line for line in (doc.get("sentence"), doc.get("spread"),
                                                 doc.get("fleet")) if line)
        code = exit_code(doc["verdict"])
    return run_dir, code, conclusion


# --- the scenario notebooks --------------------------------------------------------------------

README_BEGIN = "<!-- scenario table: generated by `workbench notebooks render`; do not edit -->"
README_END = "<!-- end of scenario table -->"
_WIDTH = 96  # source lines in generated cells stay readable in JupyterLab


def _literal(value: Any) -> str:
    """A Python literal for a parameter value (strings in double quotes, as JSON writes them)."""
    return json.dumps(value) if isinstance(value, str) else repr(value)


def parameters_source(scenario: Scenario) -> str:
    """The parameters cell: where the run goes, the smoke profile, thresholds, the run folder."""
    smoke = scenario.defaults("smoke")
    lines = [
        f"# Parameters (papermill -p NAME VALUE, or `workbench run {scenario.name} -p NAME "
        "VALUE`).",
        "# Secrets are never parameters: the token comes from CERTCTL_TOKEN (or the target "
        "the",
        "# workbench started), the database DSN from CERTCTL_DSN (or that target).",
        "target_url = None  # None: " + (scenario.own_target.url_help if scenario.own_target
                                         else "what `workbench target up` started (stand-in or "
                                              "certctl)"),
        "ca_file = None  # CA certificate that signed the target's TLS certificate",
        "insecure = False  # skip TLS verification (explicit opt-in only)",
        'profile = "smoke"  # the profile the values below are; a run whose values differ '
        "records as custom",
    ]
    lines += [f"{p.name} = {_literal(smoke[p.name])}  # {p.help}" for p in scenario.parameters]
    note = "; " + scenario.threshold_help if scenario.threshold_help else ""
    if scenario.thresholds_for is None:
        lines.append(f"thresholds = {{  # k6 syntax{note}")
        lines += [f"    {json.dumps(metric)}: {json.dumps(list(exprs))},"
                  for metric, exprs in scenario.thresholds.items()]
        lines.append("}")
    else:  # the defaults depend on the parameters: the table they are taken from, as comments
        lines.append(f"thresholds = None  # None: the run's own from this table (k6 syntax){note}")
        lines += [f"#   {json.dumps(metric)}: {json.dumps(list(exprs))},"
                  for metric, exprs in scenario.thresholds.items()]
    lines += ["run_dir = None  # None: a new folder under runs/",
              "seed_fixtures = True  # False: only reset what earlier runs changed "
              "(`workbench run all`)"]
    return "\n".join(lines)


def _wrap(head: str, parts: list[str], tail: str, indent: int) -> list[str]:
    """``head`` + the comma-separated ``parts`` + ``tail``, wrapped between parts only."""
    text = head + ", ".join(part.replace(" ", "\0") for part in parts) + tail
    lines = textwrap.wrap(text, _WIDTH, subsequent_indent=" " * indent,
                          break_on_hyphens=False, break_long_words=False)
    return [line.replace("\0", " ") for line in lines]


def _run_source(scenario: Scenario) -> str:
    params = _wrap("params = {", [f'"{name}": {name}' for name in scenario.takes], "}",
                   len("params = {"))
    keywords = ["params", "profile=profile", "thresholds=thresholds", "target_url=target_url",
                "ca_file=ca_file", "insecure=insecure", "run_dir=run_dir",
                "seed_fixtures=seed_fixtures"]
    call = _wrap(f'run = Run("{scenario.name}", ', keywords, ")", len("run = Run("))
    return "\n".join(["from workbench.run.scenario import Run", "", *params, *call, "run"])


def _steps(scenario: Scenario) -> list[tuple[str, str, str]]:
    """(cell id, markdown, code) of every step after the parameters."""
    notes = "\n\n".join(f"**{n.title}.** {n.text}" for n in scenario.notes)
    closed = not scenario.open_loop
    return [
        ("target", "## Target\nPreflight, once per run: the target's identity, and each certctl "
                   "trap that would spoil this scenario as a warning with its fix. `workbench "
                   "run` checks before the notebook starts and leaves what it found in the run "
                   "folder (`preflight.json`); a notebook run by hand checks here.",
         _run_source(scenario)),
        ("seed", f"## {scenario.fixture_heading}\n{scenario.fixture_text}", "run.seed()"),
        ("drive", ("## Drive the load\nThe driver runs in its own process, not in this kernel: "
                  + ("closed loop, each virtual user starts its next iteration when the last "
                     "ended. " if closed else "open loop, each request at its precomputed "
                                               "intended start. ")
                  + scenario.drive_text).rstrip(), "run.drive()"),
        *([("notes", f"## What the responses said\n{notes}", "run.notes()")] if notes else []),
        ("summary", f"## Latency, load, errors and validity\n{scenario.latency_text} Then offered "
                    "against achieved load, errors by class, the validity checks (a run whose "
                    "driver was the bottleneck measured the driver, not the target), the "
                    "driver's own timing and per-window percentiles and rates.", "run.summary()"),
        ("figures", "## Figures\nLatency by percentile and its cumulative distribution per "
                    "endpoint, latency over time, offered against achieved throughput with "
                    "errors by class.", "run.figures()"),
        ("record", "## Baseline record\n`record.json` in the run folder, written before the "
                   "thresholds are judged, so a breached run keeps its record. A run whose "
                   "parameters differ from the profile it names is recorded as `custom`, with "
                   "the differences.", "run.record()"),
        ("verdict", "## Verdict\nPassed or breached, valid or invalid and why, the target, the "
                    "load, and per endpoint p50/p95/p99 against the thresholds (green within, "
                    "red beyond). The report opens on it.", "run.verdict()"),
        ("thresholds", "## Thresholds\nk6-style thresholds on this run's requests. A breach "
                       "raises here, so papermill, `workbench run` and CI exit non-zero.",
         "run.check_thresholds()"),
    ]


def render(scenario: Scenario) -> nbformat.NotebookNode:
    """The scenario's notebook, without outputs, from the one template."""
    import nbformat

    v4 = nbformat.v4
    cells = [v4.new_markdown_cell(f"# {scenario.title}\n\n{scenario.description}", id="title"),
             v4.new_code_cell(parameters_source(scenario), id="parameters",
                              metadata={"tags": ["parameters"]})]
    for cell_id, markdown, code in _steps(scenario):
        cells += [v4.new_markdown_cell(markdown, id=f"{cell_id}-text"),
                  v4.new_code_cell(code, id=cell_id)]
    return v4.new_notebook(cells=cells, metadata={
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"}})


def notebook_text(scenario: Scenario) -> str:
    """The notebook file's exact text."""
    import nbformat

    return nbformat.writes(render(scenario)) + "\n"


# --- README's scenario table -------------------------------------------------------------------

_SHORT = {"http_req_duration": "", "http_req_failed": "failed ", "http_req_server_error": "5xx ",
          "http_req_service_time": "service "}


def _duration(seconds: float) -> str:
    return f"{seconds / 60:g} min" if seconds >= 60 else f"{seconds:g} s"


def _load(scenario: Scenario, params: Mapping) -> str:
    return scenario.executor_type.load_text(params, scenario.sends,
                                            _duration(params["duration_s"]),
                                            scenario.size_param)


def _thresholds(scenario: Scenario) -> str:
    parts: dict[str, list[str]] = {}
    for t in analysis.parse_thresholds(scenario.thresholds):
        label = f"{t.tag + ' ' if t.tag else ''}{_SHORT[t.metric.split('{')[0]]}"
        parts.setdefault(label, []).append(t.expression)
    return "; ".join(f"{label}{' '.join(exprs)}" for label, exprs in parts.items())


def readme_table(names: Iterable[str] | None = None) -> str:
    """README's scenario table: each scenario's canonical load, fixtures and thresholds."""
    rows = ["| scenario | load (canonical) | fixtures (canonical) | thresholds (default) |",
            "|---|---|---|---|"]
    for name in names or scenarios.names():
        scenario = scenarios.get(name)
        canonical = scenario.defaults("canonical")
        sizes = scenario.fixture_sizes(canonical)
        fixtures = ", ".join(f"{n:,} {k.replace('_', ' ')}" for k, n in sizes.items()) or "none"
        rows.append(f"| `{name}` | {_load(scenario, canonical)} | {fixtures} | "
                    f"{_thresholds(scenario)} |")
    return "\n".join(rows)


def _with_table(readme: str) -> str:
    before, begin, rest = readme.partition(README_BEGIN)
    _, end, after = rest.partition(README_END)
    if not begin or not end:
        raise ValueError(f"README.md lacks the markers {README_BEGIN!r} ... {README_END!r}")
    return f"{before}{README_BEGIN}\n{readme_table()}\n{README_END}{after}"


def render_all(root: Path, check: bool = False) -> list[Path]:
    """Write every scenario notebook, the capacity notebook and README's table under ``root``;
    with ``check``, write nothing. Returns the files that were (or, with ``check``, would be)
    changed."""
    import nbformat

    wanted = {root / "notebooks" / scenarios.get(n).notebook: notebook_text(scenarios.get(n))
              for n in scenarios.names()}
    wanted[root / "notebooks" / CAPACITY_NOTEBOOK] = nbformat.writes(capacity_notebook()) + "\n"
    readme = root / "README.md"
    wanted[readme] = _with_table(readme.read_text())
    stale = [path for path, text in wanted.items()
             if not path.exists() or path.read_text() != text]
    if not check:
        for path in stale:
            path.write_text(wanted[path])
    return stale


# --- the capacity notebook ---------------------------------------------------------------------


def capacity_notebook():
    """The capacity notebook: a ``parameters`` cell, then one workbench call per cell. Cell
    ids name the report's parts: it opens on the title, the verdict, the figures and the
    steps (:data:`workbench.report.notebook.REPORT_FIRST`); the run, its fixtures and the search's
    log follow as details."""
    import nbformat

    v4 = nbformat.v4
    defaults = {"scenario": scenarios.DEFAULT, "profile": "smoke", "target_url": None,
                "ca_file": None, "insecure": False, "run_dir": None, "params": {},
                "thresholds": None, "options": {}}
    params = "\n".join(f"{k} = {v!r}" for k, v in defaults.items())
    cells = [
        v4.new_markdown_cell(
            "# Capacity search\n\nSteps of rising load against the scenario, each judged by "
            "its thresholds, its error limit and the saturation signs, on the fixture its load "
            "needs; then bisection between the last passing and the first failing step, and "
            "repeats at both ends. A driver-bound step is reported as such, never as the "
            "target's capacity.", id="title"),
        v4.new_code_cell(params, metadata={"tags": ["parameters"]}, id="parameters"),
        v4.new_markdown_cell(
            "## Details\nThe search as it ran: the run and its options, the first step's "
            "fixture, then each step as it was judged.", id="target-text"),
        v4.new_code_cell(
            "from workbench.capacity.runner import ScenarioCapacity\n\n"
            "cap = ScenarioCapacity(scenario, params, thresholds, target_url, ca_file, insecure,"
            "\n                       run_dir, profile, options)\ncap", id="target"),
        v4.new_code_cell("cap.seed()", id="seed"),
        v4.new_code_cell("conclusion = cap.search()  # each step printed as judged", id="search"),
        v4.new_markdown_cell(
            "## Verdict\nThe capacity, what fails first and at what load, the fixture it was "
            "measured with, and how it repeated.", id="verdict-text"),
        v4.new_code_cell("cap.verdict()", id="verdict"),
        v4.new_markdown_cell(
            "## Latency and throughput against load\nThe hockey stick: p50/p95/p99 of each "
            "step against its load with the threshold lines and the bracket; then sent and "
            "served requests/s.", id="figures-text"),
        v4.new_code_cell("cap.figures()", id="figures"),
        v4.new_markdown_cell("## Steps\nThe load, length and fixture of each step, what it "
                             "measured, the driver's lag and CPU, and why it failed.",
                             id="steps-text"),
        v4.new_code_cell("cap.steps()", id="steps"),
    ]
    nb = v4.new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    return nb
