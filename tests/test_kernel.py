"""One kernel for a command's notebooks: a real IPC kernel executing real notebooks through
papermill, its namespace reset between them, its preload, its stop; and the fast exit."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import nbformat
import papermill
import psutil
import pytest

from workbench.run.kernel import Kernel


def notebook(path: Path, *sources: str) -> Path:
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(s)
                                                   for s in sources]), path)
    return path


def outputs(path: Path) -> list[str]:
    return [o.get("text", "") for c in nbformat.read(path, as_version=4).cells
            for o in c.get("outputs", [])]


def test_notebooks_share_one_ipc_kernel_each_in_an_empty_namespace(tmp_path, capfd):
    first = notebook(tmp_path / "first.ipynb", "import os\nleft_behind = 1\nprint(os.getpid())")
    second = notebook(tmp_path / "second.ipynb",
                      "import os, sys\nprint(os.getpid())\n"
                      "print('left_behind' in globals(), 'preloaded' in sys.modules)")
    (tmp_path / "preloaded.py").write_text("")
    env = os.environ | {"PYTHONPATH": str(tmp_path)}
    with Kernel(tmp_path, env, preload="import preloaded") as kernel:
        connection = json.loads(Path(kernel.manager.connection_file).read_text())
        assert connection["transport"] == "ipc"  # Unix sockets: no port, nothing on TCP
        assert Path(connection["ip"]).parent == kernel.folder
        assert oct(kernel.folder.stat().st_mode & 0o777) == "0o700"
        pid = kernel.manager.provisioner.process.pid
        assert not [c for c in psutil.Process(pid).net_connections(kind="inet")
                    if c.status == psutil.CONN_LISTEN]
        for nb in (first, second):
            papermill.execute_notebook(str(nb), str(nb.with_suffix(".out.ipynb")),
                                       kernel_name="python3", km=kernel.prepare(),
                                       progress_bar=False)
        folder = kernel.folder
    assert outputs(tmp_path / "first.out.ipynb") == [f"{pid}\n"]
    assert outputs(tmp_path / "second.out.ipynb") == [f"{pid}\nFalse True\n"]
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert not folder.exists() and kernel.clients == []
    assert "without encryption" not in capfd.readouterr().err


def test_a_kernel_that_was_never_used_is_killed_even_after_an_error(tmp_path):
    with pytest.raises(RuntimeError), Kernel(tmp_path) as kernel:  # noqa: PT012
        pid = kernel.manager.provisioner.process.pid
        raise RuntimeError("bad input, before any notebook")
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


@pytest.mark.parametrize("thread", [False, True])
def test_exit_now_runs_atexit_flushes_and_keeps_the_exit_code(tmp_path, thread):
    marker = tmp_path / "atexit"
    code = textwrap.dedent(f"""
        import atexit, sys, threading, time
        from workbench.fastexit import exit_now
        atexit.register(lambda: open({str(marker)!r}, "w").write("ran"))
        if {thread}:  # a working thread: the ordinary exit waits for it
            threading.Thread(target=lambda: (time.sleep(0.3), print("thread done"))).start()
        sys.stdout.write("unflushed output")
        exit_now(3)
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 3
    assert done.stdout.startswith("unflushed output")
    assert ("thread done" in done.stdout) is thread
    assert marker.read_text() == "ran"
