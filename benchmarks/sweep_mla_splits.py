"""The Gluon MLA decode's time by split count at batch 1, CUDA-graph medians (torch + Triton only, no vLLM).

H=32, latent 512 + rope 64, the plugin's 1,888-token pages, contexts 32K / 128K / 4K: what the wgmma kernel's
split rule (``choose_num_splits`` with one-tile splits and a merge cost a split) was fitted to.

    python benchmarks/sweep_mla_splits.py
"""

import math
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.bench_mla_decode import BS_REAL, L, R, SCALE, Case, fill_cache  # noqa: E402
from kernels.mla.triton_decode import mla_decode  # noqa: E402

SPLITS = (None, 16, 32, 48, 64, 96, 128, 132, 192, 256)     # None: the split rule of the tree


def main():
    from triton.testing import do_bench_cudagraph
    gen = torch.Generator().manual_seed(0)
    for B, ctx in ((1, 32768), (1, 131072), (1, 4096)):
        cache = torch.empty(B * math.ceil(ctx / BS_REAL) + 2, BS_REAL, L + R, dtype=torch.bfloat16, device="cuda")
        fill_cache(cache)
        case = Case("bf16", cache, B, ctx, BS_REAL, gen)
        row = []
        for sp in SPLITS:
            f = lambda: mla_decode(case.q_lat, case.q_pe, cache, case.block_table, case.seq_lens, SCALE, sp,  # noqa
                                   max_seq_len=ctx, wgmma=True)
            try:
                row.append(f"{sp}: {do_bench_cudagraph(f, rep=50, return_mode='median') * 1e3:.1f}")
            except Exception as e:                   # a count the kernel or the graph capture refuses
                row.append(f"{sp}: {type(e).__name__}")
        print(f"{B}x{ctx} graph us by splits: " + "; ".join(row), flush=True)
        del cache


if __name__ == "__main__":
    main()
