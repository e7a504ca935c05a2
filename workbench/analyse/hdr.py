"""HDR histograms of response times, shared by the driver, its shards and the baselines.

One configuration everywhere, so histograms from any shard or machine merge exactly: values in
MICROseconds, lowest 1, highest 3,600,000,000 (one hour), 3 significant digits (package
``hdrhistogram``, module ``hdrh``). Encoded form: HdrHistogram's compressed V2 "histoblob",
base64, as text (what ``HdrHistogram.encode()`` returns).

The driver never calls ``record_value`` per request (about 1 us of Python each): it keeps raw
samples in columns and folds a whole block at once with :func:`record_array`, which computes
the same counts index as ``record_value`` with numpy. Percentiles are read from merged
histograms only; averaging percentiles across shards or windows is wrong and never done.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np
from hdrh.histogram import HdrHistogram

LOWEST_US = 1
HIGHEST_US = 3_600_000_000
SIGNIFICANT_DIGITS = 3
CONFIG = {"unit": "us", "lowest": LOWEST_US, "highest": HIGHEST_US,
          "significant_digits": SIGNIFICANT_DIGITS}
STATUS_CLASSES = ("2xx", "3xx", "4xx", "5xx", "error")


def new() -> HdrHistogram:
    """An empty histogram in the workbench's one configuration."""
    return HdrHistogram(LOWEST_US, HIGHEST_US, SIGNIFICANT_DIGITS)


def status_class(status: int) -> str:
    """"2xx" ... "5xx" for a response, "error" when there was none (status 0)."""
    if status <= 0:
        return "error"
    return f"{min(max(status // 100, 2), 5)}xx"  # 1xx is never final; treat as 2xx


def record_array(hist: HdrHistogram, values_us: np.ndarray) -> None:
    """Add every value of ``values_us`` (integer microseconds) to ``hist`` in one numpy pass.

    Equivalent to ``hist.record_value(v)`` for each value, except that values above the
    histogram's range are clamped to its highest value instead of being lost.
    """
    if values_us.size == 0:
        return
    v = np.clip(values_us.astype(np.int64, copy=False), 0, hist.highest_trackable_value)
    index = bucket_index(hist, v)
    counts = np.ctypeslib.as_array(hist.counts)
    counts += np.bincount(index, minlength=hist.counts_len).astype(counts.dtype)
    hist.total_count += int(v.size)
    hist.min_value = min(hist.min_value, int(v.min()))
    hist.max_value = max(hist.max_value, int(v.max()))


def bucket_index(hist: HdrHistogram, v: np.ndarray) -> np.ndarray:
    """The counts index of each value of ``v`` (int64 within the histogram's range), as
    ``record_value`` computes it."""
    # bit length of (v | mask), exact for integers below 2**53
    _, pow2ceiling = np.frexp((v | hist.sub_bucket_mask).astype(np.float64))
    bucket = pow2ceiling.astype(np.int64) - hist.unit_magnitude - (
        hist.sub_bucket_half_count_magnitude + 1)
    sub_bucket = v >> (bucket + hist.unit_magnitude)
    return ((bucket + 1) << hist.sub_bucket_half_count_magnitude) + (
        sub_bucket - hist.sub_bucket_half_count)


class SparseHistograms:
    """Many histograms (one per integer key, e.g. a time window) built from values streamed in
    chunks, holding only each key's non-empty buckets: a run's windows would otherwise take a
    full counts array each. A chunk merges into the keys it touches only (a few windows), so
    the work and the temporaries of a merge do not grow with the run's length. :meth:`encode`
    gives each key's encoding, as :func:`record_array` on all its values would."""

    def __init__(self) -> None:
        self._template = new()
        self._keys: dict[int, tuple[np.ndarray, np.ndarray, int, int]] = {}  # buckets, counts,
        # lowest and highest value

    def add(self, keys: np.ndarray, values_us: np.ndarray) -> None:
        """Record ``values_us[i]`` under ``keys[i]``."""
        if not len(keys):
            return
        v = np.clip(values_us.astype(np.int64, copy=False), 0,
                    self._template.highest_trackable_value)
        keys = keys.astype(np.int64, copy=False)
        order = np.argsort(keys, kind="stable")
        keys, v = keys[order], v[order]
        starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
        for begin, end in zip(starts, np.r_[starts[1:], len(keys)], strict=True):
            mine = v[begin:end]
            buckets, counts = np.unique(bucket_index(self._template, mine), return_counts=True)
            key, low, high = int(keys[begin]), int(mine.min()), int(mine.max())
            held = self._keys.get(key)
            if held is not None:
                merged, inverse = np.unique(np.r_[held[0], buckets], return_inverse=True)
                counts = np.bincount(inverse.reshape(-1), weights=np.r_[held[1], counts]
                                     ).astype(np.int64)
                buckets, low, high = merged, min(low, held[2]), max(high, held[3])
            self._keys[key] = (buckets, counts, low, high)

    def encode(self) -> dict[int, str]:
        """Each key's histogram, encoded (:func:`encode`)."""
        out = {}
        for key in sorted(self._keys):
            buckets, counts, low, high = self._keys[key]
            hist = new()
            np.ctypeslib.as_array(hist.counts)[buckets] += counts.astype(
                np.ctypeslib.as_array(hist.counts).dtype)
            hist.total_count += int(counts.sum())
            hist.min_value = min(hist.min_value, low)
            hist.max_value = max(hist.max_value, high)
            out[key] = encode(hist)
        return out


def encode(hist: HdrHistogram) -> str:
    """The base64 histoblob of ``hist`` as text."""
    blob = hist.encode()
    return blob.decode("ascii") if isinstance(blob, bytes) else blob


def decode(blob: str) -> HdrHistogram:
    """A histogram from its base64 histoblob."""
    return HdrHistogram.decode(blob.encode("ascii") if isinstance(blob, str) else blob)


def merge(blobs: Iterable[str | bytes | None]) -> HdrHistogram:
    """One histogram holding every count of the encoded histograms ``blobs`` (a sum, exact)."""
    total = new()
    for blob in blobs:
        if blob:
            total.decode_and_add(blob.encode("ascii") if isinstance(blob, str) else blob)
    return total


def percentiles_ms(hist: HdrHistogram, qs: Sequence[float] = (50, 90, 95, 99)
                   ) -> dict[str, float | None]:
    """``{"p50": ms, ..., "max": ms}`` from a histogram of microseconds; None when empty.

    Each value is the highest value equivalent to the recorded one (within 0.1 %).
    """
    if hist.get_total_count() == 0:
        return {f"p{q}": None for q in qs} | {"max": None}
    out = {f"p{q}": value_at_percentile(hist, q) / 1000 for q in qs}
    out["max"] = hist.get_max_value() / 1000
    return out


def value_at_percentile(hist: HdrHistogram, q: float) -> int:
    """Nearest rank, as the exact analysis computes it: the smallest recorded value with at
    least ``ceil(q/100 * n)`` values at or below it, as its bucket's highest equivalent value.

    hdrh's own ``get_value_at_percentile`` rounds the rank to the nearest integer, which can
    land one rank low (p99 of 1,670 values would read rank 1,653 instead of 1,654), so the
    driver's summary and the record's threshold verdicts would disagree.
    """
    rank = max(1, math.ceil(q / 100 * hist.get_total_count() - 1e-9))
    seen = 0
    for item in hist.get_recorded_iterator():
        seen += item.count_added_in_this_iter_step
        if seen >= rank:
            return hist.get_highest_equivalent_value(item.value_iterated_to)
    return hist.get_max_value()
