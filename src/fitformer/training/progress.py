"""Progress of one training run: a live bar on a terminal, plain lines in a pipe or a file.

On a terminal (the console's stream is a TTY) a ``rich.progress`` bar shows the run's
description, steps done/total, the training loss, elapsed time and the time left (ETA).
Elsewhere (CI logs, ``| tee``, a redirected job) :class:`StepReporter` writes one line

    ``dense fine-tune (tiny): step 33/336 loss 0.6812 elapsed 1m05s eta 9m56s``

for the first step run in this process, the last step of the run, and in between whenever
``interval_s`` seconds (30) or ``every_percent`` % (5) of the run's steps have passed since
the previous line, whichever comes first; never more often. The ETA of both modes is the
mean time per step of the steps run in this process times the steps left, so a resumed run
does not count the steps it restored as fast ones.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from types import TracebackType

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
)
from rich.text import Text

LINE_INTERVAL_S = 30.0
LINE_EVERY_PERCENT = 5


def duration_text(seconds: float) -> str:
    """A duration for people: ``42s``, ``3m05s``, ``1h02m`` (``seconds`` in s, rounded
    down to whole seconds; negative values count as 0)."""
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


class _Elapsed(ProgressColumn):
    """``elapsed 1m05s``, ticking between steps."""

    def render(self, task: Task) -> Text:
        return Text(f"elapsed {duration_text(task.elapsed or 0.0)}",
                    style="progress.elapsed")


class StepReporter:
    """Reports the optimiser steps of one training run (a context manager).

    Args:
        description: the run's label, e.g. ``dense fine-tune (tiny)``.
        total: optimiser steps of the whole run.
        start_step: steps already done before this process (a resumed run), 0 otherwise.
        console: where the bar is drawn; default: standard error.
        log: receives the plain lines; default: ``console.print``.
        terminal: draw the bar (``True``) or write lines (``False``); default: whether
            ``console`` is a terminal.
        clock: monotonic time in seconds; default :func:`time.monotonic` (tests pass a
            fake one).
        interval_s: seconds after which the next step gets a line (plain lines only).
        every_percent: % of ``total`` steps after which the next step gets a line, rounded
            up to whole steps (plain lines only).
    """

    def __init__(self, description: str, total: int, *, start_step: int = 0,
                 console: Console | None = None, log: Callable[[str], None] | None = None,
                 terminal: bool | None = None, clock: Callable[[], float] = time.monotonic,
                 interval_s: float = LINE_INTERVAL_S,
                 every_percent: int = LINE_EVERY_PERCENT):
        self.description, self.total, self.start_step = description, total, start_step
        self.console = console or Console(stderr=True)
        self.log = log or (lambda msg: self.console.print(msg, highlight=False))
        self.terminal = self.console.is_terminal if terminal is None else terminal
        self.clock, self.interval_s = clock, interval_s
        self.every_steps = max(1, -(-total * every_percent // 100))  # ceil, in integers
        self._start = self._last_time = 0.0
        self._last_step = start_step
        self._progress: Progress | None = None
        self._task: TaskID | None = None

    def __enter__(self) -> StepReporter:
        self._start = self._last_time = self.clock()
        if self.terminal:
            self._progress = Progress(
                TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]}"), _Elapsed(),
                TextColumn("eta {task.fields[eta]}"), console=self.console,
                get_time=self.clock)
            self._progress.start()
            self._task = self._progress.add_task(self.description, total=self.total,
                                                 completed=self.start_step, loss="-",
                                                 eta="-")
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def eta_s(self, step: int, now: float) -> float:
        """Seconds left after ``step`` at time ``now`` (s, of ``clock``): the mean time per
        step run in this process times the steps left."""
        done = step - self.start_step
        return (now - self._start) / done * (self.total - step) if done > 0 else 0.0

    def step(self, step: int, loss: float) -> None:
        """Optimiser step ``step`` (1-based, of the whole run) finished with training loss
        ``loss`` (nats; the caller may pass a running mean)."""
        now = self.clock()
        eta = duration_text(self.eta_s(step, now))
        if self._progress is not None:
            self._progress.update(self._task, completed=step, loss=f"{loss:.4f}", eta=eta)
            return
        if not (step == self.start_step + 1 or step >= self.total
                or step - self._last_step >= self.every_steps
                or now - self._last_time >= self.interval_s):
            return
        self._last_step, self._last_time = step, now
        self.log(f"{self.description}: step {step}/{self.total} loss {loss:.4f} "
                 f"elapsed {duration_text(now - self._start)} eta {eta}")
