"""Wake the event loop at exact nanosecond deadlines, without spinning.

asyncio's selector rounds timeouts up to whole milliseconds, so ``asyncio.sleep`` lands up to
1 ms late, and an open-loop schedule would lag by that much. The fix used here is a Linux
``timerfd`` armed at the absolute CLOCK_MONOTONIC deadline and watched by the loop like any
socket: the kernel's high-resolution timer makes it readable on time and the loop wakes then.
Nothing spins, so the driver's CPU use stays an honest measure of its own load.

Where timerfd is missing (not Linux), :class:`SpinTimer` sleeps coarsely and then yields to
the loop until the deadline; its CPU use then includes that spinning and is reported as such.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import os
import time
from collections.abc import Callable

_CLOCK_MONOTONIC = 1
_TFD_NONBLOCK = os.O_NONBLOCK
_TFD_CLOEXEC = getattr(os, "O_CLOEXEC", 0o2000000)
_TFD_TIMER_ABSTIME = 1
SPIN_NS = 1_500_000  # SpinTimer: yield-spin through the last 1.5 ms (selector rounding)


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


class TimerfdTimer:
    """Calls ``callback()`` once the armed deadline (``time.perf_counter_ns`` units) passes."""

    kind = "timerfd"

    def __init__(self, loop: asyncio.AbstractEventLoop, callback: Callable[[], None]) -> None:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        self._settime = libc.timerfd_settime
        self._settime.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.POINTER(_Itimerspec),
                                  ctypes.c_void_p)
        fd = libc.timerfd_create(_CLOCK_MONOTONIC, _TFD_NONBLOCK | _TFD_CLOEXEC)
        if fd < 0:
            raise OSError(ctypes.get_errno(), "timerfd_create failed")
        self._fd, self._loop, self._callback = fd, loop, callback
        self._spec = _Itimerspec()
        self._spec_ref = ctypes.byref(self._spec)
        loop.add_reader(fd, self._fired)

    def arm(self, deadline_ns: int) -> None:
        if self._fd < 0:
            return
        deadline_ns = max(int(deadline_ns), 1)  # an all-zero value would disarm the timer
        value = self._spec.it_value
        value.tv_sec, value.tv_nsec = divmod(deadline_ns, 1_000_000_000)
        if self._settime(self._fd, _TFD_TIMER_ABSTIME, self._spec_ref, None) != 0:
            raise OSError(ctypes.get_errno(), "timerfd_settime failed")

    def _fired(self) -> None:
        try:
            os.read(self._fd, 8)
        except BlockingIOError:
            return
        self._callback()

    def close(self) -> None:
        if self._fd >= 0:
            self._loop.remove_reader(self._fd)
            os.close(self._fd)
            self._fd = -1


class SpinTimer:
    """Fallback: coarse ``call_at``, then yield to the loop until the deadline."""

    kind = "spin"

    def __init__(self, loop: asyncio.AbstractEventLoop, callback: Callable[[], None]) -> None:
        self._loop, self._callback = loop, callback
        self._handle: asyncio.Handle | None = None
        self._deadline = 0

    def arm(self, deadline_ns: int) -> None:
        self._deadline = deadline_ns
        self._cancel()
        delay = deadline_ns - time.perf_counter_ns()
        if delay > SPIN_NS:
            self._handle = self._loop.call_later((delay - SPIN_NS) / 1e9, self._spin)
        else:
            self._handle = self._loop.call_soon(self._spin)

    def _spin(self) -> None:
        if time.perf_counter_ns() >= self._deadline:
            self._handle = None
            self._callback()
        else:
            self._handle = self._loop.call_soon(self._spin)

    def _cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def close(self) -> None:
        self._cancel()


def precise_timer(loop: asyncio.AbstractEventLoop, callback: Callable[[], None]
                  ) -> TimerfdTimer | SpinTimer:
    """A timerfd timer where the platform has one (and perf_counter is CLOCK_MONOTONIC)."""
    clock = time.get_clock_info("perf_counter").implementation
    if "CLOCK_MONOTONIC" in clock and "RAW" not in clock:
        try:
            return TimerfdTimer(loop, callback)
        except (OSError, AttributeError):
            pass
    return SpinTimer(loop, callback)
