"""Kernels that run pruned models fast on real hardware: the CPU backend
(:mod:`fitformer.kernels.cpu`)."""
