"""Where the KDA prefill's time goes, and which prefill design to keep: ours vs vLLM 0.26's chunk pipeline.

On 32768 tokens (H=32, K=V=128, bf16, fp32 state slots) it prints, per CUDA kernel name, the mean time per
prefill call (torch.profiler) for vLLM and for our default; with --configs, for each of our designs and
launch settings: relative error of o and of the final state against float64 on a 1x2048 case (gate N(0,1)),
and the do_bench median at each split.

    python benchmarks/profile_kda_prefill.py [--splits 1x32768,64x512] [--gates normal|init]
        [--configs [--kernel-tables] [--only label,label]]
"""

import argparse
import os
import sys

import torch
from triton.testing import do_bench

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))
from bench_kda_kernels import DEV, SCALE, load_vllm, make, rel, truth_prefill, vllm_prefill_fn   # noqa: E402
from kernels.kda.triton_chunk import chunk_kda_prefill                       # noqa: E402
from profiling import gpu_time_by_kernel                                     # noqa: E402

# Settings relative to the defaults (16-token chunks; pairs from a balanced reference, 32 key columns at a time on 1
# warp, stopping at the first slice out of range, then by halves, then the walk on 4 warps for the blocks out of
# range; the sequential walk two chunks a step). Timed on the H200 on 2026-11-30 and dropped (eleventh session):
# "halves" with column walks inside the halves for out-of-range blocks (11.2 against 4.8 ms at 1x32768, anchors'
# gates; the thirteenth session's halves take the pairs inside each half on tensor cores too, and became the
# default's second launch), the chunk kernel's register cap, the pair step with chunk a's decay on W_b, QG_b;
# (thirteenth session) halves with the walk inline in the same launch (4.23-4.70 ms at 1x32768 on 1-4 warps against
# 3.91 for halves and the walk in launches of their own, anchors' gates), and "auto", the whole block's reference or
# halves in one launch as the first key slice decides (4.25 / 3.74 ms, anchors' / init gates, against 3.91 / 3.53);
# (tenth session): the "cube" for out-of-range blocks
# (all pairs of a block at once; 5.11 against 4.49 ms, 8x4096, anchors' gates), the pair step with its operands
# assembled into 32-row tiles (5.92 against 4.39), the chunk kernel on 2 or 8 warps. Earlier: the intra kernel's W
# and U steps unrolled (3.44 against 3.41 ms for the loops), the intra kernel capped at 168 registers (4.52 ms); the
# diagonal kernel's walk on 2 or 8 warps; the walk inline with the reference row (2.26 against 2.21 ms, anchors'
# gates), also inside the 16-token chunk kernel (255 registers with spills: slower at every split); the "levels"
# pairs (halves on tensor cores down to walked groups of 4 rows, commit 40166d9: slower than the walk they were
# to replace); for 16-token chunks the chunk kernel at 8 warps (2.35 against 1.54 ms), the one-chunk sequential
# step with 16 value rows (before the pair step made 16 rows on 2 warps the one-sequence default) or key-major token
# rows. U in bf16 saves 0.06-0.18 ms at a higher error (2.47e-3 against 1.98e-3).
CONFIGS = {
    "default": {},
    "64-token chunks": dict(chunk=64),
    "64-token chunks, reference-row pairs in 32-column slices on 2 warps": dict(chunk=64, diag_bk=32, diag_warps=2),
    "pairs by the column walk": dict(diag_form="walk"),
    "pairs by the column walk, 64-token chunks (the seventh session's default)": dict(diag_form="walk", chunk=64),
    "pairs by the running product, 64-token chunks": dict(diag_form="product", chunk=64),
    "pairs from a reference row in tf32x3": dict(prec_d="tf32x3"),
    "reference-row pairs over the whole key width": dict(diag_bk=None),
    "reference-row launch on 4 warps": dict(diag_warps=4),
    "reference-row range 2^+-120": dict(diag_range=120.0),
    "walk launch on 2 warps": dict(fallback_warps=2),
    "walk launch as a running product": dict(fallback_form="product"),
    "reference from the middle row (the tenth session's)": dict(diag_ref="row"),
    "no overlap windows (the eleventh session's default)": dict(overlap_windows=1),
    "reference-row pass through every key slice": dict(diag_early_out=False),
    "reference-row launch on 2 warps": dict(diag_warps=2),
    "sequential walk one chunk a step": dict(inter_form="rows"),
    "16-token chunks, sequential kernel at 8 warps": dict(inter16_warps=8),
    "U in bf16": dict(u_dtype=torch.bfloat16),
    "walk for every block out of the whole block's range (the twelfth session's default)": dict(fallback_form="walk"),
    "pairs by halves first, the walk for the rest": dict(diag_form="halves", fallback_form="walk"),
}


def kernel_table(fn, reps=5):
    fn()

    def calls():
        for _ in range(reps):
            fn()
    return sorted(((ms / reps, name) for name, (ms, _) in gpu_time_by_kernel(calls, 60).items()), reverse=True)


_TRUTH = {}
ACC_T = 2048


def accuracy(cfg):
    """Relative errors (o, final state) against float64 on one 2048-token sequence, gate N(0,1); the inputs and
    the float64 truth are made once and shared by every setting."""
    if not _TRUTH:
        q, k, v, g, beta, A_log, dt_bias, pool = make(ACC_T, 2)
        cu = torch.tensor([0, ACC_T], device=DEV, dtype=torch.int32)
        slots = torch.tensor([1], device=DEV, dtype=torch.int32)
        init = torch.ones(1, dtype=torch.bool, device=DEV)
        o_ref, st_ref = truth_prefill(q, k, v, g, beta, A_log, dt_bias, pool, slots, init, cu)
        _TRUTH.update(args=(q, k, v, g, beta, A_log, dt_bias), pool=pool, rest=(slots, init, cu), o=o_ref,
                      st=st_ref[1])
    st = _TRUTH["pool"].clone()
    o = chunk_kda_prefill(*_TRUTH["args"], SCALE, st, *_TRUTH["rest"], _config=cfg)
    return rel(o, _TRUTH["o"]), rel(st[1], _TRUTH["st"])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--splits", default="1x32768,64x512")
    ap.add_argument("--configs", action="store_true")
    ap.add_argument("--kernel-tables", action="store_true", help="with --configs: each setting's per-kernel times")
    ap.add_argument("--gates", default="normal", choices=["normal", "init"],
                    help="timing inputs (bench_kda_kernels.make's regime): normal, or dt_bias at fla's init")
    ap.add_argument("--only", default="", help="with --configs: comma list; keep the settings whose label "
                    "contains one of these (\"default\" always runs)")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("profile_kda_prefill.py needs a CUDA GPU (none is visible here)")
    if args.only:
        keep = args.only.split(",")
        for label in [lb for lb in CONFIGS if lb != "default" and not any(w in lb for w in keep)]:
            del CONFIGS[label]
    vl = load_vllm()
    print(f"GPU: {torch.cuda.get_device_name()}", flush=True)
    splits = args.splits.split(",")
    times = {}
    for split in splits:
        n, length = map(int, split.split("x"))
        T = n * length
        q, k, v, g, beta, A_log, dt_bias, pool = make(T, n + 1, regime=args.gates)
        cu = torch.arange(0, T + 1, length, device=DEV, dtype=torch.int32)
        slots = torch.arange(1, n + 1, device=DEV, dtype=torch.int32)
        init = torch.ones(n, dtype=torch.bool, device=DEV)
        s0 = pool[1:].transpose(-1, -2).contiguous()

        def ours(cfg=None):
            return lambda: chunk_kda_prefill(q, k, v, g, beta, A_log, dt_bias, SCALE, pool, slots, init, cu,
                                             _config=cfg)
        sides = [("ours default", ours())]
        if vl is not None:
            sides.append(("vLLM", vllm_prefill_fn(vl, q, k, v, g, beta, A_log.view(-1), dt_bias, s0, cu.long())))
        for side, fn in sides:
            try:
                rows = kernel_table(fn)
            except Exception as e:       # noqa: BLE001
                print(f"\n## {split} {side}: failed: {type(e).__name__}: {str(e)[:200]}", flush=True)
                continue
            ms_total = do_bench(fn, warmup=20, rep=100, return_mode="median")
            times[(split, side)] = ms_total
            print(f"\n## {split} {side}: {sum(ms for ms, _ in rows):.3f} ms of kernels per call "
                  f"(do_bench median {ms_total:.3f} ms)", flush=True)
            for ms, name in rows:
                print(f"  {ms:8.3f} ms  {name}")
        if args.configs:
            for label, cfg in CONFIGS.items():
                try:
                    times[(split, label)] = do_bench(ours(cfg), warmup=20, rep=100, return_mode="median")
                    print(f"\n## {split} {label}: {times[(split, label)]:.3f} ms", flush=True)
                    if args.kernel_tables:
                        print(f"\n## {split} {label}: " + ", ".join(
                            f"{name[:40]} {ms:.3f}" for ms, name in kernel_table(ours(cfg))), flush=True)
                except Exception as e:       # noqa: BLE001
                    times[(split, label)] = f"failed: {type(e).__name__}: {str(e)[:100]}"
        del q, k, v, g, pool
        torch.cuda.empty_cache()
    if args.configs:
        vl_ms = {sp: times.get((sp, "vLLM")) for sp in splits}
        print("\n| design / setting | o rel. err (1x2048) | state rel. err | " +
              " | ".join(f"{sp} ms (vLLM / ours)" for sp in splits) + " |")
        print("|---|---|---|" + "---|" * len(splits))
        for label, cfg in CONFIGS.items():
            try:
                eo, es = accuracy(cfg)
                acc = f"{eo:.2e} | {es:.2e}"
            except Exception as e:       # noqa: BLE001
                acc = f"failed: {type(e).__name__} | -"
            cells = []
            for sp in splits:
                t = times.get((sp, label))
                if isinstance(t, float):
                    cells.append(f"{t:.3f}" + (f" ({vl_ms[sp] / t:.2f}x)" if vl_ms[sp] else ""))
                else:
                    cells.append(str(t))
            print(f"| {label} | {acc} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
