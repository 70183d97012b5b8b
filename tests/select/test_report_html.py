"""select's outputs (issue 18, item 9): report.html renders on its own (plots embedded as
``data:`` URIs, checked in headless Chromium), report.json's artifact paths are relative to
its folder, and the table shows no latency for a design that does not fit."""

from __future__ import annotations

import base64
import json
import re
import shutil
import struct
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from fitformer.select.profile import Profile
from fitformer.select.report import Report, train_command, write_outputs

PLOTS = {"accuracy_plot": "accuracy.png", "latency_plot": "latency.png",
         "utilization_plot": "utilization.png"}
NOT_TRAINED = "accuracy at its LC-meeting points not trained yet"


def _chromium() -> str | None:
    return next((p for p in map(shutil.which, ("chromium", "chromium-browser",
                                                "google-chrome")) if p), None)


def _row(id_, kind, **kw) -> dict:
    row = {"id": id_, "name": id_, "kind": kind, "price_usd": 100.0, "power_w": 10.0,
           "precision": "fp32", "latency_ms": 1.0, "compute_ms": 0.9,
           "call_overhead_ms": 0.1, "sparsity": 0.0, "hp_split": None,
           "accuracy_dev": 0.84, "accuracy_test": 0.83, "fits": True,
           "weights_on_chip": None, "feasible": False, "reason": "latency",
           "measurement": None, "curve": {}}
    row.update(kw)
    return row


def _report(run_dir: Path) -> dict:
    """A report as select builds it (loop.select), by hand: an FPGA chosen at the dense point,
    one FPGA whose nearest design does not fit, unpriced GPUs whose accuracy is not trained
    (one hint naming no command, one naming it), and the measured host CPU."""
    acc = {"dev": {"fp32": 0.85, "fx16": 0.85, "fx8": 0.84},
           "test": {"fp32": 0.84, "fx16": 0.84, "fx8": 0.83}}
    pruned = {"dev": {"fp32": 0.80, "fx16": 0.80, "fx8": 0.78},
              "test": {"fp32": 0.79, "fx16": 0.79, "fx8": 0.77}}
    return {
        "schema_version": 1, "best_device": "u200",
        "constraints": {"latency_ms": 10.0, "batch_size": 1, "seq_len": 128,
                        "tgt_len": None, "min_accuracy": None, "max_accuracy_drop": 0.05},
        "target_accuracy_dev": 0.80, "metric": {"name": "accuracy", "scale_max": 1},
        "task": "classification", "objective": "price", "model": "default",
        "dataset": "rotten-tomatoes", "pattern": "hp", "budget": "tiny", "max_length": 64,
        "dense_accuracy": {"dev": 0.85, "test": 0.84},
        "profile": [
            {"sparsity": 0.0, "achieved_sparsity": 0.0, "hp_split": None, "accuracy": acc,
             "majority_rate_dev": 0.5, "collapsed": {}, "run_dir": str(run_dir)},
            {"sparsity": 0.5, "achieved_sparsity": 0.5, "hp_split": {"d1": 0.7, "d2": 0.7},
             "accuracy": pruned, "majority_rate_dev": 0.5, "collapsed": {},
             "run_dir": str(run_dir)}],
        "devices": [
            _row("u200", "fpga", price_usd=1150.0, precision="fx16", latency_ms=2.5,
                 feasible=True, reason="ok", weights_on_chip=True,
                 utilization={"dsp": 0.41, "bram_18k": 0.62, "lut": 0.3, "ff": None},
                 method="analytical"),
            _row("ultra96-v2", "fpga", price_usd=250.0, precision="fx8", latency_ms=14.25,
                 fits=False, reason="resources",
                 would_pass_with="no design fits at any grid point (closest: sparsity 0.5, "
                                 "fx8, bram_18k at 131% of the device)"),
            _row("rtx-4090", "gpu", price_usd=None, latency_ms=0.75, accuracy_dev=None,
                 accuracy_test=None, reason="no_price",
                 would_pass_with=f"give price_usd in a --devices file; then also: "
                                 f"{NOT_TRAINED}"),
            _row("jetson-orin-nano", "gpu", price_usd=None, accuracy_dev=None,
                 accuracy_test=None, reason="no_price",
                 would_pass_with=f"give price_usd in a --devices file; then also: "
                                 f"{NOT_TRAINED} (`fitformer profile --budget tiny` trains "
                                 f"them)"),
            _row("host-cpu", "cpu", latency_ms=23.7,
                 measurement={"steady": True, "spread": 0.02, "load_avg_1min": 1.9,
                              "cpus": 2, "attempts": 1}),
        ],
        "artifacts": {},
    }


@pytest.fixture
def written(tmp_path, monkeypatch) -> Path:
    """write_outputs run from a working directory other than the report's folder."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.json").write_text("{}")
    (run_dir / "checkpoint-3").mkdir()
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    out = tmp_path / "out"
    write_outputs(_report(run_dir), out, Profile(budget="tiny", log=lambda m: None))
    return out


class _Table(HTMLParser):
    """The cells of report.html's table, by row, and the ``src`` of every image."""

    def __init__(self):
        super().__init__()
        self.rows: list[list[str]] = []
        self.srcs: list[str] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        if tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "img":
            self.srcs.append(dict(attrs)["src"])

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.rows[-1].append("".join(self._cell))
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def _table(page: str) -> tuple[dict[str, dict[str, str]], list[str]]:
    t = _Table()
    t.feed(page)
    head, *body = t.rows
    return {r[0]: dict(zip(head, r, strict=True)) for r in body}, t.srcs


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_artifact_paths_are_relative_to_the_report_folder(written):
    rep = json.loads((written / "report.json").read_text())
    Report.model_validate(rep)
    assert rep["artifacts"] == {"model_dir": "model", "design_json": "design.json",
                                **PLOTS, "report_json": "report.json",
                                "report_html": "report.html"}
    for path in rep["artifacts"].values():
        assert (written / path).exists(), path
        assert not (Path.cwd() / path).exists(), path    # not where select was run from
    assert (written / "model" / "config.json").is_file()
    assert not (written / "model" / "checkpoint-3").exists()
    assert json.loads((written / "design.json").read_text())["id"] == "u200"


def test_plots_are_embedded_as_the_png_files_bytes(written):
    _, srcs = _table((written / "report.html").read_text())
    assert len(srcs) == 3
    for src, name in zip(srcs, PLOTS.values(), strict=True):
        prefix = "data:image/png;base64,"
        assert src.startswith(prefix), src[:60]
        assert base64.b64decode(src[len(prefix):]) == (written / name).read_bytes()


def test_a_design_that_does_not_fit_shows_no_latency(written):
    rows, _ = _table((written / "report.html").read_text())
    assert rows["ultra96-v2"]["fits"] == "False"
    assert rows["ultra96-v2"]["latency_ms"] == "-"
    assert rows["u200"]["latency_ms"] == "2.5"
    assert rows["rtx-4090"]["latency_ms"] == "0.75"
    assert rows["host-cpu"]["latency_ms"] == "23.7 (load 1.9/2 CPUs, spread 2.0%)"
    # report.json keeps the figure of the nearest design for the record.
    dev = {d["id"]: d for d in json.loads((written / "report.json").read_text())["devices"]}
    assert dev["ultra96-v2"]["latency_ms"] == 14.25


def test_not_trained_hint_names_the_command_that_trains_it(written):
    rows, _ = _table((written / "report.html").read_text())
    assert rows["rtx-4090"]["would_pass_with"] == (
        f"give price_usd in a --devices file; then also: {NOT_TRAINED} "
        "(train them: fitformer profile --budget tiny)")
    assert rows["rtx-4090"]["dev accuracy"] == "-"
    assert "fitformer profile" not in rows["ultra96-v2"]["would_pass_with"]
    # A hint select already gave is shown once, as given.
    assert rows["jetson-orin-nano"]["would_pass_with"] == (
        f"give price_usd in a --devices file; then also: {NOT_TRAINED} "
        "(`fitformer profile --budget tiny` trains them)")


def test_pattern_text_names_the_block():
    from fitformer.select.report import _pattern_text

    assert _pattern_text({"pattern": "hp"}) == "hp"                     # older reports
    assert _pattern_text({"pattern": "hp", "block": [16, 16], "banks": 4}) == "hp 16x16 B=4"
    assert _pattern_text({"pattern": "hp", "block": [1, 16], "banks": 4}) == "hp 1x16 B=4"
    assert _pattern_text({"pattern": "nm", "block": [16, 16], "nm_m": 20}) == "nm m=20"
    assert _pattern_text({"pattern": "unstructured", "block": [1, 16], "banks": 2}) == \
        "unstructured"


def test_select_and_profile_default_block():
    """HP on classification prunes 1x16 level-1 blocks by default (docs/pruning-recipe.md);
    other patterns and translation keep design.md §3's 16x16; a given block is kept."""
    assert Profile().block == (1, 16)
    assert Profile(pattern="unstructured").block == (16, 16)
    assert Profile(pattern="cbb").block == (16, 16)
    assert Profile(task="translation", dataset="tatoeba-en-fr").block == (16, 16)
    assert Profile(block=(16, 16)).block == (16, 16)
    assert Profile()._spec(0.8).block == (1, 16)           # the runs it trains


def test_train_command_names_the_options_away_from_their_defaults():
    assert train_command(Profile()) == "fitformer profile --budget default"
    assert train_command(Profile(model="my model", pattern="unstructured",
                                 level2_density=0.3, budget="quick")) == (
        "fitformer profile --budget quick --model 'my model' --pattern unstructured "
        "--level2-density 0.3")
    # HP on classification defaults to 1x16 level-1 blocks, other patterns to 16x16.
    assert train_command(Profile(block=(1, 16), banks=2, budget="tiny")) == \
        "fitformer profile --budget tiny --banks 2"
    assert train_command(Profile(block=(16, 16), budget="tiny")) == \
        "fitformer profile --budget tiny --block 16x16"
    assert train_command(Profile(pattern="nm", nm_m=20, budget="tiny")) == \
        "fitformer profile --budget tiny --pattern nm --nm-m 20"
    assert Profile(pattern="nm", nm_m=20)._spec(0.95).make_pattern().plan((384, 384), 0.95) \
        == (pytest.approx(0.05),)
    # A pattern without blocks takes no --block (profile refuses one).
    assert train_command(Profile(pattern="unstructured", block=(1, 16), budget="tiny")) == \
        "fitformer profile --budget tiny --pattern unstructured"
    assert train_command(Profile(dataset="tatoeba-en-fr", task="translation",
                                 budget="tiny")) == ("fitformer profile --budget tiny "
                                                     "--task translation")
    assert train_command(Profile(dense_dir=Path("/r/dense"), budget="tiny",
                                 text_column="review")) == (
        "fitformer profile --budget tiny --dense /r/dense --text-column review")
    resolved = Profile(budget="tiny")          # the budget's own dense run, found later
    resolved.dense_dir = Path("/r/own")
    assert train_command(resolved) == "fitformer profile --budget tiny"


# Appended to the test's copy of report.html: once the page has loaded, each image's
# loaded state and natural size, written into the DOM that --dump-dom prints.
PROBE = ("<script>window.addEventListener('load', () => {const o = "
         "document.createElement('pre'); o.id = 'img-sizes'; o.textContent = "
         "JSON.stringify([...document.images].map(i => [i.complete, i.naturalWidth, "
         "i.naturalHeight])); document.body.appendChild(o);});</script>")


def _rendered_image_sizes(page: Path, profile_dir: Path) -> list[list]:
    """``[[complete, naturalWidth, naturalHeight], ...]`` of every image of ``page`` as
    headless Chromium renders it."""
    html = page.read_text()
    assert html.count("</body>") == 1
    page.write_text(html.replace("</body>", PROBE + "</body>"))
    proc = subprocess.run(
        [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         f"--user-data-dir={profile_dir}", "--virtual-time-budget=5000", "--dump-dom",
         page.as_uri()], capture_output=True, text=True, timeout=120)
    m = re.search(r'<pre id="img-sizes">(.*?)</pre>', proc.stdout)
    assert m, f"chromium rc {proc.returncode}; stderr tail: {proc.stderr[-2000:]}"
    return json.loads(m.group(1))


@pytest.mark.skipif(_chromium() is None, reason="chromium is not installed (apt-get install "
                                                "chromium; .ci/run installs it)")
def test_report_html_renders_every_plot_in_chromium_when_moved(written, tmp_path):
    moved = tmp_path / "moved"
    moved.mkdir()
    shutil.copy(written / "report.html", moved / "report.html")     # without the PNGs
    sizes = _rendered_image_sizes(moved / "report.html", tmp_path / "chromium-profile")
    expected = [_png_size((written / name).read_bytes()) for name in PLOTS.values()]
    assert all(w > 100 and h > 100 for w, h in expected), expected
    assert sizes == [[True, w, h] for w, h in expected]
