"""One Jupyter kernel for the notebooks a command runs, over IPC (Unix sockets), never TCP.

papermill starts a kernel per notebook, over TCP on loopback (ipykernel then warns on every
start that its traffic is unencrypted), and waits for the interpreter's teardown at the end.
:class:`Kernel` starts one with IPC transport, its sockets and connection file in a private
folder (mode 0700), and hands it to papermill for every notebook of the command: ``workbench
run all`` pays the kernel's start and the notebooks' imports (pandas, SciPy, Matplotlib) once,
not once per scenario. It starts when the command does and imports what the notebooks need
(:data:`PRELOAD`) while the command checks its input and the target, before any load (nothing
is measured then; the notebooks' cells queue behind it). Between notebooks the user namespace
is reset (``%reset -f``; modules stay imported: that is the point), so no notebook sees
another's names. At the end the kernel is killed once its work is done (every output was
received, every file written); after an error or an interrupt during a notebook it is asked to
shut down instead, so what it was writing is finished.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path

from workbench.errors import WorkbenchError
from workbench.paths import project_root

KERNEL_NAME = "python3"
START_TIMEOUT_S = 60.0
RESET = "get_ipython().run_line_magic('reset', '-f')"  # between notebooks
PRELOAD_TIMEOUT_S = 600.0  # a loaded machine imports slowly; past this papermill waits on
# what the notebooks import, up to their figures: loaded before their cells run
PRELOAD = "import workbench.run.scenario, workbench.report.plots"
CAPACITY_PRELOAD = PRELOAD + ", workbench.capacity.runner"  # a capacity search's notebook's too
# "tty" or "lines": the kernel writes the driver's live line to the command's terminal too
# (workbench.driver.launch.LiveLine reads it; this module imports nothing heavy, so both can)
PROGRESS_ENV = "WORKBENCH_PROGRESS"
# --target-pid reaches the notebooks through the kernel's environment (defined here, not in
# workbench.run.scenario, so that the command sets it without importing pandas before the kernel
# starts)
TARGET_PID_ENV = "WORKBENCH_TARGET_PID"


class Kernel:
    """A started IPC kernel (``with Kernel(cwd, env) as kernel:``); ``manager`` goes to
    papermill as ``km``. :meth:`prepare` before each notebook resets the namespace after the
    first and closes the clients earlier notebooks left open (the manager remembers each client
    opened on it). jupyter_client is imported on :meth:`start`: a command starts its kernel
    before it loads anything else."""

    def __init__(self, cwd: Path, env: Mapping[str, str] | None = None,
                 preload: str | None = None) -> None:
        self.cwd = Path(cwd)
        self.env = dict(os.environ if env is None else env)
        self.preload = preload
        self.folder: Path | None = None
        self.manager = None
        self.clients: list = []
        self._preloading = None  # the client the preload went out on, until it is answered
        self.notebooks = 0

    def start(self) -> Kernel:
        from jupyter_client.manager import AsyncKernelManager

        self.folder = Path(tempfile.mkdtemp(prefix="workbench-kernel-"))  # 0700: only ours
        self.manager = AsyncKernelManager(kernel_name=KERNEL_NAME, transport="ipc",
                                          connection_file=str(self.folder / "kernel.json"),
                                          ip=str(self.folder / "ipc"))
        make_client = self.manager.client

        def client(**kwargs):
            self.clients.append(make_client(**kwargs))
            return self.clients[-1]

        self.manager.client = client
        _run_sync(self.manager.start_kernel)(
            cwd=str(self.cwd), env=self.env,
            extra_arguments=["--HistoryManager.hist_file=:memory:"])  # as nbclient starts one
        if self.preload:
            self._preloading = _run_sync(self._send)(self.preload)
        return self

    async def _send(self, code: str):
        """Queue ``code`` in the kernel; returns the client it was sent on (kept open until
        the kernel answers: a socket closed first would drop the request)."""
        client = self.manager.client()
        client.start_channels(hb=False)  # no heartbeat thread: it lives a moment
        client.execute(code, silent=True, store_history=False)
        return client

    def prepare(self):
        """The manager for the next notebook, its namespace empty (the first notebook's cells
        would wait for the preload anyway: it waits here)."""
        if self.manager is None:
            raise WorkbenchError("the kernel was not started")
        if self._preloading is not None:
            _run_sync(self._answered)(self._preloading)
            self._preloading = None
        self._close_clients()
        if self.notebooks:
            _run_sync(self._execute)(RESET)
        self.notebooks += 1
        return self.manager

    @staticmethod
    async def _answered(client) -> None:
        """Wait for the reply to what ``client`` sent (a failed preload shows again in the
        notebook cell that needs what it imports; a kernel that never answers, in papermill)."""
        try:
            await client.shell_channel.get_msg(timeout=PRELOAD_TIMEOUT_S)
        except Exception:  # noqa: BLE001 - queue.Empty on a timeout; papermill reports the rest
            pass

    async def _execute(self, code: str) -> None:
        """Run ``code`` and wait for its reply on the shell channel: the kernel is up and idle
        between notebooks, so no readiness handshake (``wait_for_ready`` costs 0.2 s or more:
        it waits for IOPub to fall silent)."""
        client = await self._send(code)
        try:
            reply = await client.shell_channel.get_msg(timeout=START_TIMEOUT_S)
        except Exception:  # noqa: BLE001 - queue.Empty on a timeout
            reply = {"content": {"status": "timeout", "evalue": f"no reply in "
                                                               f"{START_TIMEOUT_S:g} s"}}
        finally:
            self._close_clients()
        if reply["content"]["status"] != "ok":
            raise WorkbenchError(f"the kernel could not run {code!r}: "
                                 f"{reply['content'].get('evalue')}")

    def _close_clients(self) -> None:
        while self.clients:
            self.clients.pop().stop_channels()

    def stop(self, now: bool = True) -> None:
        """Kill the kernel (``now``), or ask it to shut down and wait."""
        if self.manager is not None:
            self._close_clients()
            if _run_sync(self.manager.is_alive)():
                _run_sync(self.manager.shutdown_kernel)(now=now)
            self.manager = None
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None

    def __enter__(self) -> Kernel:
        return self.start()

    def __exit__(self, exc_type, *_) -> None:
        self.stop(now=exc_type is None or not self.notebooks)


def _run_sync(coroutine_function):
    """jupyter_core's ``run_sync``: the event loop nbclient drives the kernel on."""
    from jupyter_core.utils import run_sync

    return run_sync(coroutine_function)


def for_terminal(preload: str = PRELOAD) -> Kernel:
    """The kernel for the notebooks a command runs from this terminal, preloading
    :data:`PRELOAD` (a capacity search: :data:`CAPACITY_PRELOAD`); the driver's live line is
    written in the terminal's way (start it: ``with for_terminal() as kernel``)."""
    return Kernel(project_root(), os.environ | {
        PROGRESS_ENV: "tty" if sys.stderr.isatty() else "lines"}, preload=preload)
