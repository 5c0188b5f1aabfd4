"""Kernel tests: each kernel against an fp64 reference (Triton ones on a GPU or under TRITON_INTERPRET=1)."""
