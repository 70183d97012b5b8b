"""Resource rules of the accelerator model: memories, multipliers and the constants table.

Every constant lives in :data:`CONSTANTS` with its source; a constant that no datasheet
gives is marked ``assumed`` (design.md §6). ``docs/accelerator-model.md`` prints the table.

Memories (Xilinx UG573, *UltraScale Architecture Memory Resources*, v1.13, 2021):

* a BRAM_18K holds 18 Kib in one of the aspect ratios 16K x 1, 8K x 2, 4K x 4, 2K x 9,
  1K x 18, 512 x 36; a memory of ``width x depth`` takes the cheapest tiling;
* a URAM (UltraScale+ only) is 4K x 72;
* a memory of at most ``lutram_max_bits`` bits is built from LUTs (distributed RAM: a LUT6
  is a 64 x 1 RAM, UG574), as HLS tools do for small arrays.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

BRAM_18K_SHAPES = ((16384, 1), (8192, 2), (4096, 4), (2048, 9), (1024, 18), (512, 36))
URAM_SHAPE = (4096, 72)
LUTRAM_DEPTH = 64


@dataclass(frozen=True)
class Constant:
    value: float
    unit: str
    source: str
    meaning: str


CONSTANTS: dict[str, Constant] = {
    "lutram_max_bits": Constant(1024, "bits", "assumed",
                                "memories up to this size are built from LUTs, not BRAM"),
    "mac_pipeline_cycles": Constant(8, "cycles", "assumed",
                                    "weight/input read (2) + DSP multiply (4) + accumulate (2) "
                                    "before the bank adder tree"),
    "stream_fifo_depth": Constant(64, "entries", "assumed",
                                  "weight FIFO per bank of every PE when weights stream"),
    "dram_latency_ns": Constant(150, "ns", "assumed",
                                "first-word latency of one DRAM burst (embedding gather)"),
    "dram_outstanding": Constant(8, "requests", "assumed",
                                 "embedding rows fetched concurrently"),
    "guard_bits": Constant(8, "bits", "assumed",
                           "accumulator = 2 W + guard bits (saturating)"),
    "fp32_add_dsp": Constant(2, "DSP", "assumed",
                             "fp32 adder, full-DSP implementation (order of Xilinx PG060)"),
    "fp32_mul_dsp": Constant(3, "DSP", "assumed",
                             "fp32 multiplier, full-DSP implementation (order of PG060)"),
    "fp32_exp_dsp": Constant(7, "DSP", "assumed", "fp32 exponential (order of PG060)"),
    "fp32_op_lut": Constant(400, "LUT", "assumed", "LUTs of one fp32 operator"),
    "fp32_op_ff": Constant(600, "FF", "assumed", "FFs of one fp32 operator"),
    "fp32_op_latency": Constant(12, "cycles", "assumed", "pipeline depth of one fp32 operator"),
    "gelu_dsp": Constant(8, "DSP", "assumed", "fp32 GELU (erf by polynomial)"),
    "fx16_op_latency": Constant(4, "cycles", "assumed",
                                "pipeline depth of one fx16 polynomial operator (two "
                                "multiply-adds)"),
    "fx16_nonlinear_dsp": Constant(1, "DSP", "NN-LUT (Yu et al., DAC 2022) + assumed",
                                   "one fx16 non-linear lane: exp, GELU or 1/sqrt by a "
                                   "table lookup with linear interpolation (the table in "
                                   "BRAM, shared by two lanes), one multiplier"),
    "fx16_table_entries": Constant(1024, "entries", "assumed",
                                   "entries of one fx16 non-linear lookup table (16 bit)"),
    "fx16_nonlinear_lut": Constant(150, "LUT", "assumed",
                                   "range reduction, shifts and control of one fx16 lane"),
    "fx16_nonlinear_ff": Constant(200, "FF", "assumed", "pipeline registers of one fx16 lane"),
    "reciprocal_lut": Constant(1200, "LUT", "assumed",
                               "one pipelined reciprocal (softmax row sum, layer-norm "
                               "1/sqrt seed) per unit"),
    "mul_lut": Constant(8, "LUT", "assumed", "control and operand staging per multiplier "
                        "(the shared array's c/B:1 input multiplexers are counted apart)"),
    "mul_ff": Constant(16, "FF", "UG579 (2021) + assumed",
                       "fabric registers per multiplier: the DSP48E2's A/B/M/P pipeline "
                       "registers are inside the slice (UG579), only the activation operand "
                       "is staged in fabric (16 FF assumed)"),
    "pe_lut": Constant(250, "LUT", "assumed", "control, index decode, address generation per PE"),
    "pe_ff": Constant(350, "FF", "assumed", "per-PE state"),
    "unit_lut": Constant(1500, "LUT", "assumed", "control and stream interfaces per unit"),
    "unit_ff": Constant(2000, "FF", "assumed", "per unit"),
    "adder_lut_per_bit": Constant(1, "LUT/bit", "UG574 (2017)",
                                  "a ripple adder takes one LUT6 per bit with the carry chain"),
    "top_lut": Constant(8000, "LUT", "assumed", "DMA, host interface and scheduler"),
    "top_ff": Constant(12000, "FF", "assumed", "DMA, host interface and scheduler"),
    "top_bram_18k": Constant(8, "BRAM_18K", "assumed", "DMA buffers"),
}


def const(name: str) -> float:
    return CONSTANTS[name].value


@dataclass(frozen=True)
class Memory:
    """Resources of one memory: BRAM_18K, URAM and LUT (distributed RAM) counts."""

    bram_18k: int = 0
    uram: int = 0
    lut: int = 0

    def __add__(self, other: Memory) -> Memory:
        return Memory(self.bram_18k + other.bram_18k, self.uram + other.uram,
                      self.lut + other.lut)

    def times(self, n: int) -> Memory:
        return Memory(self.bram_18k * n, self.uram * n, self.lut * n)


def _packed(width_bits: int, depth: int, word_bits: int) -> tuple[int, int]:
    """(words, word width) when ``floor(word_bits / width)`` entries share one word."""
    per_word = max(1, word_bits // width_bits)
    return math.ceil(depth / per_word), (width_bits * per_word if per_word > 1 else width_bits)


def bram_18k_count(width_bits: int, depth: int, packable: bool = False) -> int:
    """BRAM_18K blocks for a ``width_bits x depth`` memory: the cheapest UG573 aspect
    ratio tiling (0 for an empty memory). ``packable``: a sequentially read memory whose
    entries may share a word (HLS ``array_reshape``), as weights are."""
    if width_bits <= 0 or depth <= 0:
        return 0
    best = min(math.ceil(width_bits / w) * math.ceil(depth / d) for d, w in BRAM_18K_SHAPES)
    if packable:
        for d, w in BRAM_18K_SHAPES:
            if w >= width_bits:
                words, _ = _packed(width_bits, depth, w)
                best = min(best, math.ceil(words / d))
    return best


def uram_count(width_bits: int, depth: int, packable: bool = False) -> int:
    """URAM blocks (4K x 72, UG573) for a ``width_bits x depth`` memory."""
    if width_bits <= 0 or depth <= 0:
        return 0
    d, w = URAM_SHAPE
    if packable and width_bits <= w:
        words, _ = _packed(width_bits, depth, w)
        return math.ceil(words / d)
    return math.ceil(width_bits / w) * math.ceil(depth / d)


def memory(width_bits: int, depth: int, *, kind: str = "bram",
           packable: bool = False) -> Memory:
    """Resources of one memory: LUTRAM when at most ``lutram_max_bits``, else ``kind``
    (``bram`` for BRAM_18K or ``uram``).

    Args:
        width_bits: word width in bits; depth: words.
        packable: entries may share a word (sequential reads).
    """
    bits = width_bits * depth
    if bits <= 0:
        return Memory()
    if bits <= const("lutram_max_bits"):
        return Memory(lut=width_bits * math.ceil(depth / LUTRAM_DEPTH))
    if kind == "uram":
        return Memory(uram=uram_count(width_bits, depth, packable))
    return Memory(bram_18k=bram_18k_count(width_bits, depth, packable))


@dataclass(frozen=True)
class MemorySpec:
    """A memory to place: ``copies`` memories of ``width_bits x depth``, owned by
    ``owner`` (a unit name)."""

    owner: str
    width_bits: int
    depth: int
    copies: int = 1
    packable: bool = True

    def cost(self, kind: str) -> Memory:
        return memory(self.width_bits, self.depth, kind=kind,
                      packable=self.packable).times(self.copies)


def place_memories(specs: list[MemorySpec], uram_available: float) -> dict[str, Memory]:
    """Bind large memories (weights, activation buffers) to URAM or BRAM_18K: the largest
    first go to URAM while it lasts (a URAM holds 16 BRAM_18K's bits, UG573), the rest to
    BRAM_18K. Returns the resources per owner."""
    out: dict[str, Memory] = {}
    left = uram_available
    for spec in sorted(specs, key=lambda s: -s.width_bits * s.depth * s.copies):
        u = spec.cost("uram")
        if u.uram and u.uram <= left:
            left -= u.uram
            mem = u
        else:
            mem = spec.cost("bram")
        out[spec.owner] = out.get(spec.owner, Memory()) + mem
    return out


def value_bits(precision: str) -> int:
    """Bits per value: ``fx16`` 16, ``fx8`` 8 (design.md §4)."""
    if precision not in ("fx16", "fx8"):
        raise ValueError(f"FPGA precision must be fx16 or fx8, got {precision!r}")
    return int(precision[2:])


def accumulator_bits(precision: str) -> int:
    """Partial-sum width: ``2 W + guard_bits`` (assumed)."""
    return 2 * value_bits(precision) + int(const("guard_bits"))


def dsp_per_multiplier(precision: str, dsp_type: str | None, lanes: int) -> float:
    """DSP slices per multiplier (design.md §6): fx16 takes one; fx8 packs two multipliers
    that share an operand into one DSP48E2 (Xilinx WP486, 2017), which needs at least two
    token lanes sharing each weight (``lanes >= 2``); one per DSP on DSP48E1 (7-series)."""
    if precision == "fx8" and (dsp_type or "").upper() == "DSP48E2" and lanes >= 2:
        return 0.5
    return 1.0
