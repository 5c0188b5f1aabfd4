"""KDA kernels on one GPU: this project's Triton kernels against vLLM 0.26's in-tree ones, Kimi-Linear shapes.

One run prints, for H=32 heads, K=V=128, bf16 activations, fp32 (and bf16) state slots [slots, H, V, K]:
  1. the ceilings measured here: device-to-device copy bandwidth, a bf16 8192^3 matrix product;
  2. accuracy against float64 math (relative error of outputs and final states), ours and vLLM's;
  3. prefill times for 32768 tokens split 1x32768, 8x4096, 64x512, 256x128 (or --splits; median of do_bench);
  4. decode times for N = 64, 256, 1024, 4096 sequences (vLLM only where its grid launches).
Run from the repository root with vLLM 0.26 importable:  python benchmarks/bench_kda_kernels.py
"""

import argparse
import datetime
import math
import sys

import torch
import triton
from triton.testing import do_bench

sys.path.insert(0, ".")
from kernels.kda.chunk import chunk_kda                                       # noqa: E402
from kernels.kda.reference import kda_gate, l2_normalize                      # noqa: E402
from kernels.kda.triton_chunk import chunk_kda_prefill                        # noqa: E402
from kernels.kda.triton_decode import recurrent_kda_decode, recurrent_kda_verify  # noqa: E402

DEV = "cuda" if torch.cuda.is_available() else "cpu"
H, K, V = 32, 128, 128
SCALE = K ** -0.5
LINES = []


def say(s=""):
    print(s, flush=True)
    LINES.append(s)


def rel(a, b):
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm()).item()


def bench(fn, rep=200):
    return do_bench(fn, warmup=50, rep=rep, return_mode="median")


def make(T, N_slots, gen_scale=1.0, regime="normal", dtype=torch.bfloat16, state_dtype=torch.float32):
    q = torch.randn(T, H, K, device=DEV).to(dtype)
    k = torch.randn(T, H, K, device=DEV).to(dtype)
    v = torch.randn(T, H, V, device=DEV).to(dtype)
    g = torch.randn(T, H, K, device=DEV) * gen_scale
    if regime == "huge":
        g = torch.where(torch.rand_like(g) < 0.5, -1e4, 1e4)
    elif regime == "spiky":
        g = torch.where(torch.rand_like(g) < 0.05, torch.full_like(g, 1e4), g)
    g = g.to(dtype)
    beta = torch.rand(T, H, device=DEV)
    A_log = torch.log(torch.empty(1, 1, H, 1, device=DEV).uniform_(1, 16))
    dt_bias = torch.randn(H * K, device=DEV) * 0.1
    if regime == "init":
        # fla's KDA layer initialisation: softplus(dt_bias) log-uniform in [0.001, 0.1] (decays per token about
        # 50x smaller than with dt_bias ~ N(0, 0.1), the "normal" regime)
        dt = torch.exp(torch.empty(H * K, device=DEV).uniform_(math.log(1e-3), math.log(0.1)))
        dt_bias = dt + torch.log(-torch.expm1(-dt))
    pool = (torch.randn(N_slots, H, V, K, device=DEV) * 0.01).to(state_dtype)
    return q, k, v, g, beta, A_log, dt_bias, pool


def truth_prefill(q, k, v, g, beta, A_log, dt_bias, pool, slots, has_init, cu):
    """float64 chunked math per sequence; returns (o, {slot: final state V-major})."""
    d = torch.float64
    gl = kda_gate(g.to(d), A_log.to(d), dt_bias.to(d))
    qn, kn = l2_normalize(q.to(d)), l2_normalize(k.to(d))
    o = torch.zeros(q.shape[0], H, V, dtype=d, device=DEV)
    states = {}
    b = cu.tolist()
    for i, s in enumerate(slots.tolist()):
        if s <= 0:
            continue
        S0 = pool[s].to(d).transpose(-1, -2) if bool(has_init[i]) else None
        oi, S = chunk_kda(qn[b[i]:b[i + 1]], kn[b[i]:b[i + 1]], v[b[i]:b[i + 1]].to(d), gl[b[i]:b[i + 1]],
                          beta[b[i]:b[i + 1]].to(d), SCALE, S0)
        o[b[i]:b[i + 1]] = oi
        states[s] = S.transpose(-1, -2)
    return o, states


def truth_decode(q, k, v, g, beta, A_log, dt_bias, pool, slots):
    d = torch.float64
    gl = kda_gate(g.to(d), A_log.to(d), dt_bias.to(d))
    qn, kn = l2_normalize(q.to(d)), l2_normalize(k.to(d))
    S = pool[slots.long()].to(d).transpose(-1, -2) * torch.exp(gl)[..., None]          # [N, H, K, V]
    pred = torch.einsum("nhkv,nhk->nhv", S, kn)
    S = S + beta.to(d)[..., None, None] * kn[..., None] * (v.to(d) - pred)[..., None, :]
    return SCALE * torch.einsum("nhkv,nhk->nhv", S, qn), S.transpose(-1, -2)


def load_vllm():
    try:
        from vllm.third_party.flash_linear_attention.ops.kda import (chunk_kda_with_fused_gate, fused_kda_gate,
                                                                      fused_recurrent_kda)
        return chunk_kda_with_fused_gate, fused_kda_gate, fused_recurrent_kda
    except Exception as e:          # noqa: BLE001
        say(f"vLLM not importable ({e!r}); its columns stay empty")
        return None


def vllm_prefill_fn(vl, q, k, v, g, beta, A_log, dt_bias, s0, cu):
    chunk, _, _ = vl
    return lambda: chunk(q=q[None], k=k[None], v=v[None], raw_g=g[None], beta=beta[None], A_log=A_log,
                         g_bias=dt_bias, initial_state=s0, output_final_state=True,
                         use_qk_l2norm_in_kernel=True, cu_seqlens=cu)


def vllm_decode_fn(vl, q, k, v, g, beta, A_log, dt_bias, pool, idx):
    _, gate, rec = vl
    n = q.shape[0]
    cu = torch.arange(0, n + 1, device=DEV, dtype=torch.int32)

    def fn():
        g1 = gate(g.view(n, H * K), A_log, K, g_bias=dt_bias).unsqueeze(0)
        return rec(q=q[None], k=k[None], v=v[None], g=g1, beta=beta[None], initial_state=pool,
                   use_qk_l2norm_in_kernel=True, cu_seqlens=cu, ssm_state_indices=idx)
    return fn


def ceilings():
    x = torch.randn(2 ** 28, device=DEV)                 # 1 GiB
    y = torch.empty_like(x)
    ms = bench(lambda: y.copy_(x))
    copy_tbs = 2 * x.numel() * 4 / ms / 1e9
    a = torch.randn(8192, 8192, device=DEV, dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device=DEV, dtype=torch.bfloat16)
    ms_mm = bench(lambda: a @ b)
    mm_tf = 2 * 8192 ** 3 / ms_mm / 1e9
    del x, y, a, b
    return copy_tbs, mm_tf


def accuracy(vl):
    say("## accuracy vs float64 (relative error = |x - ref| / |ref|)")
    say("| case | ours o | ours state | vLLM o | vLLM state |")
    say("|---|---|---|---|---|")
    cases = [("1x2048 bf16, gate N(0,1)", [2048], 1.0, "normal", torch.bfloat16, torch.float32),
             ("1x2048 bf16, gate x0.1", [2048], 0.1, "normal", torch.bfloat16, torch.float32),
             ("1x2048 bf16, gate N(0,1), dt_bias at fla's init", [2048], 1.0, "init", torch.bfloat16, torch.float32),
             # one long sequence: the walk in segments by default (segment_count)
             ("1x32768 bf16, gate N(0,1)", [32768], 1.0, "normal", torch.bfloat16, torch.float32),
             ("1x32768 bf16, gate N(0,1), dt_bias at fla's init", [32768], 1.0, "init", torch.bfloat16,
              torch.float32),
             ("varlen 1,63,64,65,700,1000,2048 bf16", [1, 63, 64, 65, 700, 1000, 2048], 1.0, "normal",
              torch.bfloat16, torch.float32),
             ("1x2048 bf16, gate raw +-1e4", [2048], 1.0, "huge", torch.bfloat16, torch.float32),
             ("1x2048 bf16, gate N(0,1) + 5% raw 1e4", [2048], 1.0, "spiky", torch.bfloat16, torch.float32),
             ("1x2048 bf16, bf16 state", [2048], 1.0, "normal", torch.bfloat16, torch.bfloat16),
             ("varlen 1,63,65,700 fp32 inputs (exact path)", [1, 63, 65, 700], 1.0, "normal", torch.float32,
              torch.float32)]
    for name, lens, gs, regime, dt, sdt in cases:
        N = len(lens)
        T = sum(lens)
        q, k, v, g, beta, A_log, dt_bias, pool = make(T, N + 2, gs, regime, dt, sdt)
        cu = torch.tensor([0] + lens, device=DEV).cumsum(0).to(torch.int32)
        slots = torch.arange(1, N + 1, device=DEV, dtype=torch.int32)
        has = torch.ones(N, dtype=torch.bool, device=DEV)
        o_ref, st_ref = truth_prefill(q, k, v, g, beta, A_log, dt_bias, pool, slots, has, cu)
        st = pool.clone()
        o = chunk_kda_prefill(q, k, v, g, beta, A_log, dt_bias, SCALE, st, slots, has, cu,
                              _config=AS_DEFAULT if dt != torch.float32 else None)   # fp32: the exact path as is
        S_ours = torch.stack([st[s] for s in st_ref])
        S_ref = torch.stack(list(st_ref.values()))
        fin = torch.isfinite(o).all().item() and torch.isfinite(st).all().item()
        row = f"| {name} | {rel(o, o_ref):.2e}{'' if fin else ' NONFINITE'} | {rel(S_ours, S_ref):.2e} |"
        if vl is not None and dt == torch.bfloat16 and sdt == torch.float32:
            s0 = pool[1:N + 1].clone().contiguous()
            ov, sv = vllm_prefill_fn(vl, q, k, v, g, beta, A_log, dt_bias, s0, cu)()
            fin = torch.isfinite(ov).all().item()
            row += f" {rel(ov[0], o_ref):.2e}{'' if fin else ' NONFINITE'} | {rel(sv, S_ref):.2e} |"
        else:
            row += " - | - |"
        say(row)
    # decode and verify
    for sdt in (torch.float32, torch.bfloat16):
        n = 256
        q, k, v, g, beta, A_log, dt_bias, pool = make(n, n + 1, state_dtype=sdt)
        idx = torch.arange(1, n + 1, device=DEV, dtype=torch.int32)
        o_ref, S_ref = truth_decode(q, k, v, g, beta, A_log, dt_bias, pool, idx)
        st = pool.clone()
        o = recurrent_kda_decode(q, k, v, g, beta, A_log, dt_bias, SCALE, st, idx)
        row = f"| decode N=256, {str(sdt)[6:]} state | {rel(o, o_ref):.2e} | {rel(st[1:], S_ref):.2e} |"
        if vl is not None and sdt == torch.float32:
            st2 = pool.clone()
            ov, _ = vllm_decode_fn(vl, q, k, v, g, beta, A_log, dt_bias, st2, idx)()
            row += f" {rel(ov[0], o_ref):.2e} | {rel(st2[1:], S_ref):.2e} |"
        else:
            row += " - | - |"
        say(row)
    n, T = 64, 4
    q, k, v, g, beta, A_log, dt_bias, pool = make(n * T, n * (T + 1) + 1)
    init = torch.arange(1, n + 1, device=DEV, dtype=torch.int32)
    idx = (n + 1 + torch.arange(n * T, device=DEV, dtype=torch.int32)).view(n, T)
    st = pool.clone()
    o = recurrent_kda_verify(q, k, v, g, beta, A_log, dt_bias, SCALE, st, init, idx)
    ref = pool.clone()
    errs = []
    for j in range(T):
        rows = torch.arange(n, device=DEV) * T + j
        src = init if j == 0 else idx[:, j - 1]
        oj, Sj = truth_decode(q[rows], k[rows], v[rows], g[rows], beta[rows], A_log, dt_bias, ref, src)
        ref[idx[:, j].long()] = Sj.to(ref.dtype)
        errs.append((rel(o[rows], oj), rel(st[idx[:, j].long()], Sj)))
    say(f"| verify N=64 x T=4, fp32 state (worst token) | {max(e[0] for e in errs):.2e} | "
        f"{max(e[1] for e in errs):.2e} | - | - |")
    say()


def prefill_flops(T):
    """Nominal FLOPs of the chunked algorithm (dense 64x64 in-chunk products, per token and head)."""
    C = 64
    per = 2 * C * K * 2 + 2 * C * K + 2 * C * V + 3 * 2 * K * V + 2 * C * V
    return T * H * per


def prefill_bytes(T, N, state_bytes=4):
    return T * H * (3 * K + V) * 2 + T * H * 4 + T * H * V * 2 + 2 * N * H * V * K * state_bytes


PREFILL_CONFIGS = {
    # each on top of the kernels' defaults (or --as-default's settings); timed on the H200 on 2026-11-30 (tenth
    # session) against the defaults of then, see benchmarks/RESULTS.md
    "default": {},
    "c64": dict(chunk=64),                                   # the 64-token path with its own diagonal settings
    "c64_bk32_w2": dict(chunk=64, diag_bk=32, diag_warps=2),  # 64-token path, 32-column slices (early out: default)
    "walk": dict(diag_form="walk"),
    "bk_all": dict(diag_bk=None),                            # reference pairs over the whole key width
    "bk16": dict(diag_bk=16),
    "diag_w2": dict(diag_warps=2),                           # the reference-row launch on 2 warps (ninth session's)
    "all_slices": dict(diag_early_out=False),                # the reference-row pass through every key slice
    "range96": dict(diag_range=96.0),                        # the reference range to the eleventh session (124 since)
    "range112": dict(diag_range=112.0),                      # fewer fallbacks (blocks whose factors overflow on large
    "range120": dict(diag_range=120.0),                      # raw |q|, |k| take the walk, whatever the range)
    "range124": dict(diag_range=124.0),
    "fb_product": dict(fallback_form="product"),             # out-of-range blocks by the running-product walk
    "row_ref": dict(diag_ref="row"),                         # the tenth session's reference: the middle row
    "fb_product_w2": dict(fallback_form="product", fallback_warps=2),
    "win1": dict(overlap_windows=1),                         # no overlap windows (the eleventh session's default)
    "win4": dict(overlap_windows=4),                         # the sequential walk beside the next window's chunk
    "win16": dict(overlap_windows=16),                       # kernel on a second stream, 4 / 16 windows everywhere
    "bvi32": dict(BVI=32),                                   # U in 32 value columns at a time (ninth session's)
    "bvi64": dict(BVI=64),                                   # U in 64 value columns at a time (tenth session's)
    "rows": dict(inter_form="rows"),                         # the sequential walk one chunk a step
    "pairs_w4": dict(BV=64, inter16_warps=4, inter16_stages=3),     # pairs: 64 rows on 4 warps for every shape
    "pairs_bv16": dict(BV=16, inter16_warps=2, inter16_stages=4),   # pairs: 16 rows on 2 warps for every shape
    "pairs_w8": dict(inter16_warps=8),
    "rows_bv16": dict(inter_form="rows", BV=16, inter16_warps=2, inter16_stages=4),
    "bf16ws": dict(u_dtype=torch.bfloat16, aqk_dtype=torch.bfloat16),
    # thirteenth session: the pairs by halves (inside each half through its own reference, across through the row
    # between the halves): the default's second launch, for the blocks out of the whole block's range (then the walk
    # for the rest); "fb_walk": the walk for all of those (the twelfth session's default); "halves": halves in the
    # first launch for every block (then the walk)
    "fb_walk": dict(fallback_form="walk"),
    "halves": dict(diag_form="halves", fallback_form="walk"),
    "halves_bk16": dict(diag_form="halves", fallback_form="walk", diag_bk=16),
    # the sequential walk in segments at once (fourteenth session's form; since the fifteenth the default for one
    # long sequence, 4 segments by segment_count): the (sequence, head) pairs where some segment's look-back finds
    # the state forgotten, its bound below 2^-96, go to a launch of their own after every window, one program per
    # segment of the sequence, 64 value rows on 4 warps at 3 stages unless "segment_launch" says otherwise; a segment
    # whose look-back does not is walked through by the one before; the other pairs keep the plain launch in its
    # windows
    "seg_off": dict(inter_segments=1),                       # off (the default until the fifteenth session)
    "seg2": dict(inter_segments=2),
    "seg4": dict(inter_segments=4),
    "seg8": dict(inter_segments=8),
    "seg4_bv32": dict(inter_segments=4, segment_launch=(32, 4, 3)),
    "seg4_warm128": dict(inter_segments=4, segment_warmup=128),
    "seg4_win1": dict(inter_segments=4, overlap_windows=1),
}

AS_DEFAULT: dict = {}          # --as-default: the prefill settings measured as "default" (empty: the kernels' own)
SWEEP_ONLY: set = set()        # --sweep-only
SPLITS = [(1, 32768), (8, 4096), (64, 512), (256, 128)]   # --splits: the prefill batches (sequences x tokens)


def prefill_times(vl, copy_tbs, mm_tf, sweep, gates="normal"):
    say(f"## prefill, H=32, K=V=128, bf16, fp32 state slots, gates {gates} (median ms)")
    splits = SPLITS
    # each sweep entry on top of the measured default (--as-default's settings, if given)
    cfgs = {"default": AS_DEFAULT}
    if sweep:
        cfgs.update((name, dict(AS_DEFAULT, **cfg)) for name, cfg in PREFILL_CONFIGS.items()
                    if name != "default" and (not SWEEP_ONLY or name in SWEEP_ONLY))
    rows = []
    for n, L in splits:
        T = n * L
        torch.manual_seed(n)               # the same inputs (A included) whichever sections ran before
        q, k, v, g, beta, A_log, dt_bias, pool = make(T, n + 1, regime=gates)
        cu = torch.arange(0, T + 1, L, device=DEV, dtype=torch.int32)
        slots = torch.arange(1, n + 1, device=DEV, dtype=torch.int32)
        has = torch.ones(n, dtype=torch.bool, device=DEV)
        res, outs, off = {}, {}, []
        for name, cfg in cfgs.items():
            st = pool.clone()
            fn = lambda: chunk_kda_prefill(q, k, v, g, beta, A_log, dt_bias, SCALE, st, slots, has, cu,  # noqa: E731
                                           _config=cfg)
            res[name] = bench(fn)
            # each sweep entry's outputs and final states against the default's, once from the same slots: both are
            # ~2e-3 from float64, so a difference past 1e-2 marks a broken setting, not a timing
            st = pool.clone()
            outs[name] = (fn().float(), st[1:].float())
            if name != "default":
                d = max(rel(outs[name][0], outs["default"][0]), rel(outs[name][1], outs["default"][1]))
                if not d < 1e-2:
                    off.append(f"{name} {d:.1e}")
                del outs[name]
        outs.clear()
        st = pool.clone()
        res["intra only"] = bench(lambda: chunk_kda_prefill(q, k, v, g, beta, A_log, dt_bias, SCALE, st, slots,
                                                            has, cu, _config=dict(AS_DEFAULT, skip_inter=True)))
        bst = pool.to(torch.bfloat16)
        res["default, bf16 state"] = bench(lambda: chunk_kda_prefill(q, k, v, g, beta, A_log, dt_bias, SCALE, bst,
                                                                     slots, has, cu, _config=AS_DEFAULT))
        vms = None
        if vl is not None:
            s0 = pool[1:].clone()
            vms = bench(vllm_prefill_fn(vl, q, k, v, g, beta, A_log, dt_bias, s0, cu))
        rows.append((n, L, res, vms))
        say(f"{n}x{L}: vLLM {vms if vms is None else round(vms, 3)} ms | " +
            " | ".join(f"{k_}: {v_:.3f}" for k_, v_ in res.items()))
        if len(cfgs) > 1:
            say(f"{n}x{L}: sweep outputs vs the default's: " +
                (f"DIFFER past 1e-2: {', '.join(off)}" if off else "all within 1e-2"))
        del q, k, v, g, pool
        torch.cuda.empty_cache()
    say()
    say("| split | vLLM 0.26 ms | ours ms | speed-up | ours TFLOP/s (nominal) | ours TB/s (min. bytes) | "
        "ours bf16-state ms | parallel kernels alone ms | best setting in sweep |")
    say("|---|---|---|---|---|---|---|---|---|")
    for n, L, res, vms in rows:
        T = n * L
        ms = res["default"]
        swept = {k_: v_ for k_, v_ in res.items() if k_ in PREFILL_CONFIGS}
        bn = min(swept, key=swept.get)
        say(f"| {n}x{L} | {'-' if vms is None else f'{vms:.3f}'} | {ms:.3f} | "
            f"{'-' if vms is None else f'{vms / ms:.2f}x'} | {prefill_flops(T) / ms / 1e9:.1f} | "
            f"{prefill_bytes(T, n) / ms / 1e9:.2f} | {res['default, bf16 state']:.3f} | {res['intra only']:.3f} | "
            f"{bn} {swept[bn]:.3f} |")
    say(f"(ceilings measured in this run: copy {copy_tbs:.2f} TB/s, bf16 matmul {mm_tf:.0f} TFLOP/s)")
    say()


def decode_times(vl, copy_tbs):
    say("## decode, one token per sequence, H=32, K=V=128, bf16 activations (median ms)")
    say("| N | state | vLLM 0.26 ms | ours ms | ours / vLLM time | ours TB/s | % of 1 GiB copy | copy of the same "
        "bytes ms | % of that copy | best ours config |")
    say("|---|---|---|---|---|---|---|---|---|---|")
    vll = {}
    for n in (64, 256, 1024, 4096):
        for sdt in (torch.float32, torch.bfloat16):
            q, k, v, g, beta, A_log, dt_bias, pool = make(n, n + 1, state_dtype=sdt)
            idx = torch.arange(1, n + 1, device=DEV, dtype=torch.int32)
            nbytes = 2 * n * H * V * K * pool.element_size()
            best = None
            opts = [(8, 1), (16, 1), (16, 2), (32, 2), (32, 4)] if sdt == torch.float32 else \
                [(8, 1), (16, 1), (16, 2), (32, 2)]
            for bv, nw in opts:
                ms = bench(lambda: recurrent_kda_decode(q, k, v, g, beta, A_log, dt_bias, SCALE, pool, idx,  # noqa
                                                        _bv=bv, _num_warps=nw), rep=300)
                if best is None or ms < best[0]:
                    best = (ms, bv, nw)
            ms_def = bench(lambda: recurrent_kda_decode(q, k, v, g, beta, A_log, dt_bias, SCALE, pool, idx), rep=300)
            # the target's yardstick: a device copy that reads and writes as many bytes as the decode (its states)
            src = torch.empty(n * H * V * K, dtype=pool.dtype, device=DEV)
            dst = torch.empty_like(src)
            ms_copy = bench(lambda: dst.copy_(src), rep=300)
            del src, dst
            vms = None
            if vl is not None and sdt == torch.float32 and n * H <= 65535:
                vms = bench(vllm_decode_fn(vl, q, k, v, g, beta, A_log, dt_bias, pool, idx), rep=300)
                vll[n] = vms
            base = vll.get(n)
            say(f"| {n} | {str(sdt)[6:]} | {'-' if vms is None else f'{vms:.4f}'} | {ms_def:.4f} | "
                f"{'-' if base is None else f'{ms_def / base:.3f}'} | {nbytes / ms_def / 1e9:.2f} | "
                f"{100 * nbytes / ms_def / 1e9 / copy_tbs:.0f}% | {ms_copy:.4f} | {100 * ms_copy / ms_def:.0f}% | "
                f"best {best[0]:.4f} (BV={best[1]}, warps={best[2]}) |")
            del q, k, v, g, pool
            torch.cuda.empty_cache()
    say("(ours / vLLM time for a bf16 state compares with vLLM's fp32-state decode)")
    say()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sweep", action="store_true", help="also time alternative launch settings for prefill")
    ap.add_argument("--skip", default="", help="comma list of sections to skip: acc,prefill,decode")
    ap.add_argument("--gates", default="normal", choices=["normal", "init"],
                    help="prefill timing inputs: gate N(0,1) with dt_bias ~ N(0, 0.1) (normal, the anchors' regime) "
                    "or dt_bias at fla's initialisation (init)")
    ap.add_argument("--sweep-only", default="", help="comma list of PREFILL_CONFIGS names: sweep these only "
                    "(implies --sweep)")
    ap.add_argument("--as-default", default="", choices=[""] + list(PREFILL_CONFIGS),
                    help="run the accuracy (bf16 rows) and prefill sections with this PREFILL_CONFIGS entry in "
                    "place of the default settings (a candidate default, measured as the default would be; sweep "
                    "entries then apply on top of it)")
    ap.add_argument("--splits", default="", help="comma list of prefill batches (sequences x tokens) to time, e.g. "
                    "1x32768,1x8192 (default: " + ",".join(f"{n}x{L}" for n, L in SPLITS) + ", each 32768 tokens)")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("bench_kda_kernels.py needs a CUDA GPU (none is visible here)")
    if args.splits:
        asked = [x.split("x") for x in args.splits.split(",") if x]
        if not asked or any(len(x) != 2 or not all(p.isdigit() and int(p) > 0 for p in x) for x in asked):
            ap.error(f"--splits {args.splits!r}: expected a comma list of batches like 1x32768 (sequences x tokens, "
                     f"whole numbers above 0)")
        SPLITS[:] = [(int(n), int(L)) for n, L in asked]
    skip = set(args.skip.split(","))
    AS_DEFAULT.update(PREFILL_CONFIGS[args.as_default] if args.as_default else {})
    SWEEP_ONLY.update(n for n in args.sweep_only.split(",") if n)
    unknown = SWEEP_ONLY - set(PREFILL_CONFIGS)
    if unknown:
        ap.error(f"--sweep-only: unknown settings {sorted(unknown)}; known: {sorted(PREFILL_CONFIGS)}")
    torch.manual_seed(0)
    say(f"# bench_kda_kernels.py on {torch.cuda.get_device_name()}, {datetime.datetime.now():%Y-%m-%d %H:%M}, "
        f"torch {torch.__version__}, triton {triton.__version__}" +
        (f"; prefill 'default' = {args.as_default} {AS_DEFAULT}" if args.as_default else ""))
    vl = load_vllm()
    copy_tbs, mm_tf = ceilings()
    say(f"ceilings: device-to-device copy {copy_tbs:.2f} TB/s (read + write), bf16 matmul 8192^3 {mm_tf:.0f} TFLOP/s")
    say()
    if "acc" not in skip:
        accuracy(vl)
    if "prefill" not in skip:
        prefill_times(vl, copy_tbs, mm_tf, args.sweep or bool(SWEEP_ONLY), args.gates)
    if "decode" not in skip:
        decode_times(vl, copy_tbs)


if __name__ == "__main__":
    main()
