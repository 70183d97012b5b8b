"""Storage formats of pruned weight matrices: encode, decode, exact bit accounting, the
lower bound, and the HP container file."""

from fitformer.formats.bits import SizeBits, index_bits
from fitformer.formats.bounds import lower_bound_bits, mask_log2_count
from fitformer.formats.formats import FORMATS, Encoded, Format, HPFormat, make_format
from fitformer.formats.table import format_sizes

__all__ = ["FORMATS", "Encoded", "Format", "HPFormat", "SizeBits", "format_sizes",
           "index_bits", "lower_bound_bits", "make_format", "mask_log2_count"]
