"""Per-request records: columns in memory for a moment, then Parquet and HDR histograms.

The hot path appends seven integers to seven ``array.array`` columns (C integers: no object per
request survives). Every ``FOLD_ROWS`` rows, and at each progress tick, the pending columns
become numpy arrays without a copy and are folded, in one vectorized pass, into the run's HDR
histograms (response time per tag and status class; service time; schedule lag) and per-tag
counts by error class. Every ``CHUNK_ROWS``
rows the columns go to a writer thread that appends them to ``requests.parquet`` as one row
group, so memory stays bounded however long the run. The file is written under a temporary
name and renamed when closed, so a reader never sees half a file.

Times are ``time.perf_counter_ns()`` values while recording; Parquet holds UTC epoch
nanoseconds (``epoch_offset_ns`` is added at write time: the anchor taken at run start).

``requests.parquet`` columns: ``intended_ns``, ``send_ns``, ``end_ns`` (null for a dropped
arrival), ``status``, ``bytes``, ``error`` (:data:`~workbench.driver.outcomes.ERROR_CLASSES`),
``tag``. A run with a new connection per request (``phases=True``) adds, after them, the
:data:`PHASE_COLUMNS`: ``connected_ns`` (TCP connect done), ``tls_done_ns`` (TLS handshake
done, request written) and ``first_byte_ns`` (first response byte), UTC epoch nanoseconds like
the others, null where the phase did not happen. Columns are only ever added, never changed.

The tables keyed by what a server says (response kinds, problem types) hold at most
:data:`MAX_KINDS_PER_TAG` entries per tag; later new ones are counted together as ``other``,
so a server varying a header or a problem type per response cannot grow the driver.
"""

from __future__ import annotations

import contextlib
import json
import threading
from array import array
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from workbench.analyse import hdr
from workbench.driver.outcomes import DROPPED, ERROR_CLASSES
from workbench.jsonio import replacing
from workbench.untrusted import printable

if TYPE_CHECKING:  # imported when the first chunk is written, not at start-up
    import pyarrow as pa

FOLD_ROWS = 8192
MAX_KINDS_PER_TAG = 32  # distinct kinds (or problem types) per tag; the rest count as OTHER
OTHER = "other"
CHUNK_ROWS = 16_384  # one Parquet row group; the writer's working set is a few of these
WARM_CHUNKS = 3  # scratch chunks before t0: the allocators' working set is reached by then
_CLASS_CODE = {"error": 0, "2xx": 2, "3xx": 3, "4xx": 4, "5xx": 5}
_CLASS_NAME = {code: name for name, code in _CLASS_CODE.items()}
# column name, array.array type code, numpy dtype
_COLUMNS = (("intended", "q", np.int64), ("send", "q", np.int64), ("end", "q", np.int64),
            ("status", "h", np.int16), ("nbytes", "i", np.int32), ("error", "b", np.int8),
            ("tag", "h", np.int16))
PHASE_COLUMNS = ("connected_ns", "tls_done_ns", "first_byte_ns")  # phases=True: after the rest
NO_PHASES = (0, 0, 0)  # a request none of whose phases happened (0 is written as null)


def schema(tags: list[str], phases: bool = False) -> pa.Schema:
    """The Parquet schema of ``requests.parquet`` (pyarrow is imported on first write)."""
    import pyarrow as pa

    return pa.schema([
        ("intended_ns", pa.int64()), ("send_ns", pa.int64()), ("end_ns", pa.int64()),
        ("status", pa.int16()), ("bytes", pa.int32()),
        ("error", pa.dictionary(pa.int8(), pa.string())),
        ("tag", pa.dictionary(pa.int16(), pa.string())),
    ] + [(name, pa.int64()) for name in (PHASE_COLUMNS if phases else ())])


def _new_key(table: dict, distinct: list[int], key: tuple, other: tuple) -> tuple[tuple, int]:
    """``key`` (new to ``table``) while its tag, ``key[0]``, has fewer than
    :data:`MAX_KINDS_PER_TAG` distinct keys, else ``other``; with its count so far."""
    if distinct[key[0]] < MAX_KINDS_PER_TAG:
        distinct[key[0]] += 1
        return key, 0
    return other, table.get(other, 0)


def _column(kind: pa.DataType, values: np.ndarray, nulls: np.ndarray | None = None) -> pa.Array:
    """An Arrow array over a numpy column (``nulls`` marks the missing values), built from its
    buffers: ``pa.array`` would import pandas (about 50 MiB) into the driver process."""
    import pyarrow as pa

    validity = (pa.py_buffer(np.packbits(~nulls, bitorder="little"))
                if nulls is not None and nulls.any() else None)
    return pa.Array.from_buffers(kind, len(values),
                                 [validity, pa.py_buffer(np.ascontiguousarray(values))])


def _strings(values: list[str]) -> pa.Array:
    """An Arrow string array from its buffers (offsets, UTF-8 bytes): see :func:`_column`."""
    import pyarrow as pa

    data = [v.encode() for v in values]
    offsets = np.zeros(len(data) + 1, np.int32)
    offsets[1:] = np.cumsum([len(b) for b in data])
    return pa.Array.from_buffers(pa.string(), len(data),
                                 [None, pa.py_buffer(offsets), pa.py_buffer(b"".join(data))])


class Recorder:
    """Columnar samples of one shard, their histograms and counters."""

    def __init__(self, tags: list[str], parquet_path: Path, phases: bool = False) -> None:
        self.tags = tags
        self.path = parquet_path
        self.epoch_offset_ns = 0
        self.phased = phases  # every sent request also gets a :meth:`phase` row
        self._new_columns()
        self._new_phase_columns()
        self._pieces: list[tuple[np.ndarray, ...]] = []
        self._piece_rows = 0
        # (tag code, class code) -> histogram of response time in us, made up front: creating
        # one costs milliseconds that must not fall inside the measured run
        self.response = {(t, c): hdr.new() for t in range(len(tags)) for c in _CLASS_NAME}
        self.response_all = hdr.new()
        self.service = hdr.new()
        self.lag = hdr.new()
        self.counts = np.zeros((len(tags), len(ERROR_CLASSES)), np.int64)
        self.kinds: dict[tuple[int, int, bytes | None], int] = {}  # (tag, 0, None): OTHER
        self.problems: dict[tuple[int, str], int] = {}  # (tag, problem type) -> count
        self._distinct_kinds = [0] * len(tags)  # distinct keys per tag, OTHER not counted
        self._distinct_problems = [0] * len(tags)
        self.timings: dict[str, array] = {}  # a script's own costs (e.g. signing), ns samples
        self.totals: list[dict[str, int | float]] = [{} for _ in tags]
        self.rows = 0
        self.first_intended_ns: int | None = None
        self.last_end_ns = 0
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="parquet")
        self._writing: Future | None = None
        self._writer = None  # pyarrow.parquet.ParquetWriter, opened on the first chunk
        self._sink = None  # warm_up's in-memory file while it runs
        self._lock = threading.Lock()
        self._file = contextlib.ExitStack()  # the file written, until close gives it its name

    def _new_columns(self) -> None:
        self._cols = tuple(array(code) for _, code, _ in _COLUMNS)
        (self._intended, self._send, self._end, self._status, self._nbytes, self._error,
         self._tag) = (c.append for c in self._cols)

    def _new_phase_columns(self) -> None:
        self._phase_cols = tuple(array("q") for _ in PHASE_COLUMNS)
        self._connected, self._tls_done, self._first_byte = (c.append for c in self._phase_cols)

    def warm_up(self) -> None:
        """Run the record, fold and write paths on scratch rows before t0, then forget them.

        Their first calls cost milliseconds (numpy set-up) and MiB of RSS that stay: the
        Parquet library's code, paged in on first use, and the allocators' arenas of both
        threads, which reach their working set only after a few chunks of the real shape
        (``benchmarks/bench_memory.py``). A fixed working set must neither delay the schedule
        nor count as memory per recorded request, so it is built here, into a scratch sink.
        """
        import pyarrow as pa

        # Arrow's default pool (mimalloc) held about 8 MiB more after the first chunks than the
        # system allocator, and grew with the first 50,000 rows: the driver's memory would
        # depend on run length for its first seconds
        pa.set_memory_pool(pa.system_memory_pool())
        self._sink = pa.BufferOutputStream()
        for i in range(WARM_CHUNKS * CHUNK_ROWS):
            if self.phased:
                self.phase(*NO_PHASES)
            self.record(i, i, i + 1000, 200, 0, 0, 0)
        self.fold()
        self._flush()
        self._writing.result()
        self._writing = None
        self._writer.close()
        self._writer = self._sink = None
        for hist in (*self.response.values(), self.response_all, self.service, self.lag):
            hist.reset()
        self.counts[:] = 0
        self.rows, self.first_intended_ns, self.last_end_ns = 0, None, 0
        hdr.percentiles_ms(hdr.decode(hdr.encode(self.lag)), (95,))

    # -- hot path -------------------------------------------------------------------------
    def record(self, intended: int, send: int, end: int, status: int, nbytes: int, error: int,
               tag: int) -> None:
        """One finished request (times in perf_counter ns)."""
        self._intended(intended)
        self._send(send)
        self._end(end)
        self._status(status)
        self._nbytes(nbytes)
        self._error(error)
        self._tag(tag)
        if len(self._cols[0]) >= FOLD_ROWS:
            self.fold()

    def phase(self, connected: int, tls_done: int, first_byte: int) -> None:
        """The phase ends of the sent request recorded next (perf_counter ns; 0: none)."""
        self._connected(connected)
        self._tls_done(tls_done)
        self._first_byte(first_byte)

    def dropped(self, intended: int, tag: int) -> None:
        """One arrival that found no free VU: no send, no end."""
        self.record(intended, 0, 0, 0, 0, DROPPED, tag)

    def dropped_many(self, intended: list[int], tags: list[int]) -> None:
        """Arrivals that found no free VU, appended to the columns at once (C loops, no
        per-row call): an overloaded open loop drops tens of thousands a second."""
        n = len(intended)
        cols = self._cols
        cols[0].extend(intended)
        for col in cols[1:5]:  # send, end, status, bytes: none
            col.frombytes(bytes(col.itemsize * n))
        cols[5].frombytes(bytes((DROPPED,)) * n)
        cols[6].extend(tags)
        if len(cols[0]) >= FOLD_ROWS:
            self.fold()

    def kind(self, tag: int, status: int, content_type: bytes | None) -> None:
        key = (tag, status, content_type)
        kinds = self.kinds
        n = kinds.get(key)
        if n is None:
            key, n = _new_key(kinds, self._distinct_kinds, key, (tag, 0, None))
        kinds[key] = n + 1

    def problem(self, tag: int, kind: str) -> None:
        """One RFC 7807 problem response of type ``kind`` (ACME's URN prefix removed)."""
        key = (tag, kind)
        problems = self.problems
        n = problems.get(key)
        if n is None:
            key, n = _new_key(problems, self._distinct_problems, key, (tag, OTHER))
        problems[key] = n + 1

    def timing(self, name: str, ns: int) -> None:
        """One sample of a client-side cost that is not server latency (e.g. signing)."""
        samples = self.timings.get(name)
        if samples is None:
            samples = self.timings[name] = array("q")
        samples.append(ns)

    def add_totals(self, tag: int, body: bytes, fields: tuple[str, ...]) -> None:
        """Sum the numeric top-level JSON ``fields`` of a response body into the tag's totals."""
        try:
            doc = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            return
        if not isinstance(doc, dict):
            return
        totals = self.totals[tag]
        for name in fields:
            value = doc.get(name)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                totals[name] = totals.get(name, 0) + value

    # -- folding and flushing -------------------------------------------------------------
    def fold(self) -> None:
        """Turn pending rows into numpy columns and add them to histograms and counters."""
        if not self._cols[0]:
            return
        cols = tuple(np.frombuffer(c, dtype) for c, (_, _, dtype) in zip(
            self._cols, _COLUMNS, strict=True))  # views: the old columns now belong to them
        self._new_columns()
        intended, send, end, status, _, error, tag = cols
        if self.phased:
            cols += self._fold_phases(error != DROPPED)
        self.counts += np.bincount(
            tag.astype(np.int64) * len(ERROR_CLASSES) + error, minlength=self.counts.size
        ).reshape(self.counts.shape)
        sent = error != DROPPED
        if self.first_intended_ns is None:
            self.first_intended_ns = int(intended.min())
        if sent.any():
            s_int, s_send, s_end = intended[sent], send[sent], end[sent]
            self.last_end_ns = max(self.last_end_ns, int(s_end.max()))
            response = (s_end - s_int + 500) // 1000
            hdr.record_array(self.response_all, response)
            hdr.record_array(self.service, (s_end - s_send + 500) // 1000)
            hdr.record_array(self.lag, np.maximum(s_send - s_int, 0) // 1000)
            s_status = status[sent].astype(np.int64)
            klass = np.where(s_status > 0, np.clip(s_status // 100, 2, 5), 0)
            key = tag[sent].astype(np.int64) * 8 + klass
            for k in np.unique(key):
                hdr.record_array(self.response[(int(k) // 8, int(k) % 8)], response[key == k])
        self._pieces.append(cols)
        self._piece_rows += len(intended)
        self.rows += len(intended)
        if self._piece_rows >= CHUNK_ROWS:
            self._flush()

    def _fold_phases(self, sent: np.ndarray) -> tuple[np.ndarray, ...]:
        """The pending phase rows, one per sent request, spread over all rows (0: dropped)."""
        phases = tuple(np.frombuffer(c, np.int64) for c in self._phase_cols)
        self._new_phase_columns()
        if len(phases[0]) != int(sent.sum()):
            raise AssertionError(f"driver bug: {len(phases[0])} phase rows for "
                                 f"{int(sent.sum())} sent requests")
        out = tuple(np.zeros(len(sent), np.int64) for _ in phases)
        for full, mine in zip(out, phases, strict=True):
            full[sent] = mine
        return out

    def _flush(self) -> None:
        if not self._pieces:
            return
        pieces, self._pieces, self._piece_rows = self._pieces, [], 0
        if self._writing is not None:
            self._writing.result()  # at most one chunk waits for the disk: bounded memory
        self._writing = self._pool.submit(self._write, pieces, self.epoch_offset_ns)

    def _write(self, pieces: list[tuple[np.ndarray, ...]], offset: int) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        columns = [np.concatenate([p[i] for p in pieces]) for i in range(len(pieces[0]))]
        order = np.argsort(columns[0], kind="stable")
        intended, send, end, status, nbytes, error, tag, *phases = (a[order] for a in columns)
        dropped = error == DROPPED
        fields = schema(self.tags, self.phased)
        columns = [intended + offset, send + offset, end + offset, status, nbytes, error, tag,
                   *(ends + offset for ends in phases)]
        nulls = [None, dropped, dropped, None, None, None, None, *(ends == 0 for ends in phases)]
        dictionaries = {"error": list(ERROR_CLASSES), "tag": self.tags}
        table = pa.Table.from_arrays([
            pa.DictionaryArray.from_arrays(_column(f.type.index_type, c),
                                           _strings(dictionaries[f.name]))
            if f.name in dictionaries else _column(f.type, c, n)
            for f, c, n in zip(fields, columns, nulls, strict=True)], schema=fields)
        with self._lock:
            if self._writer is None:
                self._writer = pq.ParquetWriter(
                    self._temporary() if self._sink is None else self._sink, table.schema)
            self._writer.write_table(table)

    def _temporary(self) -> str:
        """The file the requests are written to, until :meth:`close` gives it its name: an
        unguessable one beside it, created exclusively and opened by its descriptor
        (:func:`workbench.jsonio.replacing`)."""
        return self._file.enter_context(replacing(self.path))

    def close(self) -> None:
        """Fold and write everything left, close the file and give it its final name."""
        self.fold()
        self._flush()
        if self._writing is not None:
            self._writing.result()
        self._pool.shutdown()
        import pyarrow.parquet as pq

        with self._lock:
            if self._writer is None:
                self._writer = pq.ParquetWriter(self._temporary(),
                                                schema(self.tags, self.phased))
            self._writer.close()
        self._file.close()

    # -- summaries ------------------------------------------------------------------------
    def error_counts(self) -> dict[str, dict[str, int]]:
        """``{tag: {error class ("" is success): count}}``, zeros left out."""
        return {tag: {ERROR_CLASSES[e]: int(n) for e, n in enumerate(row) if n}
                for tag, row in zip(self.tags, self.counts, strict=True)}

    def histograms(self) -> dict[str, dict[str, str]]:
        """``{tag: {status class: base64 histoblob}}`` of response times in microseconds."""
        out: dict[str, dict[str, str]] = {}
        for (tag, klass), hist in sorted(self.response.items()):
            if hist.get_total_count() == 0:
                continue
            out.setdefault(self.tags[tag], {})[_CLASS_NAME[klass]] = hdr.encode(hist)
        return out

    def response_kinds(self) -> dict[str, dict[str, int]]:
        """``{tag: {"<status> <content type>": count}}`` ("-" when there was no type)."""
        out: dict[str, dict[str, int]] = {}
        for (tag, status, ctype), n in sorted(self.kinds.items(), key=lambda kv: (
                kv[0][0], kv[0][1], kv[0][2] or b"")):
            shown = printable(ctype.decode("latin-1"), None) if ctype else "-"
            kind = f"{status} {shown}" if status else OTHER
            per_tag = out.setdefault(self.tags[tag], {})
            per_tag[kind] = per_tag.get(kind, 0) + n
        return out

    def problem_counts(self) -> dict[str, dict[str, int]]:
        """``{tag: {problem type: count}}`` of the problem responses seen."""
        out: dict[str, dict[str, int]] = {}
        for (tag, kind), n in sorted(self.problems.items()):
            per_tag = out.setdefault(self.tags[tag], {})
            shown = printable(kind, None)
            per_tag[shown] = per_tag.get(shown, 0) + n
        return out

    def timing_histograms(self) -> dict[str, dict]:
        """``{name: {"hist": base64 histoblob (us), "count", "sum_ns"}}`` of the timings."""
        out = {}
        for name, samples in sorted(self.timings.items()):
            values = np.frombuffer(samples, np.int64)
            hist = hdr.new()
            hdr.record_array(hist, (values + 500) // 1000)
            out[name] = {"hist": hdr.encode(hist), "count": int(values.size),
                         "sum_ns": int(values.sum())}
        return out

    def response_totals(self, fields_by_tag: dict[str, tuple[str, ...]]) -> dict:
        """``{tag: {field: sum}}`` for every tag that asked for sums (0 when never seen)."""
        return {tag: {f: self.totals[self.tags.index(tag)].get(f, 0) for f in fields}
                for tag, fields in fields_by_tag.items() if fields}
