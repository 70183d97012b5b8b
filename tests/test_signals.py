"""SIGTERM raised as an exception (fitformer.signals): a child of subprocess.run dies with
the command instead of being orphaned."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

from fitformer.signals import Terminated, raise_on_sigterm, sigterm_is_ours


def test_sigterm_kills_the_child_of_subprocess_run(tmp_path):
    pid_file = tmp_path / "child.pid"
    script = textwrap.dedent(f"""
        import subprocess, sys
        from fitformer.signals import Terminated, raise_on_sigterm
        raise_on_sigterm()
        try:
            subprocess.run(["sh", "-c", "echo $$ > {str(pid_file)}; exec sleep 60"])
        except Terminated:
            sys.exit(143)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script])
    deadline = time.monotonic() + 60
    while not pid_file.is_file() or not pid_file.read_text():
        assert time.monotonic() < deadline
        time.sleep(0.1)
    child = int(pid_file.read_text())
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 143
    time.sleep(0.2)
    try:
        os.kill(child, 0)
        alive = True
    except ProcessLookupError:
        alive = False
    assert not alive


def test_a_handler_installed_by_other_code_is_kept():
    previous = signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        assert raise_on_sigterm() is signal.SIG_DFL
        assert sigterm_is_ours(signal.getsignal(signal.SIGTERM))
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, lambda s, f: None)
        assert raise_on_sigterm() is None                  # someone else's: kept
        assert not sigterm_is_ours(signal.getsignal(signal.SIGTERM))
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert issubclass(Terminated, KeyboardInterrupt) and Terminated.signum == signal.SIGTERM
