"""One exception type for every refusal the user must act on.

The CLI prints ``error: <message>`` on one line and exits 2; the message names what is wrong
and how to fix it.
"""


class WorkbenchError(Exception):
    """A problem the user can fix; ``str(err)`` is a complete one-line explanation."""


class TargetExited(RuntimeError):
    """The server the workbench started exited during a run: a failed run (exit 1), not bad
    input; ``str(err)`` names the exit and the tail of its log."""
