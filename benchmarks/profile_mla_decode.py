"""Our MLA decode kernels under Nsight Compute: one case, a few settings, a launch each to profile.

Builds one decode step as ``bench_mla_decode.py`` does (H=32, latent 512 + rope 64, the plugin's 1,888-token
pages, shuffled block tables, every sequence at the full context) and runs ``mla_decode`` three times per setting
(the first two compile and warm; profile the third). Needs torch and Triton only (no vLLM). Run under ncu, e.g.

    ncu --kernel-name regex:_mla_decode_wgmma --launch-skip 2 --launch-count 1 --section SpeedOfLight \\
        --section WarpStateStats --section Occupancy python benchmarks/profile_mla_decode.py --settings default

Settings: default (on Hopper the Gluon kernel, ``_mla_decode_wgmma``; elsewhere the Triton one); triton (the Triton
kernel, ``_mla_decode_split``, at its default launch); launch64 (64-token tiles on 8 warps, one program an SM: the
16-bit caches' default until the fifteenth session, the Triton kernel's fp8 default); rows (tokens_as_rows with
64-token tiles on 4 warps at 2 stages: the transposed products on wgmma); tma (tiles through TMA descriptors,
32-token tiles on 4 warps). One ncu process per setting keeps the launch counting simple.
"""

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.bench_mla_decode import BS_REAL, FP8, H, L, R, Case, fill_cache  # noqa: E402
from kernels.mla.triton_decode import mla_decode  # noqa: E402

SETTINGS = {"default": {}, "triton": dict(wgmma=False), "launch64": dict(block_n=64, num_warps=8, num_stages=3),
            "rows": dict(tokens_as_rows=True, block_n=64, num_warps=4, num_stages=2),
            "tma": dict(tma=True, block_n=32, num_warps=4, num_stages=3)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--settings", default="default", choices=sorted(SETTINGS))
    ap.add_argument("--cache", default="bf16", choices=["bf16", "fp8"])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--context", type=int, default=131072)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("profile_mla_decode.py needs a CUDA GPU (none is visible here)")
    gen = torch.Generator().manual_seed(0)
    blocks = args.batch * -(-args.context // BS_REAL) + 1
    cache = torch.empty(blocks, BS_REAL, L + R, dtype=FP8 if args.cache == "fp8" else torch.bfloat16, device="cuda")
    fill_cache(cache)
    case = Case(args.cache, cache, args.batch, args.context, BS_REAL, gen)
    for _ in range(3):
        mla_decode(case.q_lat, case.q_pe, case.cache, case.block_table, case.seq_lens, (128 + 64) ** -0.5,
                   k_scale=case.k_scale, max_seq_len=case.max_seq_len, **SETTINGS[args.settings])
    torch.cuda.synchronize()
    print(f"profile_mla_decode: {args.cache} batch {args.batch} x {args.context}, setting {args.settings}: ran",
          flush=True)


if __name__ == "__main__":
    main()
