"""The Gluon MLA decode's time by split count, CUDA-graph medians (torch + Triton only, no vLLM).

H=32, latent 512 + rope 64, the plugin's pages (bf16: 1,888 rows; fp8: 3,776), by default batch 1 at contexts
32K / 128K / 4K: what the wgmma kernel's split rule (``choose_num_splits`` with one-tile splits and a merge cost a
split) was fitted to.

    python benchmarks/sweep_mla_splits.py [--dtype fp8] [--shapes 1x4096,32x4096]
"""

import argparse
import math
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.bench_mla_decode import BS_FP8, BS_REAL, FP8, L, R, SCALE, Case, fill_cache  # noqa: E402
from kernels.mla.triton_decode import mla_decode  # noqa: E402

SPLITS = (None, 16, 32, 48, 64, 96, 128, 132, 192, 256)     # None: the split rule of the tree


def main():
    from triton.testing import do_bench_cudagraph
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dtype", choices=["bf16", "fp8"], default="bf16", help="the latent cache's type")
    ap.add_argument("--shapes", default="1x32768,1x131072,1x4096", help="batch x context, comma-separated")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("sweep_mla_splits.py needs a CUDA GPU (none is visible here)")
    try:
        shapes = [tuple(int(v) for v in x.split("x")) for x in args.shapes.split(",")]
    except ValueError:
        shapes = []
    if not shapes or any(len(sh) != 2 or min(sh) < 1 for sh in shapes):
        ap.error(f"--shapes {args.shapes!r}: expected positive BATCHxCONTEXT items, e.g. 1x4096,32x4096")
    fp8 = args.dtype == "fp8"
    bs = BS_FP8 if fp8 else BS_REAL
    gen = torch.Generator().manual_seed(0)
    print(f"{args.dtype} cache, {bs}-row pages", flush=True)
    for B, ctx in shapes:
        cache = torch.empty(B * math.ceil(ctx / bs) + 2, bs, L + R, dtype=FP8 if fp8 else torch.bfloat16,
                            device="cuda")
        fill_cache(cache)
        case = Case(args.dtype, cache, B, ctx, bs, gen)
        row = []
        for sp in SPLITS:
            f = lambda: mla_decode(case.q_lat, case.q_pe, cache, case.block_table, case.seq_lens, SCALE, sp,  # noqa
                                   k_scale=case.k_scale, max_seq_len=ctx, wgmma=True)
            try:
                row.append(f"{sp}: {do_bench_cudagraph(f, rep=50, return_mode='median') * 1e3:.1f}")
            except Exception as e:                   # a count the kernel or the graph capture refuses
                row.append(f"{sp}: {type(e).__name__}")
        print(f"{B}x{ctx} graph us by splits: " + "; ".join(row), flush=True)
        del cache


if __name__ == "__main__":
    main()
