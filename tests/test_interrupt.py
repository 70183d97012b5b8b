"""Ctrl-C (SIGINT) during training: it lands within seconds (also mid-backward), the last
whole step is checkpointed atomically, the CLI says what was saved and how to resume, and
the rerun resumes to the same run (issue 18, item 2)."""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace

import pytest
import torch

from fitformer.data import load_dataset
from fitformer.models import load_tokenizer, resolve_model
from fitformer.training.loop import (
    Encoded,
    TrainConfig,
    TrainHook,
    TrainingInterrupted,
    save_atomic,
    train_classifier,
)


@pytest.fixture
def sigint_default():
    """SIGINT raises KeyboardInterrupt in this process, even if pytest was started with it
    ignored (a background job of a non-interactive shell)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.fixture(scope="module")
def small(real_cache):
    """(a small BERT classifier's config: 2 layers of 64, dropout 0.1, the real vocabulary;
    48 real training sentences at 32 tokens). The loop is the same for any size; the real
    MiniLM is trained by the CLI test below."""
    from transformers import BertConfig

    data = load_dataset("rotten-tomatoes")
    tok = load_tokenizer(resolve_model("default"))
    config = BertConfig(vocab_size=tok.vocab_size, hidden_size=64, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=128, num_labels=2)
    return config, Encoded(tok, data.train.subset(48), 32)


def _fresh(config):
    from transformers import BertForSequenceClassification

    torch.manual_seed(0)
    return BertForSequenceClassification(config)


def test_sigint_mid_backward_saves_the_last_whole_step_and_resumes_to_the_same_weights(
        small, tmp_path, sigint_default):
    config, train = small
    # checkpoint_every and checkpoint_seconds never fire: only the interrupt writes.
    cfg = TrainConfig(max_steps=4, batch_size=16, max_length=32, checkpoint_every=100,
                      checkpoint_seconds=1e9)
    straight = _fresh(config)
    straight_result = train_classifier(straight, train, cfg)

    net = _fresh(config)
    trainable = [p for p in net.parameters() if p.requires_grad]
    forwards, accumulated = [0], [0]

    def on_forward(module, args, output):
        forwards[0] += 1
        if forwards[0] == 3:          # step 3: Ctrl-C as its backward pass starts
            accumulated[0] = 0
            output.register_hook(lambda g: os.kill(os.getpid(), signal.SIGINT))

    def count(_p):
        accumulated[0] += 1

    net.classifier.register_forward_hook(on_forward)
    counters = [p.register_post_accumulate_grad_hook(count) for p in trainable]
    ckpt = tmp_path / "checkpoint.pt"
    with pytest.raises(TrainingInterrupted) as info:
        train_classifier(net, train, cfg, checkpoint=ckpt, description="fine-tune")
    for c in counters:
        c.remove()
    # The interrupt landed inside the backward pass, not after it.
    assert accumulated[0] < len(trainable) // 4
    exc = info.value
    assert (exc.step, exc.total, exc.saved_step, exc.checkpoint) == (2, 4, 2, ckpt)
    assert str(exc) == f"fine-tune stopped after step 2 of 4; steps 1-2 are saved in {ckpt}"
    assert isinstance(exc, KeyboardInterrupt)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored
    assert not ckpt.with_name("checkpoint.pt.tmp").exists()
    state = torch.load(ckpt, weights_only=True)
    assert state["step"] == 2 and len(state["losses"]) == 2
    # The step, readable without loading the checkpoint (the plan line's saved steps).
    assert json.loads(ckpt.with_suffix(".json").read_text()) == {"step": 2, "total": 4}

    resumed = _fresh(config)
    result = train_classifier(resumed, train, cfg, checkpoint=ckpt)
    assert (result.resumed_from_step, result.steps) == (2, 4)
    assert result.losses == pytest.approx(straight_result.losses, rel=1e-5)
    for a, b in zip(straight.parameters(), resumed.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert torch.load(ckpt, weights_only=True)["step"] == 4  # the end is kept too


@pytest.fixture
def background_job():
    """The signals of a job a non-interactive shell starts in the background: SIGINT
    ignored, SIGTERM at its default."""
    previous = (signal.signal(signal.SIGINT, signal.SIG_IGN),
                signal.signal(signal.SIGTERM, signal.SIG_DFL))
    yield
    signal.signal(signal.SIGINT, previous[0])
    signal.signal(signal.SIGTERM, previous[1])


def test_sigterm_checkpoints_a_background_job_that_ignores_ctrl_c(small, tmp_path,
                                                                   background_job):
    config, train = small
    cfg = TrainConfig(max_steps=4, batch_size=16, max_length=32, checkpoint_every=100,
                      checkpoint_seconds=1e9)
    net = _fresh(config)
    forwards = [0]

    def on_forward(module, args, output):
        forwards[0] += 1
        if forwards[0] == 3:          # step 3: SIGTERM as its backward pass starts
            output.register_hook(lambda g: os.kill(os.getpid(), signal.SIGTERM))

    net.classifier.register_forward_hook(on_forward)
    ckpt = tmp_path / "checkpoint.pt"
    with pytest.raises(TrainingInterrupted) as info:
        train_classifier(net, train, cfg, checkpoint=ckpt, description="fine-tune")
    exc = info.value
    assert (exc.step, exc.saved_step, exc.signum) == (2, 2, signal.SIGTERM)
    assert str(exc) == (f"fine-tune stopped by SIGTERM after step 2 of 4; steps 1-2 are "
                        f"saved in {ckpt}")
    assert torch.load(ckpt, weights_only=True)["step"] == 2
    # Both handlers restored: Ctrl-C stays ignored, SIGTERM kills again.
    assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_a_sigterm_handler_installed_by_other_code_is_kept(small, tmp_path, background_job):
    config, train = small
    seen = []
    signal.signal(signal.SIGTERM, lambda signum, frame: seen.append(signum))
    handler = signal.getsignal(signal.SIGTERM)

    class _Term(TrainHook):
        def on_step_end(self, model, step, total_steps):
            if step == 1:
                os.kill(os.getpid(), signal.SIGTERM)

    cfg = TrainConfig(max_steps=2, batch_size=16, max_length=32)
    result = train_classifier(_fresh(config), train, cfg, checkpoint=tmp_path / "c.pt",
                              hooks=[_Term()])
    assert result.steps == 2 and seen == [signal.SIGTERM]
    assert signal.getsignal(signal.SIGTERM) is handler


class _CheckpointSteps(TrainHook):
    """Records, at the end of each step, the step the checkpoint file holds."""

    def __init__(self, path):
        self.path, self.seen = path, []

    def on_step_end(self, model, step, total_steps):
        self.seen.append(torch.load(self.path, weights_only=True)["step"]
                         if self.path.is_file() else None)


def test_the_timer_checkpoints_between_the_step_checkpoints(small, tmp_path):
    config, train = small
    ckpt = tmp_path / "checkpoint.pt"
    probe = _CheckpointSteps(ckpt)
    # checkpoint_seconds=0: every finished step is older than the timer.
    cfg = TrainConfig(max_steps=3, batch_size=16, max_length=32, checkpoint_every=100,
                      checkpoint_seconds=0.0)
    train_classifier(_fresh(config), train, cfg, checkpoint=ckpt, hooks=[probe])
    assert probe.seen == [None, 1, 2]
    assert torch.load(ckpt, weights_only=True)["step"] == 3
    assert cfg.as_key() == replace(cfg, checkpoint_seconds=120.0).as_key()  # not in keys


class _Raise(TrainHook):
    def on_step_end(self, model, step, total_steps):
        if step == 2:
            raise KeyboardInterrupt  # raised by code, in the middle of the step's hooks


def test_a_keyboard_interrupt_raised_by_code_saves_nothing(small, tmp_path, sigint_default):
    config, train = small
    ckpt = tmp_path / "checkpoint.pt"
    cfg = TrainConfig(max_steps=3, batch_size=16, max_length=32, checkpoint_every=1)
    with pytest.raises(KeyboardInterrupt) as info:
        train_classifier(_fresh(config), train, cfg, checkpoint=ckpt, hooks=[_Raise()])
    assert not isinstance(info.value, TrainingInterrupted)
    # The step-1 checkpoint stays: step 2's state may be half-updated.
    assert torch.load(ckpt, weights_only=True)["step"] == 1
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def _main_with(monkeypatch, module: str, attr: str, fake, argv: list[str]) -> int:
    """Run the CLI's ``main`` with ``module.attr`` replaced by ``fake``; its exit status."""
    import gc
    import importlib

    from fitformer.cli import main

    monkeypatch.setattr(importlib.import_module(module), attr, fake)
    monkeypatch.setattr(sys, "argv", ["fitformer", *argv])
    try:
        with pytest.raises(SystemExit) as info:
            main()
    finally:
        gc.unfreeze()
    return info.value.code


def _interrupted(*args, **kwargs):
    raise KeyboardInterrupt


def test_the_cli_message_for_an_interrupt_outside_training(monkeypatch, capsys, home):
    code = _main_with(monkeypatch, "fitformer.training.finetune", "finetune", _interrupted,
                      ["finetune", "--budget", "tiny", "--dataset", "my data.csv"])
    assert code == 130
    assert capsys.readouterr().err == (
        "interrupted.\nCompleted runs and checkpoints are cached; to resume, run the same "
        "command: fitformer finetune --budget tiny --dataset 'my data.csv'\n")


def test_ctrl_c_in_hls_says_the_rerun_starts_over(monkeypatch, capsys, home):
    """hls keeps no partial work: its Ctrl-C line does not promise cached checkpoints."""
    code = _main_with(monkeypatch, "fitformer.hls", "generate", _interrupted,
                      ["hls", "--pruned", "run", "--device", "zcu104", "--out", "prj"])
    assert code == 130
    assert capsys.readouterr().err == (
        "interrupted: a project folder it began is incomplete (csim refuses it); hls writes "
        "it again from the start; run the same command again: fitformer hls --pruned run "
        "--device zcu104 --out prj\n")


def test_sigterm_outside_training_is_reported_and_exits_143(monkeypatch, capsys, home):
    """SIGTERM while loading or evaluating (no training loop's guard): the CLI's handler
    raises, the message says so, the status is 143, and main restores the handler."""

    def killed(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)
        raise AssertionError("SIGTERM did not stop the command")

    previous = signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        code = _main_with(monkeypatch, "fitformer.training.finetune", "finetune", killed,
                          ["finetune", "--budget", "tiny"])
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL      # restored
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert code == 143
    assert capsys.readouterr().err.startswith("interrupted by SIGTERM.\nCompleted runs")


def test_the_cli_exits_143_when_sigterm_stopped_training(monkeypatch, capsys, home):
    def stopped(*args, **kwargs):
        raise TrainingInterrupted("dense fine-tune (tiny)", 3, 5, home / "checkpoint.pt", 3,
                                  signal.SIGTERM)

    code = _main_with(monkeypatch, "fitformer.training.finetune", "finetune", stopped,
                      ["finetune", "--budget", "tiny"])
    assert code == 143
    assert capsys.readouterr().err.startswith(
        "interrupted: dense fine-tune (tiny) stopped by SIGTERM after step 3 of 5; steps 1-3 "
        f"are saved in {home / 'checkpoint.pt'}.\n")



class _Bomb:
    def __reduce__(self):
        raise KeyboardInterrupt  # a second Ctrl-C half-way through the write


def test_an_interrupted_checkpoint_write_keeps_the_previous_file(tmp_path):
    path = tmp_path / "checkpoint.pt"
    save_atomic({"step": 5, "w": torch.arange(4.0)}, path)
    with pytest.raises(KeyboardInterrupt):
        save_atomic({"step": 6, "w": torch.zeros(1_000_000), "z": _Bomb()}, path)
    state = torch.load(path, weights_only=True)
    assert state["step"] == 5 and state["w"].tolist() == [0.0, 1.0, 2.0, 3.0]
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]


def _reader(stream, lines: queue.Queue) -> None:
    for line in stream:
        lines.put((time.monotonic(), line))
    lines.put((time.monotonic(), None))


def _wait_for(lines: queue.Queue, pattern: str, out: list[str], timeout: float):
    deadline = time.monotonic() + timeout
    while True:
        t, line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
        if line is None:
            pytest.fail(f"exited before {pattern!r}:\n{''.join(out)}")
        out.append(line)
        m = re.search(pattern, line)
        if m:
            return t, m


@pytest.mark.slow
def test_ctrl_c_in_finetune_says_what_was_saved_and_the_rerun_resumes(home):
    from fitformer.training.finetune import DENSE_RECIPE, dense_key
    from fitformer.training.runs import UNHASHED_FIELDS, run_path

    args = ["finetune", "--budget", "tiny", "--epochs", "0.5", "--max-length", "16"]
    cmd = [sys.executable, "-m", "fitformer", *args]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "FITFORMER_HOME": str(home)}
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=_reader, args=(proc.stdout, lines), daemon=True).start()
    out: list[str] = []
    try:
        t1, _ = _wait_for(lines, r"step 1/5 ", out, 150)
        t2, _ = _wait_for(lines, r"step 2/5 ", out, 60)
        time.sleep(min(3.0, (t2 - t1) / 2))   # mid-step 3 (forward or backward)
        proc.send_signal(signal.SIGINT)
        sent = time.monotonic()
        rc = proc.wait(timeout=30)
        stopped = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
    time.sleep(0.2)
    while not lines.empty():
        line = lines.get()[1]
        out.append(line or "")
    text = "".join(out)
    print(f"stopped {stopped:.2f} s after SIGINT")
    assert rc == 130, text
    assert stopped < 5.0, text
    m = re.search(r"interrupted: dense fine-tune \(tiny\) stopped after step (\d) of 5; "
                  r"steps 1-\1 are saved in (\S+checkpoint\.pt)\.", text)
    assert m, text
    step = int(m.group(1))
    assert step >= 2
    assert ("to resume, run the same command: fitformer finetune --budget tiny --epochs 0.5 "
            "--max-length 16") in text
    assert torch.load(m.group(2), weights_only=True)["step"] == step

    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert f"dense fine-tune (tiny): resuming from step {step} of 5" in again.stderr
    # The same run (key and directory) an uninterrupted run writes.
    key = dense_key(resolve_model("default"), load_dataset("rotten-tomatoes"), "tiny",
                    replace(DENSE_RECIPE, epochs=0.5, max_length=16))
    path = run_path(key)
    assert f"run: {path}\n" in again.stdout
    metrics = json.loads((path / "metrics.json").read_text())
    assert (metrics["steps"], metrics["resumed_from_step"]) == (5, step)
    run = json.loads((path / "run.json").read_text())
    assert {k: v for k, v in run.items() if k not in UNHASHED_FIELDS} == json.loads(
        json.dumps(key, default=str))
    assert not (path / "checkpoint.pt").exists() and not (path / "checkpoint.json").exists()
    assert not any((home / "runs" / ".partial").glob("*/checkpoint.*"))
