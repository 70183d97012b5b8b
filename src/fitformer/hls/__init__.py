"""HLS code generation: a Vitis HLS C++ project of a chosen accelerator design (issue 19),
and its C simulation with g++ against the exact fixed-point path."""

from fitformer.hls.csim import csim, syntax_check
from fitformer.hls.project import generate

__all__ = ["csim", "generate", "syntax_check"]
