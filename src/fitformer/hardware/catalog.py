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

Two kinds of problem, both reported for every entry in one pass:

- a malformed entry (wrong type, negative, unknown field or kind, no id) makes
  :func:`load_catalog` raise one :class:`FitformerError` that lists them all;
- an incomplete or implausible entry (a figure its latency model needs is missing or 0, a
  figure outside :data:`SANITY_BOUNDS`, an FPGA without a fixed-point precision) loads, and
  :meth:`Device.problems` names each problem: ``fitformer devices`` prints them as warnings
  and ``select`` reports the device infeasible (``incomplete_figures`` /
  ``implausible_figures``) and goes on to the next one.
"""

from __future__ import annotations

import functools
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


#: Plausibility bounds per figure, ``(low, high, unit)``, inclusive. Generous on purpose:
#: the upper bounds are ten times or more the largest figure in the shipped catalog (U250:
#: 12,288 DSP, 5,376 BRAM_18K, 1,280 URAM, 1,728,000 LUT, 3,456,000 FF; RTX 4090: 1,008
#: GB/s, 450 W, devices.yaml), the lower ones far below the smallest (PYNQ-Z2: 220 DSP,
#: 53,200 LUT, 100 MHz). A figure outside them is a typo or a unit slip (bits for blocks,
#: kHz for MHz, W for mW), not a device. 0 counts as missing where a latency model needs the
#: figure (:func:`kind_needs`); ``price_usd`` 0 is a device already owned.
SANITY_BOUNDS: dict[str, tuple[float, float, str]] = {
    "dsp": (1, 200_000, "DSP slices"),
    "bram_18k": (1, 100_000, "BRAM_18K blocks"),
    "uram": (0, 20_000, "URAM blocks"),
    "lut": (1_000, 20_000_000, "LUTs"),
    "ff": (1_000, 40_000_000, "flip-flops"),
    "clock_mhz": (10, 1_500, "MHz"),
    "dram_gbytes_per_s": (0.1, 20_000, "GB/s"),
    "peak_tflops": (0.001, 10_000, "TFLOPS"),
    "peak_tflops_fp16": (0.001, 100_000, "TFLOPS"),
    "threads": (1, 4_096, "threads"),
    "call_overhead_ms": (0, 1_000, "ms"),
    "price_usd": (0, 10_000_000, "USD"),
    "power_w": (0.1, 10_000, "W"),
}


def kind_needs() -> dict[str, tuple[str, ...]]:
    """The device kinds of the shipped catalog (its ``kinds`` table) and the figures each
    kind's latency back-end cannot do without (missing or 0 is a problem): the FPGA
    accelerator model's (:func:`fitformer.hardware.dse.platform_of`), a catalog CPU's
    roofline, a GPU's engine model (one of the two peaks as well; the engine picks which).
    A ``kind`` outside this table is refused when the catalog loads; every kind has a
    back-end in :mod:`fitformer.hardware.backends` (tested).

    Raises:
        FitformerError: the shipped ``kinds`` table is malformed (a packaging error).
    """
    return dict(_kind_needs())


@functools.cache
def _kind_needs() -> tuple[tuple[str, tuple[str, ...]], ...]:
    table = _load_yaml(_shipped_text(), "the shipped catalog").get("kinds")
    if not isinstance(table, dict) or not table:
        raise FitformerError("the shipped catalog has no 'kinds' table; reinstall fitformer.")
    out = []
    for kind, entry in table.items():
        entry = {} if entry is None else entry
        needs = entry.get("needs", []) if isinstance(entry, dict) else None
        if not isinstance(needs, list) or any(f not in _FIGURE_FIELDS for f in needs):
            raise FitformerError(f"the shipped catalog's kinds.{kind}.needs must list "
                                 f"figures of {', '.join(_FIGURE_FIELDS)}; got {needs!r}.")
        out.append((str(kind), tuple(needs)))
    return tuple(out)


def _shipped_text() -> str:
    return resources.files("fitformer.hardware").joinpath("devices.yaml").read_text()


FPGA_PRECISIONS = ("fx16", "fx8")
#: Required figures that may be null, and what null means (said when one is left out).
NULLABLE = {"price_usd": "an unpriced device is shown but never selected",
            "power_w": "ordered last by --objective power, never selected by it",
            "call_overhead_ms": "no per-call overhead is added"}


def _n(v: float) -> str:
    """A figure for a message: thousands separators, no exponent for whole numbers."""
    return f"{int(v):,}" if float(v).is_integer() and abs(v) < 1e18 else f"{v:,g}"


class Figure(BaseModel):
    """One catalog figure with its provenance; ``date`` (ISO) when the figure was published
    or seen (prices: the day of the quote)."""

    model_config = ConfigDict(extra="forbid")
    value: Any = None
    source: str
    verified: bool = False
    note: str = ""
    date: str | None = None


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
    kind: str
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
    #: What ``price_usd`` is: a vendor or distributor ``list`` price, a new-unit ``street``
    #: price from a shop, or a ``used``-market ask; ``None`` with no price.
    price_kind: Literal["list", "street", "used"] | None = None
    power_w: Figure

    @field_validator("kind")
    @classmethod
    def _known_kind(cls, kind: str) -> str:
        kinds = kind_needs()
        if kind not in kinds:
            raise ValueError(f"unknown kind {kind!r}; known kinds: {', '.join(sorted(kinds))} "
                             "(a new kind needs a latency back-end in fitformer/hardware/"
                             "backends/ and an entry under 'kinds' in devices.yaml)")
        return kind

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

    def problems(self, ignore: tuple[str, ...] = ()) -> list[dict]:
        """What keeps this entry from being estimated or trusted, each as ``{"field",
        "problem": "missing" | "out_of_bounds" | "no_precision" | "shell", "message"}``:
        a figure its latency model needs (:func:`kind_needs`) missing or 0, a figure outside
        :data:`SANITY_BOUNDS` (the bound is in the message), an FPGA listing neither fx16
        nor fx8, a shell larger than the part. ``ignore``: fields given another way (e.g.
        ``clock_mhz`` by ``--clock-mhz``). Empty for a complete entry."""
        out = []
        needed = () if self.id == HOST_CPU_ID else kind_needs().get(self.kind, ())
        for f in needed:
            if f not in ignore and not self.num(f):
                out.append({"field": f, "problem": "missing", "message":
                            f"{f} is {'0' if self.num(f) == 0 else 'missing'} (the "
                            f"{self.kind} latency model needs it)"})
        if self.kind == "gpu" and not (self.num("peak_tflops") or
                                       self.num("peak_tflops_fp16")):
            out.append({"field": "peak_tflops_fp16", "problem": "missing", "message":
                        "peak_tflops_fp16 and peak_tflops are missing or 0 (the GPU engine "
                        "model needs the one of its precision)"})
        for f, (lo, hi, unit) in SANITY_BOUNDS.items():
            v = self.num(f)
            zero_is_missing = f in needed or (self.kind == "gpu" and f.startswith("peak"))
            if v is None or f in ignore or (v == 0 and zero_is_missing):
                continue
            if not lo <= v <= hi:
                out.append({"field": f, "problem": "out_of_bounds", "message":
                            f"{f} {_n(v)} is outside the plausible range [{_n(lo)}, "
                            f"{_n(hi)}] {unit}"})
        if self.kind == "fpga" and not any(p in FPGA_PRECISIONS for p in self.precisions):
            out.append({"field": "precisions", "problem": "no_precision", "message":
                        f"precisions {list(self.precisions)} lists neither fx16 nor fx8, the "
                        "accelerator's precisions (give e.g. precisions: [fx16, fx8])"})
        shell = (self.shell.value if self.shell is not None else None) or {}
        if isinstance(shell, dict):
            for k, v in shell.items():
                full = self.num(k) if k in RESOURCE_KEYS else None
                if full and isinstance(v, int | float) and v > full:
                    out.append({"field": "shell", "problem": "shell", "message":
                                f"shell.{k} {_n(v)} is more than the part's {k} {_n(full)}"})
        return out

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
               "precisions": list(self.precisions), "price_kind": self.price_kind}
        for f in ("part", "dsp_type", *RESOURCE_KEYS, "peak_tflops", "peak_tflops_fp16",
                  "threads",
                  "dram_gbytes_per_s", "clock_mhz", "call_overhead_ms", "price_usd", "power_w"):
            out[f] = self.num(f)
        out["on_chip_mb"] = self.on_chip_bytes() / 1e6 if self.kind == "fpga" else None
        out["unverified"] = sorted(f for f, v in self if isinstance(v, Figure) and not v.verified)
        out["sources"] = {f: {"source": v.source, "verified": v.verified,
                              **({"note": v.note} if v.note else {}),
                              **({"date": v.date} if v.date else {})}
                          for f, v in self if isinstance(v, Figure)}
        out["problems"] = [p["message"] for p in self.problems()]
        return out


def _field_problems(where: str, exc: ValidationError) -> list[str]:
    """One line per field pydantic rejected; a missing price/power/overhead says null is
    allowed."""
    out = []
    for e in exc.errors():
        loc = [str(p) for p in e["loc"]]
        name = ".".join(loc)
        if e["type"] == "missing" and loc and loc[0] in NULLABLE:
            msg = (f"required; give a number, or null when unknown ({loc[0]}: null; "
                   + NULLABLE[loc[0]] + ")")
        elif e["type"] == "missing" and len(loc) > 1 and loc[-1] == "source":
            msg = "a figure written as {value, ...} needs a source (or give a bare number)"
        else:
            msg = e["msg"]
        out.append(f"{where}: field {name}: {msg}")
    return out


def _catalog_error(problems: list[str]) -> FitformerError:
    return FitformerError(
        f"{len(problems)} problem(s) in the device catalog:\n  - " + "\n  - ".join(problems)
        + "\nFix them all (the layout is that of devices.yaml in the fitformer.hardware "
        "package; a figure is a number, null, or {value, source, verified}).")


def _parse(entries: Any, where: str, problems: list[str]) -> list[dict]:
    """The entries with an id; each one without is added to ``problems``."""
    if not isinstance(entries, list):
        raise FitformerError(f"{where}: 'devices' must be a list of entries.")
    out = []
    for i, e in enumerate(entries):
        if not isinstance(e, dict) or "id" not in e:
            problems.append(f"{where}: entry {i} has no 'id'; every device needs one")
            continue
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

    Incomplete or implausible entries load; :meth:`Device.problems` names what is wrong.

    Raises:
        FitformerError: unreadable file, or malformed entries: every malformed entry and
            field of the file in one message; or an unknown id in ``only``.
    """
    base = _load_yaml(_shipped_text(), "the shipped catalog")
    problems: list[str] = []
    entries: dict[str, dict] = {e["id"]: e for e in _parse(base["devices"], "catalog",
                                                           problems)}
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
        user_entries = _parse(user["devices"], str(path), problems)
        ids = [e["id"] for e in user_entries]
        dups = sorted({str(i) for i in ids if ids.count(i) > 1})
        if dups:
            problems.append(f"--devices {path}: id(s) {', '.join(dups)} appear more than "
                            "once; give each device once")
        for e in user_entries:
            merged = {**entries.get(e["id"], {}), **e}
            entries[e["id"]] = merged
    devices = []
    for did, e in entries.items():
        try:
            devices.append(Device.model_validate(e))
        except ValidationError as exc:
            src = str(devices_file) if devices_file else "the shipped catalog"
            problems.extend(_field_problems(f"{src}, device {did!r}", exc))
    if problems:
        raise _catalog_error(problems)
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
