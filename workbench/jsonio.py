"""The one way the workbench writes JSON: stable bytes, written whole or not at all.

Every JSON file the workbench writes (``spec.json``, ``shard.json``, ``result.json``,
``record.json``, committed baselines, the suite's ``summary.json``, the target's state) goes
through :func:`write_json`, so each has the same layout (:func:`dumps`) and no reader ever sees
half a file: the text goes to a temporary file in the same folder, is flushed to disk, and then
takes its name in one step. The temporary name is unguessable and created exclusively, never
through a link, so nothing planted in a shared folder is written through or moved into place.
Other writers (Parquet) get the same temporary file through :func:`replacing`.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from workbench.errors import WorkbenchError


def dumps(data: Any) -> str:
    """Sorted keys, one-space indent, no NaN or infinity (not JSON), a trailing newline."""
    return json.dumps(data, indent=1, sort_keys=True, allow_nan=False) + "\n"


def write_json(path: Path, data: Any, *, exclusive: bool = False, mode: int | None = None
               ) -> None:
    """Write ``data`` to ``path`` atomically, creating its folder.

    ``exclusive``: never replace an existing file (records are immutable); the temporary file
    takes the name with ``os.link``, which fails if the name exists, so there is no
    check-then-write race. ``mode``: the file's permissions from the start (e.g. ``0o600`` for
    a file no other user may read), else the usual ``0o666`` less the umask.
    """
    text = dumps(data)  # before touching the disk: unserializable data leaves nothing behind
    write_text(path, text, exclusive=exclusive, mode=mode)


def write_text(path: Path, text: str, *, exclusive: bool = False, mode: int | None = None
               ) -> None:
    """Write ``text`` to ``path`` atomically (as :func:`write_json`): any generated file, such
    as a Markdown table or an HTML report, is whole or absent, never half-written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = create_temporary(path, 0o666 if mode is None else mode)
    try:
        with os.fdopen(fd, "w") as fh:
            if mode is not None:
                os.fchmod(fh.fileno(), mode)  # exactly ``mode``, whatever the umask
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        if exclusive:
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise WorkbenchError(f"{path} already exists; records are immutable") from None
        else:
            os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def replacing(path: Path) -> Iterator[str]:
    """A file name to write ``path``'s new content to, for a writer that opens files by name
    (pyarrow): ``/proc/self/fd/N`` of a temporary file created as :func:`write_text`'s is, so
    that the writer reaches that file whatever happens to its name meanwhile. The file takes
    ``path``'s name when the block ends, and is removed if it raises."""
    path = Path(path)
    fd, tmp = create_temporary(path, 0o666)
    try:
        yield f"/proc/self/fd/{fd}"
        os.replace(tmp, path)
    finally:
        os.close(fd)
        tmp.unlink(missing_ok=True)


def create_temporary(path: Path, mode: int) -> tuple[int, Path]:
    """A new file beside ``path`` under an unguessable name: created here, never a name
    someone else made (``O_EXCL``) and never through a link (``O_NOFOLLOW``)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    while True:
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
        try:
            return os.open(tmp, flags, mode), tmp
        except FileExistsError:  # taken: by chance, or planted; draw another name
            continue
