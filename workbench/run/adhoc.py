"""An ad-hoc ``workbench drive`` run's record and report, as a scenario run has them.

After the driver wrote ``result.json`` and ``requests.parquet``, :func:`finish` writes
``record.json`` (scenario ``adhoc``, its parameters, the target as far as it can be told, the
validity, the thresholds when given), the CI-native exports beside it and ``report.html``,
all through the one report path (:mod:`workbench.report.reporting`): the standard tables, figures
and record context a scenario's report has. The page is written without papermill: an ad-hoc run
has no notebook to keep, and a kernel would add seconds to a command meant to be as quick as
``vegeta attack``.

No secret reaches any of these files: header values, the query string and the body are
recorded as a hash (so two runs with different ones do not compare), never as text.
"""

from __future__ import annotations

import hashlib
import ssl
from collections.abc import Mapping
from pathlib import Path

import httpx
import pandas as pd

from workbench.analyse import analysis
from workbench.driver import DriveSpec, load_result
from workbench.jsonio import write_text
from workbench.report import reporting
from workbench.target.preflight import target_identity

SCENARIO = "adhoc"
REPORT_FILE = reporting.REPORT_FILE


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def parameters(spec: DriveSpec) -> dict:
    """What the run did, comparable and free of secrets: the request's method and path, the
    hashes of its query, body and header values, and the load's settings."""
    [template] = spec.templates
    path, _, query = template.path.partition("?")
    return {
        "method": template.method, "path": path,
        "query_sha256": _digest(query) if query else None,
        "body_sha256": _digest(template.body) if template.body else None,
        "headers": sorted(name.lower() for name, _ in template.headers),
        "headers_sha256": _digest(repr(sorted(template.headers))) if template.headers else None,
        "rate": spec.rate, "duration_s": spec.duration_s, "max_vus": spec.max_vus,
        "timeout_s": spec.timeout_s, "protocol": spec.protocol,
    }


def identify(base_url: str, verify: object = True) -> dict:
    """The target as far as it can be told without a token: certctl (or the workbench's
    stand-in) answers ``/api/v1/version``; anything else is ``unknown``."""
    facts = {"url": base_url, "kind": "unknown", "version": None, "commit": None,
             "modified": None, "dsn": None, "commit_date": None}
    try:
        with httpx.Client(verify=verify, timeout=3.0) as client:  # type: ignore[arg-type]
            answer = client.get(base_url.rstrip("/") + "/api/v1/version")
        said = target_identity(answer.json() if answer.status_code == 200 else None)
    except (httpx.HTTPError, ValueError):
        return facts
    if said["version"]:
        facts |= {"kind": "stand-in" if said.pop("standin") else "certctl"} | said
    return facts


def measure(out_dir: Path, spec: DriveSpec, thresholds: Mapping | None,
            target: Mapping) -> reporting.Measured:
    """What the drive in ``out_dir`` measured: its result, requests, analysis and verdicts."""
    result = load_result(out_dir)
    requests = analysis.open_requests(out_dir)
    analysed = analysis.analyse(requests, SCENARIO, result.get("offered_rate"), spec.run_s,
                                reported=result)
    verdicts = analysis.evaluate_thresholds(requests, dict(thresholds or {}))
    return reporting.Measured(result, requests, analysed, verdicts,
                              reporting.title(SCENARIO, target, result.get("started_at")))


def build_record(out_dir: Path, spec: DriveSpec, thresholds: Mapping | None,
                 target: Mapping, calibration: Mapping | None = None
                 ) -> tuple[dict, reporting.Measured]:
    """The run's record (not yet written) and what it measured; ``calibration`` is the
    machine's, read around the drive (:func:`workbench.report.calibration.section`)."""
    m = measure(out_dir, spec, thresholds, target)
    context = reporting.record_context(out_dir.name, SCENARIO, parameters(spec), target,
                                       m.result, spec.max_vus, calibration=calibration)
    return reporting.record(m, context), m


def report_html(rec: Mapping, m: reporting.Measured) -> str:
    """The report page: the verdict, the figures, then the details tables (the standard ones
    and the drive's parameters)."""
    heading = f"workbench drive: {rec['parameters']['method']} {rec['parameters']['path']}"
    return reporting.html_page(heading, rec, m,
                               {"Parameters": pd.Series(rec["parameters"], dtype=object)})


def finish(out_dir: Path, spec: DriveSpec, thresholds: Mapping | None = None,
           calibration: Mapping | None = None) -> dict:
    """Write ``record.json``, the exports and ``report.html`` of a finished drive; returns the
    record. The target is identified after the load, so the probe never disturbs it."""
    out_dir = Path(out_dir)
    plain = spec.base_url.startswith("http://")  # no TLS: no CA bundle to load (20-50 ms)
    verify = (False if spec.insecure or plain else
              ssl.create_default_context(cafile=spec.ca_file) if spec.ca_file else True)
    target = identify(spec.base_url, verify)
    rec, m = build_record(out_dir, spec, thresholds, target, calibration)
    reporting.write(out_dir, rec, m)
    write_text(out_dir / REPORT_FILE, report_html(rec, m))
    return rec
