"""Training progress (issue 18, item 7): a rich bar on a terminal; elsewhere a plain line for
the first and last step and whenever 30 s or 5 % of the steps have passed since the previous
line, whichever comes first. A fake clock drives the reporter; nothing is trained."""

from __future__ import annotations

import io
import re

import pytest
from rich.console import Console

from fitformer.training.progress import StepReporter, duration_text


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _run(total: int, step_seconds, *, start_step: int = 0, loss=lambda s: 0.5):
    """Runs steps start_step+1..total, step i taking step_seconds(i) s; returns the lines."""
    clock, lines = FakeClock(), []
    with StepReporter("run", total, start_step=start_step, log=lines.append,
                      terminal=False, clock=clock) as rep:
        for s in range(start_step + 1, total + 1):
            clock.now += step_seconds(s)
            rep.step(s, loss(s))
    return lines


def _steps(lines: list[str]) -> list[int]:
    return [int(re.search(r"step (\d+)/", line).group(1)) for line in lines]


def test_fast_steps_print_a_line_every_5_percent_of_the_steps_and_the_last():
    lines = _run(100, lambda s: 0.1)   # 10 s in all: the 30 s timer never fires
    assert _steps(lines) == [1, *range(6, 100, 5), 100]


def test_5_percent_is_rounded_up_to_whole_steps():
    # 5 % of 90 steps is 4.5: a line every 5 steps, never every 4.
    assert _steps(_run(90, lambda s: 0.1)) == [1, *range(6, 90, 5), 90]
    # Under 20 steps every step is at least 5 %: each one gets a line (the interrupt test
    # watches steps 1 and 2 of a 5-step run).
    assert _steps(_run(5, lambda s: 0.1)) == [1, 2, 3, 4, 5]


def test_slow_steps_print_a_line_every_30_seconds():
    # 10 s a step: 30 s pass after 3 steps, before 5 % (5 steps) do.
    lines = _run(100, lambda s: 10.0)
    assert _steps(lines) == [*range(1, 100, 3), 100]


def test_whichever_comes_first_since_the_previous_line():
    # 5 % = 2 steps of 40. Steps 1-6 take 1 s, 7-9 take 20 s, 10-40 take 1 s.
    secs = {7: 20.0, 8: 20.0, 9: 20.0}
    lines = _run(40, lambda s: secs.get(s, 1.0))
    # 1; 3, 5 (2 steps each); 7 (2 steps, 22 s); not 8 (1 step, 20 s); 9 (2 steps, 40 s);
    # then every 2 steps to 39, and 40 (the last).
    assert _steps(lines) == [1, 3, 5, 7, 9, *range(11, 40, 2), 40]
    # A 31 s step alone is enough for a line, even 1 step after the previous one.
    lines = _run(40, lambda s: 31.0 if s == 4 else 1.0)
    assert _steps(lines) == [1, 3, 4, 6, *range(8, 40, 2), 40]


def test_the_lines_exactly_with_elapsed_and_eta_of_this_run():
    lines = _run(40, lambda s: 7.0, loss=lambda s: 1.0 / s)
    # 7 s a step: 30 s = 5 steps, 5 % = 2 steps: a line every 2 steps.
    assert lines[:3] == [
        "run: step 1/40 loss 1.0000 elapsed 7s eta 4m33s",
        "run: step 3/40 loss 0.3333 elapsed 21s eta 4m19s",
        "run: step 5/40 loss 0.2000 elapsed 35s eta 4m05s",
    ]
    assert lines[-1] == "run: step 40/40 loss 0.0250 elapsed 4m40s eta 0s"
    assert len(lines) == 21


def test_a_resumed_run_starts_its_lines_and_its_eta_at_the_restored_step():
    lines = _run(1000, lambda s: 12.0, start_step=600)
    # First step of this process: 601; the ETA counts only steps run here (12 s each).
    assert lines[0] == "run: step 601/1000 loss 0.5000 elapsed 12s eta 1h19m"
    # 5 % of 1000 = 50 steps; 30 s = 3 steps.
    assert _steps(lines) == [*range(601, 1000, 3), 1000]
    assert lines[-1] == "run: step 1000/1000 loss 0.5000 elapsed 1h20m eta 0s"


def test_a_run_that_stops_early_has_printed_its_first_step_only_so_far():
    clock, lines = FakeClock(), []
    with pytest.raises(KeyboardInterrupt):
        with StepReporter("run", 100, log=lines.append, terminal=False,
                          clock=clock) as rep:
            for s in (1, 2, 3):
                clock.now += 1.0
                rep.step(s, 0.7)
            raise KeyboardInterrupt
    assert lines == ["run: step 1/100 loss 0.7000 elapsed 1s eta 1m39s"]


def test_a_terminal_gets_a_bar_with_steps_loss_elapsed_and_eta_and_no_lines():
    out, lines, clock = io.StringIO(), [], FakeClock()
    console = Console(file=out, force_terminal=True, width=120, color_system=None)
    with StepReporter("dense fine-tune (tiny)", 10, console=console, log=lines.append,
                      clock=clock) as rep:
        assert rep.terminal
        for s in (1, 2, 3, 4):
            clock.now += 5.0
            rep.step(s, 0.25)
    assert lines == []
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", out.getvalue())   # cursor moves
    shown = [line for line in text.splitlines() if "dense fine-tune (tiny)" in line][-1]
    assert re.search(r"4/10 loss 0\.2500 elapsed 20s eta 30s$", shown), shown


def test_default_mode_follows_the_console():
    plain = Console(file=io.StringIO())
    assert StepReporter("run", 10, console=plain).terminal is False
    tty = Console(file=io.StringIO(), force_terminal=True)
    assert StepReporter("run", 10, console=tty).terminal is True


@pytest.mark.parametrize(("seconds", "text"), [
    (0, "0s"), (-3, "0s"), (59.9, "59s"), (60, "1m00s"), (3599, "59m59s"),
    (3600, "1h00m"), (4740, "1h19m"), (90061, "25h01m"),
])
def test_duration_text(seconds, text):
    assert duration_text(seconds) == text
