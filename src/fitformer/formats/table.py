"""Size of a masked matrix in every format, against the pattern's lower bound."""

from __future__ import annotations

import numpy as np

from fitformer.formats.bounds import lower_bound_bits
from fitformer.formats.formats import FORMATS, make_format


def format_sizes(values: np.ndarray, mask: np.ndarray, *, value_bits: int, pattern: str,
                 counts: dict, block: tuple[int, int] = (16, 16), banks: int = 4,
                 nm_m: int = 4, aligned: bool = False, formats=FORMATS) -> list[dict]:
    """One row per format: ``{"format", "total_bits", "value_bits", "index_bits",
    "pointer_bits", "ratio_to_bound"}``, plus the bound itself in every row.
    ``ratio_to_bound`` is ``None`` when the bound is 0 bits (an all-zero mask).

    Args:
        values: float matrix ``(M, N)``; mask: bool ``(M, N)``.
        value_bits: bits per stored value (32 fp32, 16 fx16, 8 fx8).
        pattern, counts: the pattern the mask was made with and its counts (for the bound).
        block, banks: format parameters (``r x c`` and ``B``), also the bound's.
        aligned: round index widths to 8/16/32 bits.
    """
    r, c = block
    bound = lower_bound_bits(mask, value_bits, pattern, counts, r=r, c=c, banks=banks, m=nm_m)
    rows = []
    for name in formats:
        fmt = make_format(name, block=block, banks=banks)
        size = fmt.size(fmt.encode(values, mask), value_bits, aligned)
        rows.append({"format": name, **size.as_dict(),
                     "ratio_to_bound": size.total_bits / bound if bound > 0 else None,
                     "bound_bits": bound})
    return rows
