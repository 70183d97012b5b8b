"""The device catalog (design.md §7): FPGA boards, GPUs and the host CPU, as data.

The catalog ships as ``devices.yaml`` beside this module; every figure carries its
``source`` (a key of the file's ``sources`` table, or ``assumed``) and whether it was
``verified`` in that source. A user file (``--devices FILE``, same layout) merges by ``id``:
an entry with a known id overrides the fields it gives, a new id adds a device. ``--only``
restricts the list. The host CPU entry is generated at run time (model name, threads) with
no price: it is shown, and selectable once a user file gives it a price.

Resources are full-part counts; the platform shell's share is subtracted in one place,
:meth:`Device.available`. On-chip memory is derived from the block RAM counts: a BRAM_18K
holds 18,432 bits and a URAM 294,912 bits (Xilinx UG573, UltraScale Memory Resources, 2021).
"""

from __future__ import annotations

import math
import os
import platform
import re
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from fitformer.errors import FitformerError

BRAM_18K_BITS = 18 * 1024
URAM_BITS = 288 * 1024
RESOURCE_KEYS = ("dsp", "bram_18k", "uram", "lut", "ff")
HOST_CPU_ID = "host-cpu"


class Figure(BaseModel):
    """One catalog figure with its provenance."""

    model_config = ConfigDict(extra="forbid")
    value: Any = None
    source: str
    verified: bool = False
    note: str = ""


def _fig(value, source="assumed", verified=False, note="") -> Figure:
    return Figure(value=value, source=source, verified=verified, note=note)


_FIGURE_FIELDS = ("part", "dsp_type", "dsp", "bram_18k", "uram", "lut", "ff", "shell",
                  "peak_tflops", "peak_tflops_fp16", "threads", "dram_gbytes_per_s", "clock_mhz",
                  "call_overhead_ms", "price_usd", "power_w")


class Device(BaseModel):
    """A catalog entry. Numeric figures are :class:`Figure` objects; use :meth:`num`.
    A user file may give a bare value (``price_usd: 3000``): it becomes a figure with source
    ``user file``, unverified."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _bare_values(cls, data: Any) -> Any:
        if isinstance(data, dict):
            data = dict(data)
            for f in _FIGURE_FIELDS:
                if f in data and not isinstance(data[f], dict | Figure):
                    data[f] = {"value": data[f], "source": "user file", "verified": False}
        return data

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$")
    name: str
    kind: Literal["fpga", "gpu", "cpu"]
    part: Figure | None = None
    dsp_type: Figure | None = None
    dsp: Figure | None = None
    bram_18k: Figure | None = None
    uram: Figure | None = None
    lut: Figure | None = None
    ff: Figure | None = None
    shell: Figure | None = None
    peak_tflops: Figure | None = None
    peak_tflops_fp16: Figure | None = None
    threads: Figure | None = None
    dram_gbytes_per_s: Figure | None = None
    clock_mhz: Figure | None = None
    precisions: list[Literal["fp32", "fx16", "fx8"]] = ["fp32"]
    call_overhead_ms: Figure
    price_usd: Figure
    power_w: Figure

    @field_validator("dsp", "bram_18k", "uram", "lut", "ff", "threads")
    @classmethod
    def _whole_count(cls, fig: Figure | None) -> Figure | None:
        v = None if fig is None else fig.value
        if isinstance(v, float) and math.isfinite(v) and v != int(v):
            raise ValueError(f"a resource count must be a whole number, got {v}")
        return fig

    @field_validator("dsp", "bram_18k", "uram", "lut", "ff", "dram_gbytes_per_s", "clock_mhz",
                     "call_overhead_ms", "price_usd", "power_w", "peak_tflops",
                     "peak_tflops_fp16", "threads")
    @classmethod
    def _non_negative(cls, fig: Figure | None) -> Figure | None:
        if fig is not None and fig.value is not None:
            if not isinstance(fig.value, int | float) or isinstance(fig.value, bool):
                raise ValueError(f"value must be a number or null, got {fig.value!r}")
            if not math.isfinite(fig.value):
                raise ValueError(f"value must be finite, got {fig.value}")
            if fig.value < 0:
                raise ValueError(f"value must be >= 0, got {fig.value}")
        return fig

    def num(self, field: str) -> float | None:
        """The numeric value of a figure, or ``None`` when unknown."""
        fig = getattr(self, field)
        return None if fig is None else fig.value

    def available(self) -> dict[str, float]:
        """Resources left to the accelerator: full-part counts minus the platform shell's
        (design.md §7: subtracted here and nowhere else). Unknown counts are 0."""
        shell = (self.shell.value if self.shell is not None and self.shell.value else {}) or {}
        return {k: max(0.0, (self.num(k) or 0) - float(shell.get(k, 0))) for k in RESOURCE_KEYS}

    def on_chip_bytes(self) -> int:
        """BRAM_18K and URAM capacity in bytes (parity bits included), from the counts."""
        return int(((self.num("bram_18k") or 0) * BRAM_18K_BITS
                    + (self.num("uram") or 0) * URAM_BITS) // 8)

    def summary(self) -> dict:
        out = {"id": self.id, "name": self.name, "kind": self.kind,
               "precisions": list(self.precisions)}
        for f in ("part", "dsp_type", *RESOURCE_KEYS, "peak_tflops", "peak_tflops_fp16",
                  "threads",
                  "dram_gbytes_per_s", "clock_mhz", "call_overhead_ms", "price_usd", "power_w"):
            out[f] = self.num(f)
        out["on_chip_mb"] = self.on_chip_bytes() / 1e6 if self.kind == "fpga" else None
        out["unverified"] = sorted(f for f, v in self if isinstance(v, Figure) and not v.verified)
        out["sources"] = {f: {"source": v.source, "verified": v.verified,
                              **({"note": v.note} if v.note else {})}
                          for f, v in self if isinstance(v, Figure)}
        return out


def _format_error(where: str, exc: ValidationError) -> FitformerError:
    problems = "; ".join(f"field {'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
                         for e in exc.errors())
    return FitformerError(f"{where}: {problems}. Fix these fields (the layout is that of "
                          "devices.yaml in the fitformer.hardware package; a figure is a "
                          "number or {value, source, verified}).")


def _parse(entries: Any, where: str, *, partial: bool = False) -> list[dict]:
    if not isinstance(entries, list):
        raise FitformerError(f"{where}: 'devices' must be a list of entries.")
    out = []
    for i, e in enumerate(entries):
        if not isinstance(e, dict) or "id" not in e:
            raise FitformerError(f"{where}: entry {i} has no 'id'; every device needs one.")
        out.append(e)
    return out


def _load_yaml(text: str, where: str) -> dict:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise FitformerError(f"{where} is not valid YAML ({exc}).") from None
    if not isinstance(data, dict) or "devices" not in data:
        raise FitformerError(f"{where} has no top-level 'devices' list.")
    return data


def host_cpu() -> Device:
    """The machine this runs on, measured at run time; no price until a user gives one."""
    model = platform.processor() or platform.machine()
    try:
        text = Path("/proc/cpuinfo").read_text()
        m = re.search(r"^model name\s*:\s*(.+)$", text, re.M)
        if m:
            model = m.group(1).strip()
    except OSError:
        pass
    threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return Device(
        id=HOST_CPU_ID, name=f"host CPU: {model}", kind="cpu",
        threads=_fig(threads, "measured", True, "threads available to this process"),
        precisions=["fp32"],
        call_overhead_ms=_fig(0.0, "measured", True, "latency is measured end to end"),
        price_usd=_fig(None, "assumed", False, "give it a price with --devices FILE"),
        power_w=_fig(None, "assumed", False))


def load_catalog(devices_file: str | Path | None = None, only: list[str] | None = None,
                 *, include_host: bool = True, flag: str = "--only") -> list[Device]:
    """The catalog, merged with a user file and restricted to ``only``.

    Args:
        devices_file: YAML (or JSON) with a ``devices`` list; entries merge by ``id``.
        only: device ids to keep, in catalog order.
        include_host: add the run-time host CPU entry.
        flag: the option that gave ``only`` (named in the unknown-id error).

    Raises:
        FitformerError: unreadable or malformed file (the message names the entry and the
            field), or an unknown id in ``only``.
    """
    text = resources.files("fitformer.hardware").joinpath("devices.yaml").read_text()
    base = _load_yaml(text, "the shipped catalog")
    entries: dict[str, dict] = {e["id"]: e for e in _parse(base["devices"], "catalog")}
    if include_host:
        entries[HOST_CPU_ID] = host_cpu().model_dump(exclude_none=True)
    if devices_file is not None:
        path = Path(devices_file)
        try:
            user = _load_yaml(path.read_text(), str(path))
        except FileNotFoundError:
            raise FitformerError(f"--devices {path} does not exist; check the path.") from None
        except UnicodeDecodeError:
            raise FitformerError(f"--devices {path} is not UTF-8 text.") from None
        except IsADirectoryError:
            raise FitformerError(f"--devices {path} is a folder; give a YAML file.") from None
        user_entries = _parse(user["devices"], str(path))
        ids = [e["id"] for e in user_entries]
        dups = sorted({i for i in ids if ids.count(i) > 1})
        if dups:
            raise FitformerError(f"--devices {path}: id(s) {', '.join(map(str, dups))} appear "
                                 "more than once; give each device once.")
        for e in user_entries:
            merged = {**entries.get(e["id"], {}), **e}
            entries[e["id"]] = merged
    devices = []
    for did, e in entries.items():
        try:
            devices.append(Device.model_validate(e))
        except ValidationError as exc:
            src = str(devices_file) if devices_file else "the shipped catalog"
            raise _format_error(f"{src}, device {did!r}", exc) from None
    if only:
        known = {d.id for d in devices}
        unknown = [i for i in only if i not in known]
        if unknown:
            raise FitformerError(f"{flag}: unknown device id(s) {', '.join(unknown)}; known: "
                                 f"{', '.join(sorted(known))}.")
        devices = [d for d in devices if d.id in only]
    return devices


def order_by_objective(devices: list[Device], objective: str = "price") -> list[Device]:
    """Devices by ascending price (or power); unknown values last, then by id.

    Raises:
        FitformerError: unknown objective.
    """
    if objective not in ("price", "power"):
        raise FitformerError(f"--objective {objective!r}: choose price or power.")
    field = "price_usd" if objective == "price" else "power_w"
    return sorted(devices, key=lambda d: (d.num(field) is None, d.num(field) or 0, d.id))
