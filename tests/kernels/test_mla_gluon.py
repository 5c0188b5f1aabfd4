"""The Hopper MLA decode in Gluon (kernels/mla/wgmma_decode.py): against fp64 on an sm_90 GPU, compiled for sm_90
on any machine (Triton's bundled ptxas), and refused with a clear error where it cannot run.

Triton's interpreter does not run Gluon kernels, so on a CPU only the lowering and the refusal are checked.
The cases are ``test_mla_triton``'s: shuffled pages, every row the kernel must not read set to NaN (the rows
past a sequence's end inside its last page included: the kernel must zero them before its value product).
"""

import os

import pytest
import torch

from tests.kernels.test_mla_triton import DEV, check, make_case, reference, run

HOPPER = (os.environ.get("TRITON_INTERPRET") != "1" and torch.cuda.is_available()
          and torch.cuda.get_device_capability()[0] == 9)
needs_hopper = pytest.mark.skipif(not HOPPER, reason="the Gluon kernel runs on sm_90 GPUs only")
SCALE = (128 + 64) ** -0.5


def _bf16(case, dtype=torch.bfloat16):
    q_lat, q_pe, kv, bt, sl = case
    return q_lat.to(dtype), q_pe.to(dtype), kv.to(dtype), bt, sl


def _close(o, lse, ref_o, ref_lse, tol_o):
    """16-bit outputs: the relative L2 error of o within tol_o for every (sequence, head) on its own; lse (fp32)
    within 1e-4; no NaN anywhere."""
    assert not torch.isnan(o).any() and not torch.isnan(lse).any()
    o, lse = o.cpu().double(), lse.cpu().double()
    err = ((o - ref_o).norm(dim=-1) / ref_o.norm(dim=-1).clamp(min=1e-30)).max().item()
    assert err < tol_o, err
    assert (lse - ref_lse).abs().max().item() < 1e-4


def _splits_taken(bt, bs, H, num_splits):
    """The split count ``mla_decode`` launches the Gluon kernel with (its own rule when None)."""
    from kernels.device import num_sms
    from kernels.mla.triton_decode import wgmma_num_splits
    if num_splits is not None:
        return max(1, int(num_splits))
    return wgmma_num_splits(bt.shape[0], H, bt.shape[1] * bs, bs, num_sms(torch.device(DEV)))


def _rows_and_scores(q_lat, q_pe, kv8, ks, bt, n, t, scale):
    """Sequence n's t dequantised cache rows [t, L + R] (fp64) and its scores in log2 units [H, t]."""
    L = q_lat.shape[-1]
    bs = kv8.shape[1]
    rows = torch.cat([kv8[int(bt[n, j])].double() * ks for j in range(-(-t // bs))])[:t]
    s = (q_lat[n].double() @ rows[:, :L].T + q_pe[n].double() @ rows[:, L:].T) * scale * 1.4426950408889634
    return rows, s


# the fp8 tensor cores' sums (score product with e4m3 queries, groups of FP8_QUERY_GROUP columns): each score within
# this fraction of the sum of its terms' magnitudes (they keep about 13 bits of a group's running sum; measured on the
# H200, one-position sequences: at most 2^-14.3 of the whole row's, benchmarks/RESULTS.md)
FP8_SCORE_REL = 2.0 ** -12


def _score_allowance(q_lat, q_pe, rows, scale):
    """Per head and position [H, t], log2 units: how far fp8 wgmma's sums may put a score of e4m3 queries (already
    rounded) from its exact value, FP8_SCORE_REL of the sum of its terms' magnitudes."""
    L = q_lat.shape[-1]
    mag = q_lat.double().abs() @ rows[:, :L].abs().T + q_pe.double().abs() @ rows[:, L:].abs().T
    return FP8_SCORE_REL * mag * scale * 1.4426950408889634


def _close_e4m3_p(o, lse, q_lat, q_pe, kv8, ks, bt, sl, scale, num_splits, fp8_queries=True):
    """The register fp8 kernel's contract: its value product takes p in e4m3, so o is checked against the error
    that rounding can make, and lse (from exact sums) within 1e-4 of fp64 as everywhere. With fp8_queries the
    reference takes the queries as the kernel rounds them (``round_queries_e4m3``) and each score may be off by its
    fp8 sums' allowance d_t (``_score_allowance``): lse then within 1e-4 + ln2 max_t d_t, and o as below with each
    row's relative error r_t widened to (1 + r_t) 2^d_t - 1 plus the sums' own shift of the weights.

    Each split (a run of the kernel's 64-position tiles) normalises its o by the sum of its rounded p, and the
    merge weighs the splits by their exact sums W_s. With each p_t rounded to p_t (1 + e_t), |e_t| <= r_t, split
    s's o is off its exact mean o_s by sum_{t in s} w_t e_t (v_t - o_s) / W_s / (1 + eps_s), so, summed over the
    splits with their weights: |o - o_ref| <= sum_s sum_{t in s} w_t r_t |v_t - o_s| / (1 - eps_s), eps_s = sum_{t in
    s} w_t r_t / W_s, element by element (a split with eps_s >= 1/2, whose p may all round to zero, contributes
    W_s (max_t |v_t - o_s| + |o_s|) instead: its o is 0 or a mean of its rows). r_t is 2^-4 in e4m3's normal
    range; below it the rounding step is absolute, 2^-10 of the kernel's p units (p = FP8_P_SCALE exp2(s - m), the
    running max m of the split's program at most the split's max, so p_t is at least that at the split's max), and a
    row rounded to zero has r_t = 1. Beside it: 2^-8 |o_ref| for the 16-bit output and 1e-3 of the head's largest
    |o_ref| for the rest (fp32 scores and sums). With the sums' allowance, the per-split terms are taken at their
    worst (times 2^(2 max_t d_t)), and the sums' shift of the splits' weights W_s by factors a_s within 2^(+-d_s)
    (d_s the split's largest allowance) moves o by sum_s W_s (a_s - 1) (o_s - o_ref) / sum_s W_s a_s, at most
    2^max_t d_t sum_s W_s (2^d_s - 1) |o_s - o_ref|.
    That bound is near zero where a few rows dominate (normalising o by the exact sum instead breaks it there), but
    loose where the weight is spread over many rows, so each head's o is also held to four standard deviations of
    that error with the e_t as independent roundings (variance r_t^2 / 3, 1 for a row rounded to zero): ||o -
    o_ref|| <= 4 sqrt(sum_t w_t^2 var_t ||v_t - o_s||^2) / (1 - max eps_s) plus the same two terms in L2 (and the
    score sums' terms, which are not random, at their worst)."""
    from kernels.mla.fp8 import round_queries_e4m3
    from kernels.mla.wgmma_decode import BLOCK_N, FP8_P_SCALE
    assert not torch.isnan(o).any() and not torch.isnan(lse).any()
    if fp8_queries:
        q_lat, q_pe = round_queries_e4m3(q_lat, q_pe)
    ref_o, ref_lse = reference(q_lat.float(), q_pe.float(), kv8.float(), bt, sl, scale, k_scale=ks)
    H, L = q_lat.shape[1], q_lat.shape[-1]
    bs = kv8.shape[1]
    splits = _splits_taken(bt, bs, H, num_splits)
    p_scale = float(FP8_P_SCALE.value)
    lse_err = (lse.cpu().double() - ref_lse).abs()
    for n, t in enumerate(sl.tolist()):
        if t == 0:
            continue
        rows, s = _rows_and_scores(q_lat, q_pe, kv8, ks, bt, n, t, scale)
        d = _score_allowance(q_lat[n], q_pe[n], rows, scale) if fp8_queries else torch.zeros_like(s)
        d_max = d.amax(dim=1, keepdim=True)                              # [H, 1]
        assert (lse_err[n].to(d.device) <= 1e-4 + 0.6931471805599453 * d_max[:, 0]).all(), ("lse", n)
        v = rows[:, :L]
        pos = torch.arange(t, device=v.device)                           # each position's split, as the kernel cuts
        tile = (pos // bs) * -(-bs // BLOCK_N) + (pos % bs) // BLOCK_N
        tiles = int(tile[-1]) + 1
        split = tile // -(-tiles // splits)
        w = torch.exp2(s - s.max(dim=1, keepdim=True).values)
        w = w / w.sum(dim=1, keepdim=True)                               # the exact weights, [H, t]
        ref = ref_o[n].to(v.device)
        slack = torch.exp2(2 * d_max)                                    # the weights' normalisation, at its worst
        moved = torch.zeros(H, L, dtype=torch.float64, device=v.device)  # the sums' shift of the splits' weights
        var_sum = torch.zeros(H, dtype=torch.float64, device=v.device)
        eps_max = torch.zeros(H, dtype=torch.float64, device=v.device)
        dev_sum = torch.zeros(H, L, dtype=torch.float64, device=v.device)     # the rounding and sums, per split
        dev_sys = torch.zeros(H, L, dtype=torch.float64, device=v.device)     # the sums' part of it alone
        for sp in torch.unique(split).tolist():
            sel = split == sp
            ss, dsel = s[:, sel], d[:, sel]
            # the split's program keeps a running max at most the split's max, so its p_t (FP8_P_SCALE exp2(s_t -
            # m)) is at least FP8_P_SCALE times exp2(s_t - that max), less the sums' allowances
            p_low = torch.exp2(ss - ss.max(dim=1, keepdim=True).values - dsel - d_max) * p_scale
            r = torch.clamp(torch.maximum(torch.full_like(ss, 2.0 ** -4), 2.0 ** -10 / p_low), max=1.0)
            var = torch.where(r < 1.0, r * r / 3, torch.ones_like(r))
            rs = torch.where(r < 1.0, (1 + r) * torch.exp2(dsel) - 1, r)  # rounding and sums together
            ds = rs - r
            ws, vs = w[:, sel], v[sel]
            W = ws.sum(dim=1, keepdim=True)
            o_s = ws @ vs / W                                             # the split's exact mean, [H, L]
            eps = (ws * rs).sum(dim=1, keepdim=True) / W
            moved += W * (torch.exp2(dsel.amax(dim=1, keepdim=True)) - 1) * (o_s - ref).abs()
            for h in range(H):
                dev_s = (vs - o_s[h]).abs()                               # [positions of s, L]
                if eps[h, 0] >= 0.5:
                    # (nearly) all of the split's p may round to zero: its o is then 0 or some mean of its rows
                    whole = W[h, 0] * (dev_s.amax(dim=0) + o_s[h].abs())
                    dev_sum[h] += whole
                    dev_sys[h] += whole
                    continue
                eps_max[h] = torch.maximum(eps_max[h], eps[h, 0])
                dev_sum[h] += (ws[h] * rs[h]) @ dev_s / (1 - eps[h, 0])
                dev_sys[h] += (ws[h] * ds[h]) @ dev_s / (1 - eps[h, 0])
                var_sum[h] += (ws[h] ** 2 * var[h]) @ (dev_s ** 2).sum(dim=1)
        moved *= torch.exp2(d_max)
        bound = 2.0 ** -8 * ref.abs() + 1e-3 * ref.abs().amax(dim=1, keepdim=True) + moved + slack * dev_sum
        err = (o[n].double() - ref).abs()
        assert (err <= bound).all(), ("element", n, (err / bound).amax(dim=1).max().item())
        l2 = (slack[:, 0] * 4 * var_sum.sqrt() / (1 - eps_max) + 2.0 ** -8 * ref.norm(dim=1)
              + 1e-3 * ref.abs().amax(dim=1) * L ** 0.5 + moved.norm(dim=1) + slack[:, 0] * dev_sys.norm(dim=1))
        assert (err.norm(dim=1) <= l2).all(), ("L2", n, (err.norm(dim=1) / l2).max().item())


@needs_hopper
@pytest.mark.parametrize("num_splits", [1, 3, None])
@pytest.mark.parametrize("bs", [64, 128, 1888])
def test_pages_and_tails(bs, num_splits):
    """Sequences ending on, just before and just after tile and page boundaries; pages of 1888 rows (the
    plugin's: 29.5 tiles, so a page's last tile reads past the page) and of one and two tiles."""
    lens = [1, 63, 64, 65, bs - 1, bs, bs + 1, 2 * bs + 70]
    case = _bf16(make_case(lens, bs=bs, H=32, L=512, R=64, seed=31))
    o, lse = run(*case, SCALE, num_splits=num_splits, wgmma=True)
    _close(o, lse, *reference(*case, SCALE), tol_o=1e-2)              # bf16 output rounding: ~2e-3


@needs_hopper
@pytest.mark.parametrize("H", [16, 20, 64])
def test_head_counts(H):
    """16 heads (Kimi at TP = 2), 20 (padded to 32, the rest masked), 64 (two programs of 32)."""
    case = _bf16(make_case([300, 1000], bs=128, H=H, L=512, R=64, seed=32))
    o, lse = run(*case, SCALE, num_splits=2, wgmma=True)
    _close(o, lse, *reference(*case, SCALE), tol_o=1e-2)


@needs_hopper
def test_strided_queries_padded_rows_int64_tables():
    """What vLLM hands over: queries as a transposed view (the absorbing bmm's output), cache rows padded past
    L + R; and int64 block tables and lengths, which the kernel turns into 32-bit TMA coordinates."""
    q_lat, q_pe, kv, bt, sl = _bf16(make_case([1, 64, 65, 1000, 1889], bs=1888, H=32, L=512, R=64, seed=37))
    padded = torch.full(kv.shape[:2] + (512 + 64 + 64,), float("nan"), dtype=kv.dtype, device=kv.device)
    padded[..., :576] = kv
    kv = padded[..., :576]                                            # rows 1,280 bytes apart, NaN between
    assert kv.stride(1) == 512 + 64 + 64
    q_t = q_lat.transpose(0, 1).contiguous().transpose(0, 1)          # [N, H, L] with strides (L, N * L, 1)
    ref = reference(q_t, q_pe, kv, bt, sl, SCALE)
    for tables in ((bt, sl), (bt.long(), sl.long())):
        o, lse = run(q_t, q_pe, kv, *tables, SCALE, num_splits=3, wgmma=True)
        _close(o, lse, *ref, tol_o=1e-2)


@needs_hopper
def test_fp16_and_narrow_latent():
    case = _bf16(make_case([70, 500], bs=64, H=8, L=256, R=64, seed=33), torch.float16)
    o, lse = run(*case, 0.1, num_splits=2, wgmma=True)
    assert o.dtype == torch.float16
    _close(o, lse, *reference(*case, 0.1), tol_o=1e-2)


def _force_fp8_kernel(monkeypatch, kernel):
    """Make every call take the named fp8 kernel ("converter" or "registers", see ``wgmma_decode.fp8_kernel``;
    "registers_q16" is the register kernel with 16-bit queries). Returns the fp8_queries argument to call with."""
    import kernels.mla.wgmma_decode as wd
    monkeypatch.setattr(wd, "fp8_kernel", lambda L: kernel.split("_")[0])
    return kernel != "registers_q16"


def _check_fp8(kernel, o, lse, qb, qpb, kv8, ks, bt, sl, num_splits):
    """An fp8 kernel's output against fp64 on the dequantised cache, as its contract has it."""
    if kernel.startswith("registers"):
        _close_e4m3_p(o, lse, qb, qpb, kv8, ks, bt, sl, SCALE, num_splits, fp8_queries=kernel == "registers")
    else:
        _close(o, lse, *reference(qb.float(), qpb.float(), kv8.float(), bt, sl, SCALE, k_scale=ks), tol_o=1e-2)


def test_fp8_kernel_choice():
    """The register-operand kernel at the model's latent width 512, whatever the batch and context, else the
    converter kernel."""
    import kernels.mla.wgmma_decode as wd
    assert wd.fp8_kernel(512) == "registers"
    assert wd.fp8_kernel(256) == wd.fp8_kernel(128) == wd.fp8_kernel(64) == "converter"


@needs_hopper
@pytest.mark.parametrize("kernel", ["converter", "registers", "registers_q16"])
@pytest.mark.parametrize("num_splits", [1, 4])
def test_fp8_cache(num_splits, kernel, monkeypatch):
    """An fp8 cache (its uint8 view, as vLLM holds it) read by bf16 queries: fp64 attention over the dequantised
    cache, NaN bytes outside the live rows; both fp8 kernels, the register one with e4m3 and with bf16 queries."""
    fp8_queries = _force_fp8_kernel(monkeypatch, kernel)
    ks = 0.03
    q_lat, q_pe, kv, bt, sl = make_case([1, 64, 65, 1887, 1889, 2000], bs=1888, H=32, L=512, R=64, seed=34)
    kv8 = (kv / ks).to(torch.float8_e4m3fn)
    qb, qpb = q_lat.bfloat16(), q_pe.bfloat16()
    o, lse = run(qb, qpb, kv8.view(torch.uint8), bt, sl, SCALE, num_splits=num_splits, k_scale=ks, wgmma=True,
                 fp8_queries=fp8_queries)
    _check_fp8(kernel, o, lse, qb, qpb, kv8, ks, bt, sl, num_splits)


@needs_hopper
@pytest.mark.parametrize("kernel", ["converter", "registers"])
@pytest.mark.parametrize("bs,H,dtype", [(3776, 32, torch.bfloat16), (64, 16, torch.bfloat16), (128, 20, torch.float16)])
def test_fp8_pages_heads_tails(bs, H, dtype, kernel, monkeypatch):
    """Both fp8 kernels on the plugin's fp8 pages (3,776 rows: 59 whole tiles) and on pages of one and two tiles,
    16 heads (TP = 2) and 20 (padded to 32), fp16 queries; sequences ending around tile and page boundaries (rows
    past the end zeroed before the value product), the split count the default picks, and one sequence longer than
    one split's share."""
    _force_fp8_kernel(monkeypatch, kernel)
    ks = 0.05
    lens = [1, 63, 64, 65, bs - 1, bs, bs + 1, 2 * bs + 70]
    q_lat, q_pe, kv, bt, sl = make_case(lens, bs=bs, H=H, L=512, R=64, seed=37)
    kv8 = (kv / ks).to(torch.float8_e4m3fn)
    qb, qpb = q_lat.to(dtype), q_pe.to(dtype)
    o, lse = run(qb, qpb, kv8.view(torch.uint8), bt, sl, SCALE, k_scale=ks, wgmma=True)
    _check_fp8(kernel, o, lse, qb, qpb, kv8, ks, bt, sl, None)


@needs_hopper
@pytest.mark.parametrize("kernel", ["converter", "registers", "registers_q16"])
@pytest.mark.parametrize("num_splits", [1, None])
def test_fp8_running_max_moves(num_splits, kernel, monkeypatch):
    """Scores that grow along each sequence (keys scaled up to 7x towards its end; the data checked to grow each
    head's max by more than twice FP8_LAZY_RESCALE past its first tile), so the register kernel's running max moves
    after the first tile (o^T rescaled then) and stays put on other tiles (o^T left as it is, p above 1): both fp8
    kernels against fp64 on the dequantised cache."""
    import kernels.mla.wgmma_decode as wd
    fp8_queries = _force_fp8_kernel(monkeypatch, kernel)
    ks = 0.1
    lens = [1500, 6000]
    bs = 1888
    q_lat, q_pe, kv, bt, sl = make_case(lens, bs=bs, H=32, L=512, R=64, seed=38)
    for n, t in enumerate(lens):
        for j in range(-(-t // bs)):
            pos = torch.arange(j * bs, (j + 1) * bs, device=kv.device).clamp(max=t)
            kv[int(bt[n, j])] *= (1 + 6 * pos / t)[:, None]
    kv8 = (kv / ks).to(torch.float8_e4m3fn)
    qb, qpb = q_lat.bfloat16(), q_pe.bfloat16()
    for n, t in enumerate(lens):        # the data does what the test is for: the max grows well past the threshold
        _, s = _rows_and_scores(qb, qpb, kv8, ks, bt, n, t, SCALE)
        first = s[:, :64].max(dim=1).values
        assert (s.max(dim=1).values - first).min().item() > 2 * wd.FP8_LAZY_RESCALE
    o, lse = run(qb, qpb, kv8.view(torch.uint8), bt, sl, SCALE, num_splits=num_splits, k_scale=ks, wgmma=True,
                 fp8_queries=fp8_queries)
    _check_fp8(kernel, o, lse, qb, qpb, kv8, ks, bt, sl, num_splits)


@needs_hopper
def test_default_takes_it_and_matches_triton():
    """The default picks this kernel for a bf16 cache with bf16 queries on Hopper; the Triton kernel
    (wgmma=False) gives the same attention."""
    import kernels.mla.wgmma_decode as wd
    case = _bf16(make_case([900, 2100], bs=1888, H=32, L=512, R=64, seed=35))
    calls = []
    orig = wd.launch
    wd.launch = lambda *a, **k: calls.append(1) or orig(*a, **k)
    try:
        o, _ = run(*case, SCALE)
    finally:
        wd.launch = orig
    assert calls
    o_t, _ = run(*case, SCALE, wgmma=False)
    assert ((o.double() - o_t.double()).norm() / o_t.double().norm()).item() < 5e-3


def test_refused_where_it_cannot_run():
    """wgmma=True where the kernel cannot run (no sm_90 GPU, fp32 cache, 16-token pages) is a ValueError naming
    what it needs, not a crash in a kernel; the default quietly takes the Triton kernel there."""
    dev = "cuda" if HOPPER else "cpu"
    q_lat, q_pe, kv, bt, sl = (x.to(dev) for x in make_case([20], bs=16, H=4, L=64, R=16, seed=36))
    if not HOPPER and os.environ.get("TRITON_INTERPRET") != "1":
        pytest.skip("the Triton kernel needs a GPU or the interpreter for the default half of this test")
    from kernels.mla.triton_decode import mla_decode
    with pytest.raises(ValueError, match="sm_90"):
        mla_decode(q_lat, q_pe, kv, bt, sl, 0.1, wgmma=True)
    o, _ = mla_decode(q_lat, q_pe, kv, bt, sl, 0.1)
    check(o, _, *reference(q_lat, q_pe, kv, bt, sl, 0.1), tol=2e-5)


def test_descriptors_do_not_keep_a_freed_cache_alive():
    """vLLM profiles with caches it then frees; a descriptor holds its tensor, so none may outlive the caller's."""
    import gc
    import weakref

    from kernels.mla import wgmma_decode as W

    kv = torch.zeros(2, 64, 576, dtype=torch.bfloat16)
    alive = weakref.ref(kv)
    dc, dr = W.cache_descriptors(kv, 512)
    assert dc.base is kv and dc.block_shape == [1, W.BLOCK_N, 512] and dr.block_shape == [1, W.BLOCK_N, 64]
    del kv, dc, dr
    gc.collect()
    assert alive() is None


def test_split_rule_for_the_wgmma_kernel():
    """One program an SM, splits as short as one tile, the merge charged one position a split: more splits than the
    Triton kernel's rule for short single sequences, one full wave from 32K, the same from batch 32 on."""
    from kernels.mla import wgmma_decode as W
    from kernels.mla.triton_decode import choose_num_splits, wgmma_num_splits

    def rule(b, ctx):
        return choose_num_splits(b, 1, ctx, 132, W.MIN_TOKENS_PER_SPLIT, W.MERGE_TOKENS_PER_SPLIT)
    assert 32 <= rule(1, 4096) <= 64                    # the Triton rule's floor of 256 positions a split gives 16
    assert rule(1, 32768) == rule(1, 131072) == 132 > choose_num_splits(1, 1, 32768, 132)     # one wave
    assert rule(32, 131072) == 4 and rule(128, 131072) == 1 and rule(1, 64) == 1
    # a split is whole tiles: 131,072 positions on 1,888-row pages are 69 pages of 30 tiles and 13 more; 132 splits
    # of 16 tiles leave one empty, so the launch takes 131
    assert W.tile_count(131072, 1888) == 2083 and W.tile_count(1888, 1888) == 30 and W.tile_count(0, 1888) == 0
    assert W.whole_tile_splits(132, 2083) == 131 and W.whole_tile_splits(4, 2083) == 4
    assert W.whole_tile_splits(7, W.tile_count(500, 1888)) == 4 and W.whole_tile_splits(5, 0) == 1
    assert wgmma_num_splits(1, 32, 131072, 1888, 132) == 131      # what mla_decode launches: the two rules in turn


@needs_hopper
@pytest.mark.parametrize("fp8_queries", [True, False])
@pytest.mark.parametrize("q_mul", [1, 4])
@pytest.mark.parametrize("num_splits", [1, None])
def test_fp8_long_sequence(num_splits, q_mul, fp8_queries):
    """The register kernel over one 20,000-position sequence, queries at 1x (weight spread over many positions,
    much of it far below the max) and 4x (a few positions take most of each head's weight), in one split and in
    the default's, e4m3 and bf16 queries: o within what rounding p to e4m3 (and the queries' fp8 sums) can do
    (``_close_e4m3_p``), lse exact (or within the sums' allowance)."""
    ks = 0.05
    q_lat, q_pe, kv, bt, sl = make_case([20000], bs=1888, H=32, L=512, R=64, seed=39)
    kv8 = (kv / ks).to(torch.float8_e4m3fn)
    qb, qpb = (q_lat * q_mul).bfloat16(), (q_pe * q_mul).bfloat16()
    o, lse = run(qb, qpb, kv8.view(torch.uint8), bt, sl, SCALE, num_splits=num_splits, k_scale=ks, wgmma=True,
                 fp8_queries=fp8_queries)
    _close_e4m3_p(o, lse, qb, qpb, kv8, ks, bt, sl, SCALE, num_splits, fp8_queries)


@needs_hopper
@pytest.mark.parametrize("q_mul", [1, 8])
def test_fp8_query_scores(q_mul):
    """With e4m3 queries, a one-position sequence's lse is its score (times ln 2): every head's within its fp8
    sums' allowance (``_score_allowance``) of fp64 on the queries rounded as ``round_queries_e4m3`` rounds them,
    which is what the kernel takes (fp64 on the bf16 queries is further off than that allowance for some score, so
    a kernel that did not round them, or rounded them differently, fails here)."""
    from kernels.mla.fp8 import round_queries_e4m3
    ks = 0.05
    lens = [1] * 48
    q_lat, q_pe, kv, bt, sl = make_case(lens, bs=64, H=32, L=512, R=64, seed=41)
    kv8 = (kv / ks).to(torch.float8_e4m3fn)
    q_lat[:, 5] *= 1e-3                                       # heads of other sizes: each has its own scale
    q_pe[:, 9] *= 40
    qb, qpb = (q_lat * q_mul).bfloat16(), (q_pe * q_mul).bfloat16()
    _, lse = run(qb, qpb, kv8.view(torch.uint8), bt, sl, SCALE, num_splits=1, k_scale=ks, wgmma=True)
    assert not torch.isnan(lse).any()
    qr, qpr = round_queries_e4m3(qb, qpb)
    got = lse.cpu().double() / 0.6931471805599453                   # log2 units, as the scores
    worst_rounded = worst_given = 0.0
    for n in range(len(lens)):
        rows, s = _rows_and_scores(qr, qpr, kv8, ks, bt, n, 1, SCALE)
        d = _score_allowance(qr[n], qpr[n], rows, SCALE)[:, 0].cpu()
        worst_rounded = max(worst_rounded, ((got[n] - s[:, 0].cpu()).abs() / d).max().item())
        _, s_given = _rows_and_scores(qb, qpb, kv8, ks, bt, n, 1, SCALE)
        worst_given = max(worst_given, ((got[n] - s_given[:, 0].cpu()).abs() / d).max().item())
    assert worst_rounded <= 1.0, worst_rounded
    assert worst_given > 1.0, worst_given


_LOWER = r"""
import re, sys, torch, triton
from triton.backends.compiler import GPUTarget
from triton.experimental.gluon._runtime import GluonASTSource
from triton.runtime.jit import mangle_type
from kernels.mla import wgmma_decode as W
sys.path.insert(0, "scripts")
from inspect_sm90 import ptxas_info, wgmma_serialized

f8 = torch.float8_e4m3fn
# the last field: the register kernel's queries in e4m3
for kv_dt, q, bh, direct, bs, regs, q8 in [(torch.bfloat16, "*bf16", 32, False, 1888, False, False),
                                           (torch.bfloat16, "*bf16", 16, True, 64, False, False),
                                           (torch.float16, "*fp16", 32, True, 128, False, False),
                                           (f8, "*bf16", 32, False, 1888, False, False),
                                           (f8, "*bf16", 16, True, 64, False, False),
                                           (f8, "*bf16", 32, False, 3776, True, True),
                                           (f8, "*fp16", 16, True, 64, True, True),
                                           (f8, "*bf16", 32, True, 1888, True, False),
                                           (f8, "*fp16", 16, False, 64, True, False)]:
    kv = torch.zeros(2, bs, 576, dtype=kv_dt)
    dc, dr = W.cache_descriptors(kv, 512)
    fp8 = kv_dt == torch.float8_e4m3fn
    fn, setting = W.kernel_and_setting(fp8, regs, q8)
    ptrs = dict(q_lat_ptr=q, q_pe_ptr=q, bt_ptr="*i32", seq_lens_ptr="*i32", k_scale_ptr="*fp32", acc_ptr="*fp32",
                ml_ptr="*fp32", o_ptr=q, lse_ptr="*fp32", desc_c=mangle_type(dc), desc_r=mangle_type(dr))
    const = dict(L=512, R=64, BLOCK_SIZE=bs, BLOCK_H=bh, BLOCK_N=W.BLOCK_N, DIRECT=direct, num_warps=4, **setting)
    sig = {a: ptrs.get(a, "constexpr" if a in const else "fp32" if a == "qk_scale_log2" else "i32")
           for a in fn.arg_names}
    # what the JIT sees for Kimi's shapes: pointers and the integers it specialises divisible by 16
    free = {fn.arg_names[a] if isinstance(a, int) else a for a in fn.do_not_specialize}
    div16 = [a for a in fn.arg_names if sig[a] == "i32" and a not in free] + [a for a in ptrs if a[:4] != "desc"]
    attrs = {(fn.arg_names.index(a),): [["tt.divisibility", 16]] for a in div16}
    k = triton.compile(GluonASTSource(fn, sig, constexprs=const, attrs=attrs), target=GPUTarget("cuda", 90, 32),
                       options=dict(num_warps=4))
    ptx = k.asm["ptx"]
    assert k.asm["cubin"]
    assert k.metadata.shared <= 227 * 1024, (kv_dt, k.metadata.shared)      # an H100 block's shared memory
    # both products on wgmma (scores: 512/16 + 64/16 of k16, or 512/32 + 64/32 of fp8's k32 with e4m3 queries;
    # values: 512/64 x 64/16 of k16, or 512/64 x 64/32 of k32 in the register kernel), tiles by TMA
    assert len(re.findall(r"wgmma\.mma_async", ptx)) == (34 if q8 else 52 if regs else 68), kv_dt
    assert re.search(r"cp\.async\.bulk\.tensor", ptx), kv_dt
    assert not re.search(r"\bmma\.sync", ptx) and not re.search(r"ld\.local", ptx), kv_dt   # no spills
    assert not wgmma_serialized(ptxas_info(ptx)), (kv_dt, bh, direct, regs)     # wgmma in flight, not one by one
    if fp8:     # worker warps handing registers to the product warps, fp8 -> fp16 two at a time
        assert re.search(r"setmaxnreg\.dec", ptx) and re.search(r"cvt\.rn\.f16x2\.e4m3x2", ptx), kv_dt
    if regs:
        # the value product on fp8 wgmma, the tile's bytes as they are: 8 blocks of 64 latent columns x 2 k32 steps
        # (and with e4m3 queries the score product's 18 as well)
        e4m3 = len(re.findall(rf"wgmma\.mma_async\.sync\.aligned\.m64n{bh}k32\.f32\.e4m3\.e4m3", ptx))
        assert e4m3 == (34 if q8 else 16), (bh, q8)
        # conversions: the softmax's e4m3 p back to fp32 for its sum, 64 x heads / 2 / 128, and with 16-bit queries
        # every byte of a tile once for the score product, 576 x 64 / 2 / 128
        assert len(re.findall(r"cvt\.rn\.f16x2\.e4m3x2", ptx)) == (0 if q8 else 576 * 64) // 256 + bh // 4, q8
        if not q8:
            assert len(re.findall(r"ld\.shared\.v4\.b32", ptx)) >= 18, kv_dt      # 16 contiguous bytes a read
        # queries as 16-byte vectors: 576 x 2 bytes over 128 threads is 9 loads a thread at 16 heads and 18 at 32;
        # o^T (its rows relabelled into column order) as 4-value vectors, 512 x heads values over 128 threads: fp32
        # partials in 16-byte stores, 16-bit outputs in 8-byte ones (beside the lse's)
        assert len(re.findall(r"ld\.global\.v4\.b32", ptx)) == bh * 9 // 16, (bh, direct)
        if direct:
            assert len(re.findall(r"st\.global\.v2\.b32", ptx)) >= 512 * bh // 128 // 4, (bh, direct)
        else:
            assert len(re.findall(r"st\.global\.v4\.b32", ptx)) == 512 * bh // 128 // 4, (bh, direct)
print("LOWERED")
"""


def test_lowers_for_sm90(tmp_path):
    """The kernel compiles for sm_90 (bf16 / fp16 / fp8 caches, 16 and 32 heads, split and direct): every
    product on wgmma, tiles by TMA, no spills, no wgmma serialised by ptxas, shared memory within an H100 block's."""
    from tests.kernels.lowering import run_lowering_script
    assert "LOWERED" in run_lowering_script(_LOWER, tmp_path, timeout=600)
