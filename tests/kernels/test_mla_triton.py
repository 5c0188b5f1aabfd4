"""The Triton MLA decode (kernels/mla/triton_decode.py) and the fp8 cache helpers vs an fp64 reference.

Runs on a CUDA device, or on a CPU under TRITON_INTERPRET=1 (set before Python starts). Every cache row
that the kernel must not read (past seq_lens, unused block-table entries) holds NaN, and so do the
outputs before each run, so any stray read or missed write shows up as NaN.
"""

import math
import os

import pytest
import torch

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
if not INTERPRET and not torch.cuda.is_available():
    pytest.skip("the Triton kernels need a CUDA device or TRITON_INTERPRET=1 (set it before Python starts)",
                allow_module_level=True)
triton = pytest.importorskip("triton")

from kernels.mla import fp8, paged  # noqa: E402
from kernels.mla.triton_decode import choose_num_splits, mla_decode  # noqa: E402

DEV = "cpu" if INTERPRET else "cuda"
NAN = float("nan")
# the interpreter (triton 3.6) converts 1-element arrays to scalars in a way numpy deprecates
pytestmark = pytest.mark.filterwarnings("ignore:Conversion of an array with ndim > 0:DeprecationWarning")


def make_case(seq_lens, bs, H, L, R, seed=0, extra_cols=2, row_pad=0, dtype=torch.float32):
    """A paged cache with shuffled, non-contiguous blocks; everything not holding a live row is NaN.

    Returns q_lat [N,H,L], q_pe [N,H,R], kv [nb, bs, L+R] (a view with row stride L+R+row_pad),
    block_table [N, needed + extra_cols] int32 and seq_lens [N] int32.
    """
    g = torch.Generator().manual_seed(seed)
    N = len(seq_lens)
    need = [-(-t // bs) for t in seq_lens]
    cols = max(max(need), 1) + extra_cols
    nb = sum(need) + 3                                   # spare blocks, one of them the poison block
    store = torch.full((nb, bs, L + R + row_pad), NAN)
    perm = torch.randperm(nb - 1, generator=g) + 1       # block 0 stays all-NaN
    bt = torch.zeros(N, cols, dtype=torch.int32)         # unused entries point at the NaN block
    k = 0
    for n, t in enumerate(seq_lens):
        for j in range(need[n]):
            blk = int(perm[k])
            k += 1
            bt[n, j] = blk
            rows = min(bs, t - j * bs)
            store[blk, :rows, : L + R] = torch.randn(rows, L + R, generator=g)
    kv = store.to(DEV)[..., : L + R].to(dtype)          # slice on the device: keeps the padded row stride
    q_lat = torch.randn(N, H, L, generator=g)
    q_pe = torch.randn(N, H, R, generator=g)
    sl = torch.tensor(seq_lens, dtype=torch.int32)
    return q_lat.to(DEV), q_pe.to(DEV), kv, bt.to(DEV), sl.to(DEV)


def reference(q_lat, q_pe, kv, block_table, seq_lens, scale, k_scale=1.0):
    """fp64 softmax attention over each sequence's rows, gathered position by position."""
    N, H, L = q_lat.shape
    bs = kv.shape[1]
    kv64 = kv.cpu().double() * k_scale
    o = torch.zeros(N, H, L, dtype=torch.float64)
    lse = torch.full((N, H), float("-inf"), dtype=torch.float64)
    for n in range(N):
        T = int(seq_lens[n])
        if T == 0:
            continue
        rows = torch.stack([kv64[int(block_table[n, t // bs]), t % bs] for t in range(T)])
        c, kpe = rows[:, :L], rows[:, L:]
        s = (q_lat[n].cpu().double() @ c.T + q_pe[n].cpu().double() @ kpe.T) * scale
        lse[n] = torch.logsumexp(s, dim=-1)
        o[n] = torch.softmax(s, dim=-1) @ c
    return o, lse


def run(q_lat, q_pe, kv, bt, sl, scale, **kw):
    N, H, L = q_lat.shape
    out = torch.full((N, H, L), NAN, dtype=q_lat.dtype, device=q_lat.device)
    out_lse = torch.full((N, H), NAN, dtype=torch.float32, device=q_lat.device)
    o, lse = mla_decode(q_lat, q_pe, kv, bt, sl, scale, out=out, out_lse=out_lse, **kw)
    assert o.data_ptr() == out.data_ptr() and lse.data_ptr() == out_lse.data_ptr()
    return o, lse


def check(o, lse, ref_o, ref_lse, tol):
    assert not torch.isnan(o).any() and not torch.isnan(lse).any()
    err_o = (o.cpu().double() - ref_o).abs().max().item()
    err_lse = (lse.cpu().double() - ref_lse).abs().max().item()
    assert err_o <= tol and err_lse <= tol, (err_o, err_lse)


@pytest.mark.parametrize("num_splits", [1, 2, 5, 13])          # 13: the merge takes splits 8 at a time
def test_block_boundaries_bs16(num_splits):
    case = make_case([1, 15, 16, 17, 48, 100], bs=16, H=5, L=64, R=16, seed=1)
    o, lse = run(*case, 0.125, num_splits=num_splits)
    check(o, lse, *reference(*case, 0.125), tol=2e-5)


@pytest.mark.parametrize("num_splits", [1, 4])
def test_block_boundaries_bs32_two_head_groups(num_splits):
    case = make_case([31, 32, 33, 200], bs=32, H=20, L=64, R=16, seed=2)
    o, lse = run(*case, 0.1, num_splits=num_splits, block_h=16)     # heads 16..19 in a second group
    check(o, lse, *reference(*case, 0.1), tol=2e-5)


@pytest.mark.parametrize("bs", [24, 80, 128])
def test_other_block_sizes(bs):
    """Any block size works: 24 takes the flat loop (a lookup per row); 80 and 128 (>= 4 tiles of 16) the
    page-by-page loop, 80 with pages that end inside a tile. vLLM's are multiples of 16, e.g. 1888."""
    case = make_case([1, bs - 1, bs, bs + 1, 2 * bs + 5], bs=bs, H=3, L=64, R=16, seed=14)
    o, lse = run(*case, 0.1, num_splits=3)
    check(o, lse, *reference(*case, 0.1), tol=2e-5)


@pytest.mark.parametrize("tokens_as_rows", [False, True])
@pytest.mark.parametrize("prefetch", [False, True])
@pytest.mark.parametrize("block_n,num_splits", [(16, 1), (16, 3), (16, 7), (32, 3)])
def test_loops_and_prefetch(block_n, num_splits, prefetch, tokens_as_rows):
    """Pages of >= PAGE_LOOP_MIN_TILES tiles take the page-by-page loop (block_n 16 here; 32 keeps the flat
    loop), each with and without the register prefetch of the next tile, in both product orientations:
    splits that start and end inside pages, partial pages, a sequence shorter than one tile."""
    from kernels.mla.triton_decode import PAGE_LOOP_MIN_TILES
    bs = 64
    assert (bs >= PAGE_LOOP_MIN_TILES * block_n) == (block_n == 16)
    case = make_case([1, 63, 64, 65, 200, 333], bs=bs, H=3, L=64, R=16, seed=21)
    if prefetch and tokens_as_rows:          # refused: this pair crashed on an H100
        with pytest.raises(ValueError, match="tokens_as_rows"):
            run(*case, 0.1, num_splits=num_splits, block_n=block_n, prefetch=True, tokens_as_rows=True)
        return
    o, lse = run(*case, 0.1, num_splits=num_splits, block_n=block_n, prefetch=prefetch,
                 tokens_as_rows=tokens_as_rows)
    check(o, lse, *reference(*case, 0.1), tol=2e-5)


@pytest.mark.parametrize("bs,block_n,num_splits", [(64, 16, 3), (40, 16, 1), (24, 32, 5)])
def test_tma_tiles(bs, block_n, num_splits):
    """tma=True (tiles through TMA descriptors): pages that are not a whole number of tiles (the tile's tail past
    the page comes back as zeros), splits and sequences ending mid-tile over NaN-poisoned rows, a row stride
    padded beyond L + R."""
    case = make_case([1, 63, 64, 65, 200, 333], bs=bs, H=3, L=64, R=16, seed=22, row_pad=4)
    o, lse = run(*case, 0.1, num_splits=num_splits, block_n=block_n, tma=True)
    check(o, lse, *reference(*case, 0.1), tol=2e-5)


def test_tma_refuses_what_it_cannot_do():
    case = make_case([5], bs=16, H=2, L=64, R=16, seed=1)
    with pytest.raises(ValueError, match="prefetch"):
        run(*case, 0.1, tma=True, prefetch=True)
    odd = make_case([5], bs=16, H=2, L=48, R=16, seed=1)
    with pytest.raises(ValueError, match="powers of two"):
        run(*odd, 0.1, tma=True)


def test_more_splits_than_tiles_and_empty_sequence():
    case = make_case([3, 40, 0, 16], bs=16, H=3, L=64, R=16, seed=3)
    for s in (1, 16):
        o, lse = run(*case, 0.2, num_splits=s)
        ref_o, ref_lse = reference(*case, 0.2)
        assert (o[2] == 0).all() and torch.isinf(lse[2]).all() and (lse[2] < 0).all()
        keep = [0, 1, 3]
        check(o[keep], lse[keep], ref_o[keep], ref_lse[keep], tol=2e-5)


def test_strided_inputs_int64_tables():
    """q_lat as a transposed view (as vLLM's absorbed bmm gives it), padded cache rows, int64 metadata."""
    q_lat, q_pe, kv, bt, sl = make_case([5, 70, 33], bs=16, H=4, L=64, R=16, seed=4, row_pad=8, extra_cols=3)
    assert kv.stride(1) == 64 + 16 + 8 and not kv.is_contiguous()
    q_t = q_lat.transpose(0, 1).contiguous().transpose(0, 1)      # [N,H,L] with stride(1) = N*L
    assert q_t.stride(0) == 64
    o, lse = run(q_t, q_pe, kv, bt.long(), sl.long(), 0.15, num_splits=3)
    check(o, lse, *reference(q_lat, q_pe, kv, bt, sl, 0.15), tol=2e-5)


@pytest.mark.parametrize("num_splits", [1, 3])
def test_real_dims(num_splits):
    """Kimi-Linear's latent sizes (L=512, R=64), few heads and tokens."""
    case = make_case([17, 40], bs=16, H=2, L=512, R=64, seed=5)
    o, lse = run(*case, (128 + 64) ** -0.5, num_splits=num_splits)
    check(o, lse, *reference(*case, (128 + 64) ** -0.5), tol=2e-5)


def test_default_splits_heuristic():
    case = make_case([300, 520], bs=32, H=4, L=64, R=16, seed=6)
    ref = reference(*case, 0.1)
    for kw in ({}, {"max_seq_len": 520}):
        o, lse = run(*case, 0.1, **kw)
        check(o, lse, *ref, tol=2e-5)


def test_choose_num_splits():
    assert choose_num_splits(1, 1, 0, 132) == 1
    assert choose_num_splits(1, 1, 4096, 132) == 16                # capped by 256 tokens a split
    assert choose_num_splits(1, 1, 131072, 132) == 132             # one wave of programs
    assert choose_num_splits(32, 1, 32768, 132) == 4               # 128 programs: one wave, not 4.1 (17 splits)
    assert choose_num_splits(128, 1, 131072, 132) == 1             # one wave without splitting: no merge
    for batch in (1, 3, 32, 100, 128, 200, 1024):
        for ctx in (300, 4096, 32768, 131072, 1 << 20):
            s = choose_num_splits(batch, 1, ctx, 132)
            assert s == 1 or ctx // s >= 256, (batch, ctx, s)
            programs = batch * s
            fill = programs / (-(-programs // 132) * 132)          # how full the waves are
            assert fill >= 0.9 or ctx // (s + 1) < 256 or batch >= 132 * 4, (batch, ctx, s, fill)


@pytest.mark.parametrize("S,L", [(3, 512), (130, 128), (256, 512)])
def test_merge_of_many_splits(S, L):
    """The split merge against a plain fp64 merge: few splits (one program a head) and many (each head's row over
    several programs, ``combine_block_l``), with empty splits (m = -inf, l = 0, partial NaN) that must weigh nothing."""
    from kernels.mla.triton_decode import _mla_decode_combine, combine_block_l, combine_width

    g = torch.Generator().manual_seed(S)
    N, H = 2, 3
    acc = torch.randn(N, H, S, L, generator=g)
    m = torch.randn(N, H, S, generator=g) * 4
    l = torch.rand(N, H, S, generator=g) + 0.1
    empty = torch.rand(N, H, S, generator=g) < 0.2
    empty[1, 2] = True                                  # a head with no position at all: o = 0, lse = -inf
    m[empty], l[empty], acc[empty] = float("-inf"), 0.0, NAN
    ml = torch.stack([m, l], -1).to(DEV)
    out = torch.full((N, H, L), NAN, device=DEV)
    lse = torch.full((N, H), NAN, device=DEV)
    block_l = combine_block_l(S, L)
    assert (S > 64) == (block_l < L)
    _mla_decode_combine[(N, H, triton.cdiv(L, block_l))](
        acc.to(DEV), ml, out, lse, S, S * L * H, S * L, L, S * H * 2, S * 2, out.stride(0), out.stride(1),
        lse.stride(0), L=L, BLOCK_L=block_l, BLOCK_S=combine_width(S))
    mx = m.double().amax(-1, keepdim=True)
    w = torch.where(empty, 0.0, torch.exp2(m.double() - mx.clamp(min=-1e300)))
    ref = (w[..., None] * acc.double().nan_to_num(0.0)).sum(2) / (w * l).sum(-1).clamp(min=1e-300)[..., None]
    ref_lse = (mx[..., 0] + torch.log2((w * l).sum(-1))) * math.log(2)
    assert torch.allclose(out.cpu().double(), ref, rtol=1e-5, atol=1e-6)
    assert torch.allclose(lse.cpu().double()[~empty.all(-1)], ref_lse[~empty.all(-1)], rtol=1e-6, atol=1e-6)
    assert lse[1, 2].item() == float("-inf") and (out[1, 2] == 0).all()


def test_variant_split_counts_cover_every_launch():
    """The warm-up's split counts (the plugin decodes once with each before serving) reach every kernel variant any
    split count the heuristic can pick launches: the direct one and each merge width."""
    from kernels.mla.triton_decode import MAX_SPLITS, combine_width, variant_num_splits

    counts = variant_num_splits()
    assert counts[0] == 1 and all(1 < c <= MAX_SPLITS for c in counts[1:])
    reachable = {choose_num_splits(b, g, ctx, sms) for b in (1, 2, 32, 200) for g in (1, 2)
                 for ctx in (100, 4096, 131072, 1 << 20) for sms in (78, 132)}
    assert max(reachable) > 128                                     # the widest merge is reachable
    assert {combine_width(s) for s in reachable if s > 1} <= {combine_width(c) for c in counts[1:]}
    assert {combine_width(s) for s in range(2, MAX_SPLITS + 1)} == {combine_width(c) for c in counts[1:]}


def test_matches_project_torch_path():
    """Ours + the absorbed projections == kernels/mla/paged.decode_absorbed (same cache layout)."""
    H, P, V, L, R, bs = 3, 32, 24, 64, 16, 16
    q_lat_unused, q_pe, kv, bt, sl = make_case([9, 37], bs=bs, H=H, L=L, R=R, seed=7)
    g = torch.Generator().manual_seed(8)
    W = (torch.randn(H, P + V, L, generator=g) / L ** 0.5).double()
    q_nope = torch.randn(2, H, P, generator=g).double()
    q_lat = torch.einsum("nhp,hpl->nhl", q_nope, W[:, :P]).float().to(DEV)
    o_lat, _ = run(q_lat, q_pe, kv, bt, sl, 0.2, num_splits=2)
    o = torch.einsum("nhl,hvl->nhv", o_lat.cpu().double(), W[:, P:])
    kv_clean = torch.nan_to_num(kv.cpu().double())       # paged.gather_rows reads padding rows; mask drops them
    ref = paged.decode_absorbed(q_nope, q_pe.cpu().double(), kv_clean, bt.cpu(), sl.cpu(), W, 0.2, int(sl.max()))
    assert (o - ref).abs().max().item() < 2e-5


def test_fp16_cache_and_query():
    q_lat, q_pe, kv, bt, sl = make_case([20, 45], bs=16, H=4, L=64, R=16, seed=9)
    case16 = (q_lat.half(), q_pe.half(), kv.half(), bt, sl)
    o, lse = run(*case16, 0.1, num_splits=2)
    ref_o, ref_lse = reference(*case16, 0.1)
    assert o.dtype == torch.float16
    check(o, lse, ref_o, ref_lse, tol=2e-2)


@pytest.mark.skipif(INTERPRET, reason="the interpreter computes tl.dot on bf16 operands wrongly "
                    "(shared/notes/triton-interpreter-on-cpu.md); the GPU runs this")
def test_bf16_cache_and_query():
    q_lat, q_pe, kv, bt, sl = make_case([20, 45, 300], bs=16, H=16, L=512, R=64, seed=10)
    case = (q_lat.bfloat16(), q_pe.bfloat16(), kv.bfloat16(), bt, sl)
    for s in (1, 4):
        o, lse = run(*case, 0.07, num_splits=s)
        ref_o, ref_lse = reference(*case, 0.07)
        check(o, lse, ref_o, ref_lse, tol=3e-2)


# ---------------------------------------------------------------- fp8 (e4m3) cache

def test_fp8_roundtrip_bound():
    g = torch.Generator().manual_seed(11)
    mag = torch.exp2(torch.empty(200_000).uniform_(-16, 8.8, generator=g))         # 2^-16 .. ~445
    x = mag * torch.where(torch.rand(200_000, generator=g) < 0.5, -1.0, 1.0)
    for scale in (1.0, torch.tensor([0.01]), 3.0):
        s = float(scale) if not isinstance(scale, torch.Tensor) else float(scale[0])
        xs = x * s
        q = fp8.quantize_latent(xs, scale)
        assert q.dtype == torch.float8_e4m3fn
        back = fp8.dequantize_latent(q, scale)
        err = (back - xs).abs()
        assert (err <= fp8.roundtrip_bound(xs, scale) * (1 + 1e-6)).all()
        normal = xs.abs() >= fp8.MIN_NORMAL * s
        assert ((err / xs.abs())[normal].max() <= 2.0 ** -4 * (1 + 1e-6))
        assert (err[~normal].max() <= 2.0 ** -10 * s * (1 + 1e-6))
        # the bound is attained to within a factor 2 (it is not loose)
        assert (err / fp8.roundtrip_bound(xs, scale)).max() > 0.5
    # saturation and exact values
    big = torch.tensor([1e6, -1e6, 448.0, 500.0, 1.0, -0.5, 0.0])
    q = fp8.quantize_latent(big, 1.0)
    assert fp8.dequantize_latent(q).tolist() == [448.0, -448.0, 448.0, 448.0, 1.0, -0.5, 0.0]
    assert fp8.dequantize_latent(q.view(torch.uint8)).tolist() == fp8.dequantize_latent(q).tolist()


def test_fp8_scale_from_amax():
    x = torch.randn(64, 576) * 7
    s = fp8.scale_from_amax(x)
    assert s.shape == (1,)
    q = fp8.quantize_latent(x, s)
    assert fp8.dequantize_latent(q).abs().max().item() == 448.0
    assert ((fp8.dequantize_latent(q, s) - x).abs() <= fp8.roundtrip_bound(x, s) * (1 + 1e-6)).all()
    assert fp8.DEFAULT_K_SCALE == 1.0


def _fp8_case(seq_lens, bs, H, L, R, seed, k_scale):
    q_lat, q_pe, kv, bt, sl = make_case(seq_lens, bs, H, L, R, seed=seed)
    kv8 = fp8.quantize_latent(torch.nan_to_num(kv.cpu()) * 5, k_scale)
    kv8.view(torch.uint8)[torch.isnan(kv.cpu())] = 0x7F                   # e4m3fn NaN where kv was poisoned
    return q_lat, q_pe, kv8.to(DEV), bt, sl


@pytest.mark.parametrize("num_splits", [1, 3])
def test_fp8_kernel(num_splits):
    """The kernel on an fp8 cache == fp64 attention over the dequantised cache (same values exactly)."""
    ks = 0.03
    q_lat, q_pe, kv8, bt, sl = _fp8_case([1, 16, 17, 90], bs=16, H=5, L=64, R=16, seed=12, k_scale=ks)
    assert torch.isnan(kv8.cpu().float()).any()
    ref = reference(q_lat, q_pe, kv8.float(), bt, sl, 0.1, k_scale=ks)
    o, lse = run(q_lat, q_pe, kv8, bt, sl, 0.1, num_splits=num_splits, k_scale=torch.tensor([ks], device=DEV))
    check(o, lse, *ref, tol=2e-5)
    o, lse = run(q_lat, q_pe, kv8.view(torch.uint8), bt, sl, 0.1, num_splits=num_splits, k_scale=ks)
    check(o, lse, *ref, tol=2e-5)


@pytest.mark.parametrize("page_loop_block_size", [16, 64])
def test_fp8_kernel_bf16_queries_fp16_math(page_loop_block_size):
    """fp8 cache + bf16 queries (the GPU's case) take the fp16 products by default: == fp64 attention over
    the dequantised cache up to the bf16 output's rounding (the interpreter cannot run bf16 products, so the
    bf16-operand variant is not checked here)."""
    ks = 0.03
    q_lat, q_pe, kv8, bt, sl = _fp8_case([1, 16, 17, 90, 200], bs=page_loop_block_size, H=5, L=64, R=16, seed=15,
                                         k_scale=ks)
    qb, qpb = q_lat.bfloat16(), q_pe.bfloat16()
    ref_o, ref_lse = reference(qb.float(), qpb.float(), kv8.float(), bt, sl, 0.1, k_scale=ks)
    o, lse = run(qb, qpb, kv8, bt, sl, 0.1, num_splits=3, k_scale=ks)
    o, lse = o.cpu(), lse.cpu()
    assert ((o.double() - ref_o).norm() / ref_o.norm()).item() < 1e-2          # bf16 output: ~3e-3
    assert (lse.double() - ref_lse).abs().max().item() < 1e-4


@pytest.mark.parametrize("num_splits", [1, 3])
def test_fp8_kernel_tma(num_splits):
    """The fp8 cache through TMA descriptors (the case they are for): == fp64 attention over the dequantised
    cache, NaN bytes outside the live rows included."""
    ks = 0.03
    q_lat, q_pe, kv8, bt, sl = _fp8_case([1, 16, 17, 90], bs=48, H=5, L=64, R=16, seed=12, k_scale=ks)
    ref = reference(q_lat, q_pe, kv8.float(), bt, sl, 0.1, k_scale=ks)
    o, lse = run(q_lat, q_pe, kv8.view(torch.uint8), bt, sl, 0.1, num_splits=num_splits, k_scale=ks, block_n=16,
                 tma=True)
    check(o, lse, *ref, tol=2e-5)


def test_fp8_kernel_real_dims():
    ks = 0.05
    q_lat, q_pe, kv8, bt, sl = _fp8_case([33], bs=16, H=2, L=512, R=64, seed=13, k_scale=ks)
    o, lse = run(q_lat, q_pe, kv8, bt, sl, (128 + 64) ** -0.5, num_splits=2, k_scale=ks)
    check(o, lse, *reference(q_lat, q_pe, kv8.float(), bt, sl, (128 + 64) ** -0.5, k_scale=ks), tol=2e-5)


# ---------------------------------------------------------------- lowering for Hopper, without a GPU

_LOWER_SM90 = r"""
import sys
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from kernels.mla.triton_decode import _mla_decode_combine, _mla_decode_split, default_config
sys.path.insert(0, "scripts")
from inspect_sm90 import ptxas_info, wgmma_serialized

target = GPUTarget("cuda", 90, 32)
div16 = ("s_ql_n", "s_ql_h", "s_qp_n", "s_qp_h", "s_kv_blk", "s_kv_row", "s_acc_n", "s_acc_h", "s_acc_s",
         "s_o_n", "s_o_h", "s_lse_n", "num_heads")   # what the JIT sees for Kimi's shapes


def compile_split(ptrs, const, nw, ns):
    fn = _mla_decode_split
    sig = {a: ptrs.get(a, "constexpr" if a in const else "fp32" if a == "qk_scale_log2" else "i32")
           for a in fn.arg_names}
    attrs = {(fn.arg_names.index(a),): [["tt.divisibility", 16]] for a in list(ptrs) + list(div16)}
    return triton.compile(ASTSource(fn, sig, constexprs=const, attrs=attrs), target=target,
                          options=dict(num_warps=nw, num_stages=ns))


for kv, direct, page_loop, prefetch, tar, bn, nw, tma, ns in [
        ("bf16", False, True, False, False, 32, 4, False, 3), ("bf16", True, False, False, False, 32, 4, False, 3),
        ("bf16", False, True, False, False, 64, 8, False, 2), ("bf16", True, False, True, False, 32, 8, False, 2),
        ("fp8e4nv", False, True, True, False, 64, 8, False, 3), ("fp8e4nv", True, False, True, False, 32, 8, False, 2),
        ("bf16", False, True, False, True, 64, 8, False, 2), ("fp8e4nv", False, True, False, False, 64, 8, True, 2)]:
    f16 = kv != "bf16"
    ptrs = dict(q_lat_ptr="*bf16", q_pe_ptr="*bf16", kv_ptr="*" + kv, bt_ptr="*i32", seq_lens_ptr="*i32",
                k_scale_ptr="*fp32", acc_ptr="*fp32", ml_ptr="*fp32", o_ptr="*bf16", lse_ptr="*fp32")
    descs = dict(desc_c=f"tensordesc<{kv}[1, {bn}, 512]>", desc_r=f"tensordesc<{kv}[1, {bn}, 64]>") if tma else {}
    const = dict(L=512, R=64, BLOCK_L=512, BLOCK_R=64, BLOCK_SIZE=1888, BLOCK_H=32, BLOCK_N=bn,
                 IS_FP8=kv != "bf16", DIRECT=direct, DOT_PRECISION="tf32", PAGE_LOOP=page_loop,
                 PREFETCH=prefetch, TOKENS_AS_ROWS=tar, F16_MATH=f16, TMA=tma,
                 **({} if tma else dict(desc_c=None, desc_r=None)))
    ptrs.update(descs)
    k = compile_split(ptrs, const, nw, ns)
    assert k.asm["cubin"], kv
    assert not wgmma_serialized(ptxas_info(k.asm["ptx"])), (kv, direct, bn, nw, tma)
    assert k.metadata.shared <= 227 * 1024, (kv, tar, k.metadata.shared)     # an H100 block's shared memory
    if (kv, bn, nw) == ("bf16", 32, 4):       # the 16-bit default: two programs an SM by shared memory
        assert k.metadata.shared <= 113 * 1024, (direct, page_loop, k.metadata.shared)
cfg = default_config(32, 512, cache_bytes=4)      # fp32 caches (an fp32 model): every loop of the default launch
for direct, page_loop in ((False, True), (True, True), (False, False)):
    ptrs = dict(q_lat_ptr="*fp32", q_pe_ptr="*fp32", kv_ptr="*fp32", bt_ptr="*i32", seq_lens_ptr="*i32",
                k_scale_ptr="*fp32", acc_ptr="*fp32", ml_ptr="*fp32", o_ptr="*fp32", lse_ptr="*fp32")
    const = dict(L=512, R=64, BLOCK_L=512, BLOCK_R=64, BLOCK_SIZE=976, BLOCK_H=cfg["block_h"],
                 BLOCK_N=cfg["block_n"], IS_FP8=False, DIRECT=direct, DOT_PRECISION="ieee", PAGE_LOOP=page_loop,
                 PREFETCH=not page_loop and cfg["flat_prefetch"], TOKENS_AS_ROWS=False, F16_MATH=False, TMA=False,
                 desc_c=None, desc_r=None)
    k = compile_split(ptrs, const, cfg["num_warps"], cfg["num_stages"])
    assert k.metadata.shared <= 163 * 1024, (direct, page_loop, k.metadata.shared)   # an A100 block's, too
sig = {a: "*fp32" if a in ("acc_ptr", "ml_ptr", "lse_ptr") else "*bf16" if a == "o_ptr" else
       "constexpr" if a in ("L", "BLOCK_L", "BLOCK_S") else "i32" for a in _mla_decode_combine.arg_names}
for bl, bs in ((512, 16), (32, 256)):       # the merge's widest rows and its most splits
    k = triton.compile(ASTSource(_mla_decode_combine, sig, constexprs=dict(L=512, BLOCK_L=bl, BLOCK_S=bs)),
                       target=target, options=dict(num_warps=4))
    assert k.asm["cubin"]
print("LOWERED")
"""


def test_lowers_for_sm90(tmp_path):
    """Both kernels compile to sm_90 cubins (Triton's bundled ptxas; no GPU needed), bf16 and fp8 caches, the split
    kernel's products without wgmma that ptxas serialises."""
    from tests.kernels.lowering import run_lowering_script
    assert "LOWERED" in run_lowering_script(_LOWER_SM90, tmp_path, timeout=600)


def test_default_launch_by_cache_dtype():
    """16-bit caches: 32-token tiles on 4 warps, two programs an SM, so twice the splits fill the waves; fp8 caches:
    64-token tiles on 8 warps, one program an SM (H200, 2026-12-01: benchmarks/RESULTS.md); fp32 caches: one
    32-token tile buffer (``test_lowers_for_sm90`` checks its shared memory)."""
    from kernels.mla.triton_decode import default_config

    bf, f8, f32 = default_config(32, 512), default_config(32, 512, 1), default_config(32, 512, 4)
    assert (bf["block_h"], bf["block_n"], bf["num_warps"], bf["programs_per_sm"]) == (32, 32, 4, 2)
    assert (f8["block_h"], f8["block_n"], f8["num_warps"], f8["programs_per_sm"]) == (32, 64, 8, 1)
    assert (f32["block_n"], f32["num_stages"], f32["programs_per_sm"]) == (32, 2, 1)    # fits in shared memory
    assert default_config(64, 512)["programs_per_sm"] == 1     # 64 heads a program: one an SM
    assert choose_num_splits(32, 1, 131072, 2 * 132) == 8          # 256 programs: one wave of two an SM
    assert choose_num_splits(128, 1, 131072, 2 * 132) == 2


def test_split_count_follows_the_launch(monkeypatch):
    """``mla_decode`` sizes its split count for two programs an SM only at the 16-bit default launch: a partial
    override (64-token tiles) or an fp32 cache counts one."""
    import kernels.mla.triton_decode as td

    seen = []
    monkeypatch.setattr(td, "choose_num_splits", lambda b, g, ctx, sms: seen.append(sms) or 1)
    gen = torch.Generator().manual_seed(5)
    q_lat, q_pe = torch.randn(1, 2, 512, generator=gen), torch.randn(1, 2, 64, generator=gen)
    cache = torch.randn(2, 32, 576, generator=gen)
    table, lens = torch.tensor([[1]], dtype=torch.int32), torch.tensor([20], dtype=torch.int32)
    sms = td.num_sms(torch.device(DEV))
    for kv, kw, want in ((cache.half(), {}, 2 * sms), (cache.half(), dict(block_n=64), sms), (cache, {}, sms)):
        td.mla_decode(*(x.to(DEV) for x in (q_lat, q_pe, kv, table, lens)), 0.1, max_seq_len=20, **kw)
        assert seen[-1] == want, (kv.dtype, kw, seen)
