"""Ctrl-C and SIGTERM as a request to stop between training steps, so an interrupted run keeps its work.

The command line trains inside :class:`StopRequest`: the first Ctrl-C (SIGINT) or SIGTERM sets
:attr:`StopRequest.signal` and the training loop ends after the step in progress, so the weights,
the optimiser, the multipliers and the RNGs are those of a whole number of steps and a checkpoint
written then resumes exactly. A second signal raises ``KeyboardInterrupt`` at once (a way out of a
final evaluation the user does not want to wait for).
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Iterable, Iterator
from types import FrameType, TracebackType
from typing import Any, TypeVar

INTERRUPTED_EXIT = 130  # the shell's code for a run stopped by Ctrl-C


class StopRequest:
    """A context that turns SIGINT and SIGTERM into a flag the training loop reads between steps.

    Outside the main thread (where Python cannot install signal handlers) it installs nothing and
    the flag stays unset; Ctrl-C then behaves as it always does.
    """

    def __init__(self) -> None:
        self.signal: str | None = None  # "SIGINT" or "SIGTERM" once a stop was asked for
        self._previous: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        return self.signal is not None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signal is not None:
            raise KeyboardInterrupt
        self.signal = signal.Signals(signum).name
        message = f"{self.signal}: stopping after this step and writing what the run has (again: stop now)"
        print(f"\n{message}", file=sys.stderr)

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()


T = TypeVar("T")


def until_stopped(items: Iterable[T], stop: StopRequest | None) -> Iterator[T]:
    """``items`` (a training loop's records) until ``stop`` is requested: the item in progress
    then is the last one (None: every item)."""
    for item in items:
        yield item
        if stop is not None and stop.requested:
            return
