"""Stop signals of the command line: SIGTERM (``kill``, a batch scheduler's or Ray's stop)
raised as an exception, as Python raises ``KeyboardInterrupt`` for Ctrl-C (SIGINT).

By default SIGTERM ends the interpreter at once: no ``finally`` block runs, so a child
process (``g++``, a C-simulation testbench) is left running and the command prints nothing.
Raised as :class:`Terminated` instead, the command stops like a Ctrl-C: ``subprocess.run``
kills its child, the CLI says what was kept and how to resume, and exits with status 143.
A training loop takes SIGTERM over while it runs, to checkpoint first
(:mod:`fitformer.training.loop`).
"""

from __future__ import annotations

import signal
import threading


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived; a ``KeyboardInterrupt`` so that cleanup runs as for Ctrl-C.

    Attributes:
        signum: ``signal.SIGTERM`` (the CLI exits with ``128 + signum``, 143).
    """

    signum = signal.SIGTERM


def _raise_terminated(signum, frame) -> None:
    raise Terminated


def raise_on_sigterm():
    """Make SIGTERM raise :class:`Terminated` in the main thread, if its handler is the
    default (a handler other code installed is kept).

    Returns:
        the previous handler, to restore with ``signal.signal(signal.SIGTERM, previous)``;
        ``None`` when nothing was installed (not the main thread, or not the default).
    """
    if threading.current_thread() is not threading.main_thread():
        return None
    previous = signal.getsignal(signal.SIGTERM)
    if previous is not signal.SIG_DFL:
        return None
    signal.signal(signal.SIGTERM, _raise_terminated)
    return previous


def sigterm_is_ours(handler) -> bool:
    """Whether a SIGTERM ``handler`` may be replaced by a training loop's: the default, or
    :func:`raise_on_sigterm`'s."""
    return handler is signal.SIG_DFL or handler is _raise_terminated
