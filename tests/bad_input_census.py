"""Census of the bad-input table: how a checkout answers every row of tests/test_bad_input.py.

    .venv/bin/python -m tests.bad_input_census [CHECKOUT]   # default: this checkout

Each row runs as a user would run it (``python -m workbench.cli``, the package imported from
CHECKOUT, a fresh sandbox and a listening loopback socket as target and database), and is
counted as: ``clean`` (exit 2, one ``error:`` line), ``usage`` (exit 2, argparse's usage block
then its error line), ``traceback``, ``exit 0`` or ``other``; beside it, whether the socket saw
a connection and whether anything was written. Not a test (pytest does not collect it): it
measures an older checkout the same way, for a before-and-after count.
"""

from __future__ import annotations

import os
import select
import shlex
import socket
import subprocess
import sys
import tempfile
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tests.test_bad_input import CASES, Sandbox, _tree


def classify(checkout: Path, argv: list[str], env: dict) -> tuple[str, bool, bool, str]:
    """(kind, connected, wrote, last stderr line) of one row against ``checkout``."""
    with tempfile.TemporaryDirectory() as tmp, socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        box = Sandbox(Path(tmp), listener)
        environ = {**os.environ, **box.env, "PYTHONPATH": str(checkout),
                   "WORKBENCH_DRIVER_PRIORITY": "off",
                   **{k: box.fill(v) for k, v in env.items()}}
        try:
            out = subprocess.run([sys.executable, "-m", "workbench.cli",
                                  *(box.fill(a) for a in argv)], capture_output=True, text=True,
                                 timeout=180, env=environ, cwd=Path(tmp) / "files")
            code, err = out.returncode, out.stderr
        except subprocess.TimeoutExpired:
            code, err = "timeout", ""
        connected = bool(select.select([listener], [], [], 0)[0])
        wrote = _tree(Path(tmp)) != box.before
    lines = err.strip().splitlines()
    if "Traceback" in err:
        kind = "traceback"
    elif code == 0:
        kind = "exit 0"
    elif code == 2 and len(lines) == 1 and lines[0].startswith("error:"):
        kind = "clean"
    elif code == 2 and lines and ": error: " in lines[-1]:
        kind = "usage"
    else:
        kind = "other"
    return kind, connected, wrote, (lines[-1] if lines else f"exit {code}")[:160]


def main(checkout: Path) -> None:
    with ThreadPoolExecutor(max_workers=3) as pool:
        rows = list(pool.map(lambda c: classify(checkout, c[0], c[3]), CASES))
    counts: Counter = Counter()
    for (argv, _, _, env), (kind, connected, wrote, last) in zip(CASES, rows, strict=True):
        counts[kind] += 1
        counts["connected"] += connected
        counts["wrote"] += wrote
        counts["exit 0, wrote"] += kind == "exit 0" and wrote
        flags = ("SENT " if connected else "") + ("WROTE " if wrote else "")
        shown = " ".join([*(f"{k}={v!r}" for k, v in env.items()), shlex.join(argv)])
        print(f"{kind:<9} {flags}{shown}\n          {last}")
    print(f"{len(CASES)} bad inputs: " + ", ".join(f"{k} {v}" for k, v in counts.items()))


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parents[1]))
