"""Absorbed MLA decode on one GPU: ours vs vLLM 0.26's MLA decode kernels.

"ours" is ``mla_decode``'s default: on Hopper the Gluon kernel (kernels/mla/wgmma_decode.py; bf16 and fp8 caches),
else the Triton kernel (kernels/mla/triton_decode.py), which also runs as "ours_triton" on the plugin's pages.

Kimi-Linear-48B at TP1: H=32 heads, latent L=512 + rope R=64, block size 64 (FlashMLA needs it), shuffled
block tables, every sequence at the full context. For bf16 and fp8-e4m3 (per-tensor scale) caches and
batch x context in {1, 32, 128} x {4K, 32K, 128K} it prints one table: median time (triton do_bench, L2
flushed) and, where capture works, the CUDA-graph median; the cache-read bandwidth that implies and its
share of this GPU's device-to-device copy bandwidth (measured here); each kernel's difference from ours
on that case; and each kernel's error against an fp64 reference on a small case. A second table sweeps
the Triton kernel's launch configuration. Kernels that do not load on this GPU print n/a with the reason.

    python benchmarks/bench_mla_decode.py [--quick] [--no-sweep] [--no-graphs] [--flashinfer-jit]
"""

import argparse
import math
import os
import sys
import time
import traceback

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

H, L, R = 32, 512, 64
BS = 64                       # FlashMLA's block size; FA-MLA, Triton-MLA and ours take any multiple of 16
BS_REAL = 1888                # the hybrid-aligned block size vLLM picks for this model at TP1 (bf16)
BS_FP8 = 2 * BS_REAL          # and with an fp8 cache: the same bytes a page, twice the rows
SCALE = (128 + 64) ** -0.5
K_SCALE = 8.0 / 448.0         # fp8 cache: |values| <= 8 map into e4m3's range
FP8 = torch.float8_e4m3fn
DEVICE = "cuda"
T0 = time.time()


def log(*a):
    print(*a, flush=True)


def short(e: BaseException) -> str:
    s = f"{type(e).__name__}: {e}".replace("\n", " ")
    return s[:160]


# ------------------------------------------------------------------------------------------ cases

class Case:
    """One decode step: queries, a paged cache view, block table, lengths."""

    def __init__(self, dtype, cache, B, ctx, bs, gen, seq_lens=None, like=None):
        dev = cache.device
        self.dtype, self.cache, self.B, self.ctx, self.bs = dtype, cache, B, ctx, bs
        lens = seq_lens if seq_lens is not None else [ctx] * B
        nblk = max(math.ceil(x / bs) for x in lens)
        need = B * nblk
        assert need <= cache.shape[0], (need, cache.shape)
        perm = torch.randperm(cache.shape[0], generator=gen)[:need].to(torch.int32)
        self.block_table = perm.view(B, nblk).to(dev)
        self.seq_lens = torch.tensor(lens, dtype=torch.int32, device=dev)
        self.max_seq_len = max(lens)
        if like is not None:                             # same queries as another case
            self.q_lat, self.q_pe = like.q_lat, like.q_pe
        else:
            self.q_lat = (torch.randn(B, H, L, generator=gen) * 0.5).to(torch.bfloat16).to(dev)
            self.q_pe = (torch.randn(B, H, R, generator=gen) * 0.5).to(torch.bfloat16).to(dev)
        self.q = torch.cat([self.q_lat, self.q_pe], dim=-1).contiguous()
        self.k_scale = torch.tensor([K_SCALE if dtype == "fp8" else 1.0], dtype=torch.float32, device=dev)
        self.q_scale = (self.q.abs().amax().float() / 448.0).reshape(1)      # for kernels that take fp8 q
        self.bytes = sum(lens) * (L + R) * cache.element_size()


def fill_cache(cache, chunk_tokens=1 << 20):
    """Random latent rows, N(0, 1) (an RMS-normalised latent), written in chunks; fp8 via our quantiser."""
    from kernels.mla.fp8 import quantize_latent
    flat = cache.view(-1, L + R)
    for i in range(0, flat.shape[0], chunk_tokens):
        part = torch.randn(min(chunk_tokens, flat.shape[0] - i), L + R, device=cache.device)
        flat[i:i + part.shape[0]] = quantize_latent(part, K_SCALE) if cache.dtype == FP8 else part.to(cache.dtype)


def reference(case):
    """fp64 attention over the dequantised cache: (o [B,H,L], lse [B,H])."""
    c = case.cache.view(-1, L + R)
    o = torch.empty(case.B, H, L, dtype=torch.float64, device=c.device)
    lse = torch.empty(case.B, H, dtype=torch.float64, device=c.device)
    for n in range(case.B):
        T = int(case.seq_lens[n])
        pos = torch.arange(T, device=c.device)
        rows = case.block_table[n].long()[pos // case.bs] * case.bs + pos % case.bs
        kv = c[rows].double() * (case.k_scale.double() if case.dtype == "fp8" else 1.0)
        s = (case.q_lat[n].double() @ kv[:, :L].T + case.q_pe[n].double() @ kv[:, L:].T) * SCALE
        lse[n] = torch.logsumexp(s, -1)
        o[n] = torch.softmax(s, -1) @ kv[:, :L]
    return o, lse


# ------------------------------------------------------------------------------------------ kernels
# Each maker returns fn() -> o [B, H, L] (or raises: the kernel is then n/a for this case).

def default_launch(case):
    """Our Triton kernel's default launch settings for ``case`` (``default_config``) and its split count."""
    from kernels.device import num_sms
    from kernels.mla.triton_decode import choose_num_splits, default_config

    d = default_config(H, L, 1 if case.dtype == "fp8" else 2)
    sms = num_sms(case.cache.device) * d["programs_per_sm"]
    return d, choose_num_splits(case.B, -(-H // d["block_h"]), case.max_seq_len, sms)


def make_ours(case, **cfg):
    from kernels.mla.triton_decode import mla_decode

    def fn():
        return mla_decode(case.q_lat, case.q_pe, case.cache, case.block_table, case.seq_lens, SCALE,
                          k_scale=case.k_scale, max_seq_len=case.max_seq_len, **cfg)[0]
    return fn


def make_ours_triton(case):
    """Our Triton kernel (``wgmma=False``): the default on GPUs other than Hopper."""
    return make_ours(case, wgmma=False)


def make_ours_fp32(case):
    """Our kernel with fp32 queries and an fp32 copy of the cache (exact-math check, small case only)."""
    from kernels.mla.triton_decode import mla_decode
    cache32 = case.cache.float() * (case.k_scale if case.dtype == "fp8" else 1.0)
    q_lat, q_pe = case.q_lat.float(), case.q_pe.float()

    def fn():
        return mla_decode(q_lat, q_pe, cache32, case.block_table, case.seq_lens, SCALE, num_splits=3)[0]
    return fn


def make_ours_fp32q(case):
    """Our kernel with fp32 queries on the case's own cache (bf16 or fp8): the CPU self-test's path."""
    from kernels.mla.triton_decode import mla_decode
    q_lat, q_pe = case.q_lat.float(), case.q_pe.float()

    def fn():
        return mla_decode(q_lat, q_pe, case.cache, case.block_table, case.seq_lens, SCALE,
                          k_scale=case.k_scale, num_splits=3)[0]
    return fn


def make_vllm_triton(case):
    from vllm.v1.attention.ops.triton_decode_attention import decode_attention_fwd
    try:
        from vllm.v1.attention.backends.mla.triton_mla import _compute_num_kv_splits
    except ImportError:                                  # same rule, should the helper move
        def _compute_num_kv_splits(max_seq_len, sm_count):
            return min(1 << max(0, (max(1, max_seq_len // 512) - 1).bit_length()), 2 * sm_count)
    sms = torch.cuda.get_device_properties(case.cache.device).multi_processor_count
    splits = _compute_num_kv_splits(case.max_seq_len, sms)
    kv = case.cache.unsqueeze(2)                         # [nb, bs, 1, 576], as TritonMLAImpl passes it
    o = torch.zeros(case.B, H, L, dtype=case.q.dtype, device=kv.device)
    lse = torch.zeros(case.B, H, dtype=case.q.dtype, device=kv.device)
    logits = torch.empty(case.B, H, splits, L + 1, dtype=torch.float32, device=kv.device)

    def fn():
        decode_attention_fwd(case.q, kv, kv[..., :L], o, lse, case.block_table, case.seq_lens, logits, splits,
                             SCALE, case.bs, k_scale=case.k_scale, v_scale=case.k_scale, is_mla=True)
        return o
    return fn


def make_flashmla(case):
    from vllm.v1.attention.ops import flashmla as fm
    ok, why = fm.is_flashmla_dense_supported()
    if not ok:
        raise RuntimeError(why)
    if case.bs != 64:
        raise RuntimeError("FlashMLA needs block size 64")
    kc = case.cache.unsqueeze(-2)                        # [nb, 64, 1, 576]
    if case.dtype == "bf16":
        q4 = case.q.unsqueeze(1)                         # [B, 1, H, 576]
        sched, _ = fm.get_mla_metadata(case.seq_lens, H, 1, is_fp8_kvcache=False)

        def fn():
            o, _ = fm.flash_mla_with_kvcache(q=q4, k_cache=kc, block_table=case.block_table,
                                             cache_seqlens=case.seq_lens, head_dim_v=L,
                                             tile_scheduler_metadata=sched, softmax_scale=SCALE, causal=True,
                                             is_fp8_kvcache=False)
            return o[:, 0]
    else:                                                # vLLM quantises q to fp8 with layer._q_scale
        q8 = (case.q.float() / case.q_scale).clamp(-448, 448).to(FP8).unsqueeze(1)
        tile_md, nsplit = fm.get_mla_metadata_dense_fp8(case.seq_lens, H, 1)

        def fn():
            o, _ = fm.flash_mla_with_kvcache_fp8(q=q8, k_cache=kc, block_table=case.block_table,
                                                 cache_seqlens=case.seq_lens, head_dim_v=L,
                                                 tile_scheduler_metadata=tile_md, num_splits=nsplit,
                                                 softmax_scale=SCALE, causal=True,
                                                 descale_q=case.q_scale, descale_k=case.k_scale)
            return o[:, 0]
    return fn


def make_fa_mla(case):
    if case.dtype != "bf16":
        raise RuntimeError("FlashAttention MLA has no fp8 cache in vLLM 0.26")
    from vllm.v1.attention.backends.fa_utils import flash_attn_supports_mla
    from vllm.vllm_flash_attn import flash_attn_varlen_func
    if not flash_attn_supports_mla():
        raise RuntimeError("flash_attn_supports_mla() is False")
    cu = torch.arange(case.B + 1, dtype=torch.int32, device=case.cache.device)
    k_pe = case.cache[..., L:].unsqueeze(-2)
    kv_c = case.cache[..., :L].unsqueeze(-2)

    def fn():
        return flash_attn_varlen_func(q=case.q_pe, k=k_pe, v=kv_c, q_v=case.q_lat, max_seqlen_q=1,
                                      cu_seqlens_q=cu, max_seqlen_k=case.max_seq_len, seqused_k=case.seq_lens,
                                      block_table=case.block_table, softmax_scale=SCALE, causal=True,
                                      fa_version=3)
    return fn


def make_flashinfer_trtllm(case):
    major, _ = torch.cuda.get_device_capability(case.cache.device)
    if major != 10:
        raise RuntimeError("vLLM's FLASHINFER_MLA (trtllm-gen) runs on SM100 only")
    from flashinfer.decode import trtllm_batch_decode_with_kv_cache_mla
    ws = torch.zeros(128 * 1024 * 1024, dtype=torch.int8, device=case.cache.device)
    if case.dtype == "bf16":
        q, bmm1, bmm2 = case.q, SCALE, 1.0
    else:
        q = (case.q.float() / case.q_scale).clamp(-448, 448).to(FP8)
        bmm1, bmm2 = SCALE * float(case.q_scale) * K_SCALE, K_SCALE
    q = q.view(case.B, 1, H, L + R)

    def fn():
        o = trtllm_batch_decode_with_kv_cache_mla(
            query=q, kv_cache=case.cache.unsqueeze(1), workspace_buffer=ws, qk_nope_head_dim=128,
            kv_lora_rank=L, qk_rope_head_dim=R, block_tables=case.block_table, seq_lens=case.seq_lens,
            max_seq_len=case.max_seq_len, bmm1_scale=bmm1, bmm2_scale=bmm2)
        return o.view(case.B, H, L)
    return fn


def make_flashinfer_fa3(case):
    if case.dtype != "bf16":
        raise RuntimeError("bf16 only here")
    import flashinfer
    dev = case.cache.device
    w = flashinfer.mla.BatchMLAPagedAttentionWrapper(torch.empty(128 << 20, dtype=torch.int8, device=dev),
                                                     backend="fa3")
    nblk = case.block_table.shape[1]
    w.plan(torch.arange(case.B + 1, dtype=torch.int32, device=dev),
           torch.arange(case.B + 1, dtype=torch.int32, device=dev) * nblk,
           case.block_table.reshape(-1).contiguous(), case.seq_lens, H, L, R, case.bs, False, SCALE,
           torch.bfloat16, torch.bfloat16)

    def fn():
        return w.run(case.q_lat, case.q_pe, case.cache[..., :L], case.cache[..., L:])
    return fn


KERNELS = [("ours", make_ours), ("vllm_triton_mla", make_vllm_triton), ("flash_attn_mla", make_fa_mla),
           ("flashmla", make_flashmla), ("flashinfer_mla(trtllm)", make_flashinfer_trtllm)]


class DeviceBroken(RuntimeError):
    """A kernel left the CUDA context unusable (illegal address, device assert): stop and report."""


def is_sticky(e: BaseException) -> bool:
    msg = str(e).lower()
    return any(k in msg for k in ("illegal memory access", "illegal address", "device-side assert",
                                  "unspecified launch failure", "misaligned address", "cuda error: an illegal"))


# ------------------------------------------------------------------------------------------ timing

def bench(fn, graphs: bool):
    from triton.testing import do_bench, do_bench_cudagraph
    eager = do_bench(fn, warmup=25, rep=100, return_mode="median")
    graph = None
    if graphs:
        try:
            graph = do_bench_cudagraph(fn, rep=50, return_mode="median")
        except Exception as e:                           # some kernels cannot be captured
            graph = None
            log(f"    (graph capture failed: {short(e)})")
            torch.cuda.synchronize()
    return eager, graph


def rel(a, b):
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm().clamp(min=1e-30)).item()


def copy_bandwidth(dev):
    from triton.testing import do_bench
    n = 1 << 31                                          # 2 GiB each way
    x = torch.empty(n, dtype=torch.uint8, device=dev)
    y = torch.empty_like(x)
    ms = do_bench(lambda: y.copy_(x), warmup=25, rep=200, return_mode="median")
    del x, y
    torch.cuda.empty_cache()
    return 2 * n / (ms * 1e-3) / 1e9


def correctness(dev, dtype, kernels, lens=(1, 700, 2100), makers=None):
    """Each kernel vs fp64 on 3 sequences of 1, 700 and 2100 positions (block size 64)."""
    gen = torch.Generator().manual_seed(1)
    cache = torch.empty(200, BS, L + R, dtype=torch.bfloat16 if dtype == "bf16" else FP8, device=dev)
    fill_cache(cache)
    case = Case(dtype, cache, 3, max(lens), BS, gen, seq_lens=list(lens))
    ref_o, ref_lse = reference(case)
    out = {}
    if makers is None:
        makers = [("ours_fp32_math", make_ours_fp32), ("ours_triton", make_ours_triton),
                  ("ours_bf16q", lambda c: make_ours(c, fp8_queries=False)),
                  ("ours_tma", lambda c: make_ours(c, tma=True, block_n=32, num_stages=3))] + kernels
    for name, mk in makers:
        try:
            o = mk(case)()
            sync()
            err = rel(o.float(), ref_o)
            nan = bool(torch.isnan(o.float()).any())
            out[name] = "NaN!" if nan else f"{err:.1e}"
        except Exception as e:
            out[name] = "n/a"
            log(f"  correctness {dtype} {name}: n/a ({short(e)})")
            if is_sticky(e):
                raise DeviceBroken(f"{name}: {short(e)}") from e
    # our lse as well (the others use other lse conventions or shapes)
    try:
        from kernels.mla.triton_decode import mla_decode
        _, lse = mla_decode(case.q_lat.float(), case.q_pe.float(), case.cache, case.block_table, case.seq_lens, SCALE,
                            k_scale=case.k_scale, num_splits=4)
        out["ours_lse_abs"] = f"{(lse.double() - ref_lse).abs().max().item():.1e}"
    except Exception as e:
        out["ours_lse_abs"] = f"n/a ({short(e)})"
    del cache
    return out


def sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def cpu_selftest():
    """The plumbing without a GPU (TRITON_INTERPRET=1): cases, fp8 fill, reference, our kernel, n/a paths."""
    assert os.environ.get("TRITON_INTERPRET") == "1", "run the self-test with TRITON_INTERPRET=1"
    ok = True
    for dt in ("bf16", "fp8"):
        makers = [("ours_fp32_math", make_ours_fp32), ("ours_fp32q", make_ours_fp32q)] + KERNELS[1:]
        res = correctness(torch.device("cpu"), dt, KERNELS, lens=(1, 65, 130), makers=makers)
        log(f"self-test {dt}: {res}")
        for k in ("ours_fp32_math", "ours_fp32q"):
            ok &= res[k] not in ("n/a", "NaN!") and float(res[k]) < 1e-5
        ok &= float(res["ours_lse_abs"].split()[0]) < 1e-5 if not res["ours_lse_abs"].startswith("n/a") else True
    table(("a", "b"), [("x", 1), ("yy", 22)])
    log("self-test " + ("passed" if ok else "FAILED"))
    return 0 if ok else 1


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="batches 1,32 and contexts 4K,32K only")
    ap.add_argument("--no-sweep", action="store_true", help="skip the sweep of our launch configurations")
    ap.add_argument("--no-graphs", action="store_true", help="skip the CUDA-graph timings")
    ap.add_argument("--flashinfer-jit", action="store_true",
                    help="also time flashinfer's BatchMLAPagedAttentionWrapper(fa3) (JIT-compiles: minutes)")
    ap.add_argument("--dtypes", default="bf16,fp8")
    ap.add_argument("--batches", default="", help="comma list, e.g. 1,32,128")
    ap.add_argument("--contexts", default="", help="comma list, e.g. 4096,32768,131072")
    ap.add_argument("--kernels", default="", help="comma list of kernels to time besides ours (default: all)")
    ap.add_argument("--budget-s", type=float, default=420.0,
                    help="start no new case after this many seconds (the sweep runs last, in what is left)")
    ap.add_argument("--cpu-selftest", action="store_true", help="check the plumbing on a CPU (TRITON_INTERPRET=1)")
    args = ap.parse_args()
    if args.cpu_selftest:
        return cpu_selftest()

    if not torch.cuda.is_available():
        log("no CUDA device: nothing to benchmark (--cpu-selftest checks the plumbing on a CPU)")
        return 1
    dev = torch.device(DEVICE)
    torch.manual_seed(0)
    import triton
    props = torch.cuda.get_device_properties(dev)
    try:
        import vllm
        vv = vllm.__version__
    except Exception as e:
        vv = f"n/a ({short(e)})"
    log(f"device {props.name} ({props.multi_processor_count} SMs, {props.total_memory / 2**30:.0f} GiB), "
        f"torch {torch.__version__}, triton {triton.__version__}, vllm {vv}")
    copy_bw = copy_bandwidth(dev)
    log(f"device copy bandwidth (read + write) {copy_bw:.0f} GB/s")

    kernels = KERNELS + ([("flashinfer_mla(fa3)", make_flashinfer_fa3)] if args.flashinfer_jit else [])
    if args.kernels:
        keep = set(args.kernels.split(","))
        kernels = [k for k in kernels if k[0] in keep or k[0] == "ours"]
    batches = [int(x) for x in args.batches.split(",")] if args.batches else [1, 32] if args.quick else [1, 32, 128]
    contexts = ([int(x) for x in args.contexts.split(",")] if args.contexts
                else [4096, 32768] if args.quick else [4096, 32768, 131072])
    dtypes = args.dtypes.split(",")
    graphs = not args.no_graphs
    names = [k[0] for k in kernels]

    checks, rows, sweep_rows = {}, [], []
    try:
        for dt in dtypes:
            checks[dt] = correctness(dev, dt, kernels)
            log(f"correctness {dt} (relative L2 error of o vs fp64): {checks[dt]}")
        caches = {}
        for dt in dtypes:                                # the main table first, for every cache dtype
            if time.time() - T0 > args.budget_s:
                log("time budget spent; stopping")
                break
            caches[dt] = run_dtype(dt, dev, kernels, batches, contexts, graphs, checks, rows, copy_bw, args)
        for dt, cache in caches.items():                 # then the sweep, while time is left
            gen = torch.Generator().manual_seed(3)
            for B in batches:
                for ctx in contexts:
                    if args.no_sweep or time.time() - T0 > args.budget_s:
                        break
                    # the block size the plugin serves with only (the 64-token pages are for vLLM's kernels)
                    real = cache.view(cache.shape[0] * BS // BS_REAL, BS_REAL, L + R)
                    sweep_rows.append(sweep(Case(dt, real, B, ctx, BS_REAL, gen)))
    except DeviceBroken as e:
        log(f"STOPPED: the CUDA context is unusable after {e}; rerun with --kernels leaving that one out "
            f"(choices: {','.join(names)})")

    log("")
    log(f"MLA decode, H={H} L={L} R={R}, block {BS} unless named; copy bandwidth {copy_bw:.0f} GB/s; "
        "GB/s = cache bytes read / eager median; diff = rel. L2 vs ours on the case; "
        "err = rel. L2 vs fp64 on the small case")
    head = ("cache", "batch", "ctx", "kernel", "eager_us", "graph_us", "GB/s", "of_copy", "diff_vs_ours",
            "err_small")
    if rows:
        table(head, rows)
    if sweep_rows:
        log("")
        log("our Triton kernel's launch configurations: default vs fastest of the sweep (eager median us; config = "
            "block_h/block_n/warps/stages/splits/prefetch/tokens_as_rows[/tma]; every config's time is in the log above)")
        table(("cache", "batch", "ctx", "default_cfg", "default_us", "best_cfg", "best_us", "best_GB/s", "gain"),
              sweep_rows)
    log(f"total {time.time() - T0:.0f}s")
    return 0


def run_dtype(dt, dev, kernels, batches, contexts, graphs, checks, rows, copy_bw, args):
    """Time every kernel on every shape for one cache dtype; returns the (64-token-block) cache."""
    # one cache for all shapes, viewed as 64-token, 1888-token and (fp8) 3776-token blocks: room for the largest
    # batch x context at any of them
    tokens = max(batches) * max(-(-max(contexts) // BS_FP8) * BS_FP8, -(-max(contexts) // BS) * BS)
    unit = 64 * 59                                       # lcm(64, 1888, 3776)
    tokens = -(-tokens // unit) * unit
    cache = torch.empty(tokens // BS, BS, L + R, dtype=torch.bfloat16 if dt == "bf16" else FP8, device=dev)
    t = time.time()
    fill_cache(cache)
    torch.cuda.synchronize()
    log(f"[{dt}] cache {cache.numel() * cache.element_size() / 2**30:.1f} GiB filled in {time.time() - t:.1f}s")
    real = cache.view(tokens // BS_REAL, BS_REAL, L + R)
    real_fp8 = cache.view(tokens // BS_FP8, BS_FP8, L + R)
    gen = torch.Generator().manual_seed(2)
    for B in batches:
        for ctx in contexts:
            if time.time() - T0 > args.budget_s:
                log("time budget spent; stopping")
                return cache
            case = Case(dt, cache, B, ctx, BS, gen)
            case_real = Case(dt, real, B, ctx, BS_REAL, gen, like=case)
            # ours: the default kernel (on Hopper the Gluon wgmma one), then the Triton kernel
            entries = [("ours", "ours", make_ours, case), (f"ours@bs{BS_REAL}", "ours", make_ours, case_real),
                       (f"ours_triton@bs{BS_REAL}", "ours_triton", make_ours_triton, case_real)]
            if dt == "fp8":                              # the page size the plugin's fp8 cache has
                case_fp8 = Case(dt, real_fp8, B, ctx, BS_FP8, gen, like=case)
                entries.insert(2, (f"ours@bs{BS_FP8}", "ours", make_ours, case_fp8))
                # with the queries kept in 16 bits (VLLM_KIMILINEAR_MLA_FP8_QUERIES=0)
                entries.insert(3, (f"ours_bf16q@bs{BS_FP8}", "ours_bf16q",
                                   lambda c: make_ours(c, fp8_queries=False), case_fp8))
            for name, mk in kernels[1:]:
                entries.append((name, name, mk, case))
                if name == "flash_attn_mla":
                    entries.append((f"flash_attn_mla@bs{BS_REAL}", name, mk, case_real))
            ref_out = {}                                 # first output per case object (its own block table)
            for name, key, mk, cs in entries:
                try:
                    fn = mk(cs)
                    o = fn()
                    torch.cuda.synchronize()
                    ref_out.setdefault(id(cs), o.float())
                    diff = rel(o.float(), ref_out[id(cs)])
                    eager, graph = bench(fn, graphs)
                    gbs = cs.bytes / (eager * 1e-3) / 1e9
                    rows.append((dt, B, ctx, name, f"{eager * 1e3:.1f}",
                                 f"{graph * 1e3:.1f}" if graph is not None else "n/a",
                                 f"{gbs:.0f}", f"{100 * gbs / copy_bw:.0f}%", f"{diff:.1e}",
                                 checks[dt].get(key, "-")))
                    del fn, o
                except Exception as e:
                    rows.append((dt, B, ctx, name, "n/a", "n/a", "n/a", "n/a", "n/a", short(e)[:60]))
                    log(f"  {dt} | {B} | {ctx} | {name} | n/a: {short(e)}")
                    if is_sticky(e):
                        raise DeviceBroken(f"{name}: {short(e)}") from e
                    continue
                log("  " + " | ".join(str(x) for x in rows[-1]))
            del case, case_real
            torch.cuda.empty_cache()
    return cache


def sweep(case):
    """Our kernel under several launch configurations on one case: (case, default, best) summary row."""
    from kernels.device import num_sms
    from kernels.mla.triton_decode import choose_num_splits, legacy_num_splits, mla_decode
    from triton.testing import do_bench
    d, s0 = default_launch(case)
    bh0 = d["block_h"]
    s1 = choose_num_splits(case.B, -(-H // bh0), case.max_seq_len, num_sms(case.cache.device))   # one program an SM
    # (block_h, block_n, warps, stages, splits, prefetch, tokens_as_rows); prefetch "-" = the kernel's default
    dflt = (bh0, d["block_n"], d["num_warps"], d["num_stages"], s0, "-", False)
    legacy = legacy_num_splits(case.B, -(-H // bh0), case.max_seq_len, num_sms(case.cache.device))
    # The fourth session's sweep (RESULTS.md) left 64-token tiles at 3 stages as the default; TMA tiles, 64 head rows,
    # and transposed products were all slower. This one compares split counts around the default's choice
    # (the fourth session's rule: ~4 programs per SM) and two nearby launch settings.
    # (bh0, 64, 8, 3, s1): the default for every cache until the fifteenth session (16-bit caches since: 32-token
    # tiles on 4 warps, two programs an SM)
    cfgs = [dflt, (bh0, 64, 8, 3, s1, "-", False),
            (bh0, 64, 8, 3, legacy, "-", False), (bh0, 64, 8, 3, max(1, s0 // 2), "-", False),
            (bh0, 64, 8, 3, min(256, 2 * s0), "-", False), (bh0, 64, 8, 3, min(256, 3 * s0), "-", False),
            (bh0, 32, 8, 4, s0, "-", False), (bh0, 64, 4, 2, s0, False, True), (bh0, 64, 8, 4, s0, "-", False)]
    res = []
    for cfg in dict.fromkeys(cfgs):
        bh, bn, nw, ns, sp, pf, tar, *tma = cfg
        try:
            fn = lambda: mla_decode(case.q_lat, case.q_pe, case.cache, case.block_table, case.seq_lens,  # noqa
                                    SCALE, sp, case.k_scale, block_h=bh, block_n=bn, num_warps=nw,
                                    num_stages=ns, prefetch=None if pf == "-" else pf, tokens_as_rows=tar,
                                    tma=bool(tma and tma[0]))[0]
            fn()
            res.append((cfg, do_bench(fn, warmup=10, rep=50, return_mode="median") * 1e3))
        except Exception as e:
            res.append((cfg, float("inf")))
            log(f"    sweep {cfg}: {short(e)}")
            if is_sticky(e):
                raise DeviceBroken(f"ours {cfg}: {short(e)}") from e
    name = lambda c: "/".join(str(x) for x in c)  # noqa
    log(f"  sweep {case.dtype} {case.B}x{case.ctx} block {case.bs}: " + "; ".join(f"{name(c)}: {us:.1f}" for c, us in res))
    (c0, us0), (cb, usb) = res[0], min(res, key=lambda r: r[1])
    gbs = f"{case.bytes / (usb * 1e-6) / 1e9:.0f}" if math.isfinite(usb) else "n/a"
    return (case.dtype, case.B, f"{case.ctx} (block {case.bs})", name(c0), f"{us0:.1f}", name(cb), f"{usb:.1f}", gbs,
            f"{us0 / usb:.2f}x" if math.isfinite(usb) and math.isfinite(us0) else "n/a")


def table(head, rows):
    w = [max(len(str(h)), *(len(str(r[i])) for r in rows)) for i, h in enumerate(head)]
    log(" | ".join(str(h).ljust(w[i]) for i, h in enumerate(head)))
    log("-+-".join("-" * x for x in w))
    for r in rows:
        log(" | ".join(str(x).ljust(w[i]) for i, x in enumerate(r)))


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception:
        traceback.print_exc()
        sys.exit(1)
