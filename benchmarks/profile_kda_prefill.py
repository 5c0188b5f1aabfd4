"""Where the KDA prefill's time goes: per-kernel CUDA times of ours and of vLLM 0.26's chunk pipeline.

Runs each side a few times under torch.profiler on 32768 tokens (H=32, K=V=128, bf16, fp32 state slots)
and prints, per CUDA kernel name, the mean time per call of the whole prefill. With --configs it also
times our prefill under alternative launch settings (median of do_bench).

    python benchmarks/profile_kda_prefill.py [--splits 1x32768,64x512] [--configs]
"""

import argparse
import collections
import os
import sys

import torch
from torch.profiler import ProfilerActivity, profile
from triton.testing import do_bench

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))
from bench_kda_kernels import DEV, SCALE, load_vllm, make, vllm_prefill_fn   # noqa: E402
from kernels.kda.triton_chunk import chunk_kda_prefill                       # noqa: E402

CONFIGS = {
    "intra warps 8": dict(intra_warps=8),
    "intra stages 1": dict(intra_stages=1),
    "BK 32": dict(BK=32),
    "BKD 32, diag warps 4": dict(BKD=32, diag_warps=4),
    "inter BV 16": dict(BV=16),
    "inter BV 64, warps 8": dict(BV=64, inter_warps=8),
    "inter stages 3": dict(inter_stages=3),
    "BVI 64": dict(BVI=64),
}


def kernel_table(fn, reps=5):
    fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(reps):
            fn()
        torch.cuda.synchronize()
    tot = collections.defaultdict(float)
    for e in prof.events():
        if e.device_type == torch.autograd.DeviceType.CUDA:
            tot[e.name[:60]] += e.device_time_total / 1000.0 if hasattr(e, "device_time_total") else e.cuda_time_total / 1000.0
    return sorted(((ms / reps, name) for name, ms in tot.items()), reverse=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--splits", default="1x32768,64x512")
    ap.add_argument("--configs", action="store_true")
    args = ap.parse_args()
    vl = load_vllm()
    print(f"GPU: {torch.cuda.get_device_name()}")
    for split in args.splits.split(","):
        n, length = map(int, split.split("x"))
        T = n * length
        q, k, v, g, beta, A_log, dt_bias, pool = make(T, n + 1)
        cu = torch.arange(0, T + 1, length, device=DEV, dtype=torch.int32)
        slots = torch.arange(1, n + 1, device=DEV, dtype=torch.int32)
        init = torch.ones(n, dtype=torch.bool, device=DEV)
        s0 = pool[1:].transpose(-1, -2).contiguous()

        def ours(cfg=None):
            return lambda: chunk_kda_prefill(q, k, v, g, beta, A_log, dt_bias, SCALE, pool, slots, init, cu,
                                             _config=cfg)
        sides = [("ours", ours())]
        if vl is not None:
            sides.append(("vLLM", vllm_prefill_fn(vl, q, k, v, g, beta, A_log.view(-1), dt_bias, s0,
                                                   cu.long())))
        for side, fn in sides:
            rows = kernel_table(fn)
            print(f"\n## {split} {side}: {sum(ms for ms, _ in rows):.3f} ms of kernels per call "
                  f"(do_bench median {do_bench(fn, warmup=20, rep=100, return_mode='median'):.3f} ms)")
            for ms, name in rows:
                print(f"  {ms:8.3f} ms  {name}")
        if args.configs:
            print(f"\n## {split} ours, launch settings (do_bench median ms)")
            for label, cfg in [("default", None)] + list(CONFIGS.items()):
                try:
                    ms = do_bench(ours(cfg), warmup=20, rep=100, return_mode="median")
                    skip = do_bench(ours(dict(cfg or {}, skip_inter=True)), warmup=20, rep=100, return_mode="median")
                    print(f"  {label:28s} {ms:8.3f} ms (parallel kernels alone {skip:.3f})", flush=True)
                except Exception as e:       # noqa: BLE001
                    print(f"  {label:28s} failed: {type(e).__name__}: {str(e)[:120]}", flush=True)


if __name__ == "__main__":
    main()
