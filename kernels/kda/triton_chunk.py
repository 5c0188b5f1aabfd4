"""Chunked KDA prefill in Triton: varlen sequences over paged state slots, gate and L2 norm fused.

Four launches for 16-token chunks, the default (``_config["chunk"]``; the diagonal kernel's two: see 1; plus a few
tiny device-side index ops; two more for one long sequence, whose walk then runs in segments, ``segment_count``; no
device-to-host sync, CUDA-graph safe; in overlap windows, the default for one long sequence
(``overlap_window_count``), the chunk and sequential kernels launch once a window, the sequential ones on a second
stream forked from and joined back to the current one); 64-token chunks, below, are an option
(``VLLM_KIMILINEAR_KDA_CHUNK=64`` in the plugin):

1. ``_chunk_diag_kernel``, per (16-token sub-block, head): the pairs inside a sub-block,
   ``sum_d k_r k_c 2^(G_r - G_c)`` and the same with q_r (c <= r). Default (``_config["diag_form"]``
   "reference"): through a reference m per key channel on tensor cores, [k_r 2^(G_r - m)] [k_c 2^(m - G_c)]^T,
   where every exponent of the block stays within +-124 (``diag_range``; 96 on the fp32 path) and every factor
   comes out finite (raw q, k are not yet normalised: ``_all_finite``; the first launch stops at a block's first key
   slice out of range, ``diag_early_out``). Then (``fallback_form`` "halves", the default over 16-token chunks; the
   64-token path keeps the walk) a second launch takes the other blocks by halves on tensor cores: the pairs
   inside each 8-row half through the half's own balanced reference (the same range, now for half the decay), the
   pairs across the halves through the row between them (both factors <= 1 for any gate); and a third launch the
   column walk for the blocks out of that range too (decays past ~2^-248 within 8 tokens: gates near raw -1e4).
   H200, 2026-11-30 (thirteenth session), anchors' gates: 1x32768 4.476 -> 3.930 ms, 64x512 4.131 -> 3.560, where
   about half the blocks had taken the walk; fla-init gates (no block out of range) within 0.02 ms. "halves" as
   the first launch (``diag_form``) is faster still with the anchors' gates (3.766 ms) and 0.2 ms slower with
   fla-init gates. The walk ("walk"; "product" carries the decays as a running product) takes one column at a time
   on raw q, k, last to first, with 2^(G_r - G_c) from a running fp32 sum of log2 decays <= 0, one exp2 per
   element.
   ``diag_ref``: the reference m, "balanced" (the default: halfway between the decays of the sub-block's first and
   last rows, so |E| is at most half its decay) or "row" (its middle row p, m = G_p).
2. ``_chunk16_kernel``, one program per (16-token chunk, head): Kimi's gate ``g = -exp(A_log) *
   softplus(g_raw + dt_bias)`` (log2 domain) with its prefix / suffix sums inside the chunk, the row norms of q and
   k, the 16x16 inverse of ``L = I + diag(beta) A`` and per chunk: W = L^-1 diag(beta) (2^G * k_n),
   U = L^-1 diag(beta) v, QG = scale * 2^G * q, KG = 2^(G_last - G) * k (raw q, k: their norms 1/|q|, 1/|k| are
   stored beside and applied in the next kernel), Aqk and 2^G_last. This is the split of MoonshotAI's FlashKDA
   (CUTLASS, 16-token chunks, a gate bounded below; it reports 1.7-2.2x over fla on an H20); here the pairs stay
   exact for Kimi-Linear's unbounded gate.
3. ``_chunk_inter_kernel``, one program per (sequence, head, block of value rows): walks the
   sequence's chunks in order with the state in registers (V-major, as vLLM stores it):
   ``v_new = U - W S^T``, ``o = QG S^T + Aqk v_new``, ``S = S * 2^G_last + v_new^T KG``; reads the
   initial state from and writes the final state into the sequence's slot (in place). Layouts of these products
   (``_config["inter_form"]``): "pairs" (the default over 16-token chunks: two chunks a step, the second one's
   v_new and outputs taken from the state before the first plus 16x16 corrections, see ``_pair_steps``; value
   rows first), "rows" (the default over 64-token chunks: value rows first, the state and v_new^T on the left),
   "cols" (token rows first) and "cols_kmajor" (the state held key-major, so that with 64-token chunks every
   product has 64 or 128 rows); bf16 operands for the state products ("inter_dot") and for
   Aqk v_new ("inter_av") are options. ``inter_segments`` ("pairs" only; by default 4 for one long sequence,
   ``segment_count``, else off) splits each sequence's walk into
   that many segments walked at once: a segment starts from zero a few chunks early once the bound on those chunks'
   state transfer (per token the slowest key channel's decay: every step is a contraction times its decays) falls
   below 2^-96, which gates that forget quickly (the anchors') allow within a few chunks; otherwise the segment
   before walks on through it. The (sequence, head) pairs that split take a launch of their own after every window.

64-token chunks: the diagonal kernel as in 1 for the chunk's four sub-blocks, then ``_chunk_intra_kernel``, one
program per (64-token chunk, head), in place of 2: the same outputs for 64 rows, with the pairs across sub-blocks
on tensor cores (below) and a 64x64 inverse (every exponent it needs is a sum of non-positive decays over a run of
rows, taken from fp32 prefix / suffix sums inside 16-row segments and the segments' totals, so a huge decay never
cancels against nearby rows); the sequential kernel then takes a quarter of the steps. Slower than 16-token chunks
at every batch shape measured on an H200 (2026-11-30, benchmarks/RESULTS.md).

Exactness with unbounded gates: every exponent evaluated is <= 0, or bounded by ``diag_range`` (the reference-row
pairs, whose factors on the reference's side are >= 1; blocks past the bound take the walk, which evaluates
2^(G_r - G_c) elementwise). Pairs in different sub-blocks are split at a reference
row p with c <= p < r, 2^(G_r - G_p) * 2^(G_p - G_c), both factors <= 1 (a binary hierarchy at
32- and 16-token granularity, one factor per row per level, products on tensor cores). The 64x64
unit lower-triangular inverse is block forward substitution by doubling: the inverses of the 2x2
diagonal blocks, then of the 4x4, ... 64x64 ones through [[A^-1, 0], [-B^-1 C A^-1, B^-1]].

Precision: bf16/fp16 inputs take the fast path (tf32 products in the parallel kernels, bf16 products with the
state in the sequential one, bf16 W/QG/KG, fp32 U/Aqk/state);
fp32 inputs take an all-fp32 path (IEEE products; slow, for tests and checks).
"""

import torch
import triton
import triton.language as tl

from kernels.device import num_sms

BT = 64          # the optional long chunk length (``_config["chunk"] = 64``)
SEG_FORGET = tl.constexpr(96.0)   # inter_segments: a warm-up from zero once the state transfer's bound is below 2^-96
LB_SCALE = tl.constexpr(256.0)    # the per-chunk bounds in fixed point (1/256 of a log2 unit: exact sums in any order)
LB_FLOOR = tl.constexpr(-128.0)   # ... clamped from below (any chunk past -SEG_FORGET alone is enough; no overflow)
BC = 16          # sub-block length, and the default chunk length


@triton.jit
def _softplus(x):
    """softplus with torch's threshold 20 (x itself above it)."""
    return tl.where(x > 20.0, x, tl.log(1.0 + tl.exp(x)))


@triton.jit
def _pick(T, seg, j):
    """Row j of a [segments, BK] tile, as [BK]."""
    return tl.sum(tl.where(seg == j, T, 0.0), axis=0)


@triton.jit
def _chunk_tokens(cu_ptr, slot_ptr, chunk_seq_ptr, chunk_off_ptr, c, N, BT: tl.constexpr):
    """Where chunk c of BT tokens lies: its sequence's state slot (0 for a chunk past the last sequence, which the
    caller skips like a null slot), the end of that sequence and the chunk's first token (64-bit: token offsets
    times strides may pass 2^31)."""
    n = tl.load(chunk_seq_ptr + c)
    real = n < N
    slot = tl.load(slot_ptr + n, mask=real, other=0)
    eos = tl.load(cu_ptr + n + 1, mask=real, other=0)
    t0 = tl.load(cu_ptr + n, mask=real, other=0) + (c - tl.load(chunk_off_ptr + n, mask=real, other=0)) * BT
    return slot, eos, t0.to(tl.int64)


@triton.jit
def _neg_a(alog_ptr, h):
    """-exp(A_log[h]) in log2 units: the gate's scale."""
    return -tl.exp(tl.load(alog_ptr + h).to(tl.float32)) * 1.4426950408889634


@triton.jit
def _gates(g_ptr, dtb, tok, live, cols, h, s_gt, s_gh, neg_a):
    """Kimi's gate in log2 units for the rows at tokens ``tok`` (0 where ``live`` is false: past eos, say); dtb:
    dt_bias of the columns [1, cols]."""
    x = tl.load(g_ptr + tok[:, None] * s_gt + h * s_gh + cols[None, :], mask=live[:, None], other=0.0)
    return tl.where(live[:, None], neg_a * _softplus(x.to(tl.float32) + dtb), 0.0)


@triton.jit
def _chunk_bound(g_ptr, dtb_ptr, tok, live, h, s_gt, s_gh, neg_a, K: tl.constexpr, BKD: tl.constexpr):
    """log2 of a bound on the norm of the state transfer over the tokens ``tok`` (the ``live`` ones): the sum over
    them of the largest decay of any key channel (each token's step is a contraction, I - beta k k^T, times its
    decays), the gate at the smallest pre-activation (softplus rises), BKD key columns at a time; a bound up to fp32
    rounding, nothing against 2^-SEG_FORGET. Rounded up, at least LB_FLOOR, in units of 1/LB_SCALE (int32): integer
    sums come out the same in every program that adds them. A NaN (an infinite A with a vanishing softplus) gives 0,
    no decay."""
    x_min = tl.where(live, float("inf"), 0.0)
    for k0 in tl.static_range(0, K, BKD):
        cols = k0 + tl.arange(0, BKD)
        x = tl.load(g_ptr + tok[:, None] * s_gt + h * s_gh + cols[None, :], mask=live[:, None], other=0.0)
        x = x.to(tl.float32) + tl.load(dtb_ptr + h * K + cols)[None, :]
        x_min = tl.minimum(x_min, tl.min(x, axis=1))
    lb = tl.sum(tl.where(live, neg_a * _softplus(x_min), 0.0), axis=0)
    lb = tl.where(lb == lb, lb, 0.0)
    return tl.ceil(tl.maximum(lb, LB_FLOOR) * LB_SCALE).to(tl.int32)


@triton.jit
def _gates_and_successors(g_ptr, dtb_ptr, tok, rows, eos, cols, h, s_gt, s_gh, neg_a, K: tl.constexpr,
                          BC: tl.constexpr):
    """Kimi's gate in log2 units for the rows at tokens ``tok`` (0 past eos), and each row's successor's gate (0 on
    the last row of every BC-row segment and past eos): the two tiles the prefix / suffix sums are scanned from."""
    dtb = tl.load(dtb_ptr + h * K + cols)[None, :]
    g2 = _gates(g_ptr, dtb, tok, tok < eos, cols, h, s_gt, s_gh, neg_a)
    gn = _gates(g_ptr, dtb, tok + 1, (tok + 1 < eos) & ((rows % BC) != BC - 1), cols, h, s_gt, s_gh, neg_a)
    return g2, gn


@triton.jit
def _segment_gates(g_ptr, dtb_ptr, tok, rows, eos, cols, h, s_gt, s_gh, neg_a, K: tl.constexpr, BT: tl.constexpr,
                   BC: tl.constexpr, BK: tl.constexpr):
    """The log2 gate sums a chunk slice of BT = 4 x BC rows needs, all in fp32 and each a sum of non-positive decays
    (no cancellation, so no fp64): within each BC-row segment the inclusive prefix P and the exclusive suffix S
    (a reversed scan of the gates shifted up a row), the segments' totals, and from them
    G = prefix over the block, X = exclusive suffix over the block (G_last - G), g_last,
    LH = the exponents of the half level (G_r - G_p on the upper half, G_p - G_c on the lower, p its last row),
    LQ = the same one level down, inside each half."""
    tl.static_assert(BT == 4 * BC)
    g2, gn = _gates_and_successors(g_ptr, dtb_ptr, tok, rows, eos, cols, h, s_gt, s_gh, neg_a, K, BC)
    g3 = tl.reshape(g2, (4, BC, BK))
    P = tl.cumsum(g3, axis=1)
    S = tl.cumsum(tl.reshape(gn, (4, BC, BK)), axis=1, reverse=True)
    T = tl.sum(g3, axis=1)                                               # [4, BK]
    seg = tl.arange(0, 4)[:, None]
    t0 = _pick(T, seg, 0)
    t1 = _pick(T, seg, 1)
    t2 = _pick(T, seg, 2)
    t3 = _pick(T, seg, 3)
    before = tl.where(seg == 0, 0.0, tl.where(seg == 1, t0[None, :], tl.where(seg == 2, (t0 + t1)[None, :],
                                                                                  (t0 + t1 + t2)[None, :])))
    after = tl.where(seg == 3, 0.0, tl.where(seg == 2, t3[None, :], tl.where(seg == 1, (t2 + t3)[None, :],
                                                                                 (t1 + t2 + t3)[None, :])))
    s3 = tl.arange(0, 4)[:, None, None]
    G = tl.reshape(P + before[:, None, :], (BT, BK))
    X = tl.reshape(S + after[:, None, :], (BT, BK))
    LH = tl.reshape(tl.where(s3 >= 2, P + tl.where(s3 == 3, t2[None, None, :], 0.0),
                             S + tl.where(s3 == 0, t1[None, None, :], 0.0)), (BT, BK))
    LQ = tl.reshape(tl.where(s3 % 2 == 1, P, S), (BT, BK))
    return G, X, t0 + t1 + t2 + t3, LH, LQ


@triton.jit
def _reverse_walk(qs, ks, k_ptr, g_ptr, t0, eos, h, ri, cols, dtb, neg_a, s_kt, s_kh, s_gt, s_gh,
                  BC: tl.constexpr, PRODUCT: tl.constexpr):
    """The pair blocks of the sub-block starting at token t0, one column at a time, last column to first. Row r
    at column c needs 2^(G_r - G_c), the decays of rows c+1..r: with PRODUCT it is carried as a running fp32
    product E (E <- E * 2^g_c when the walk moves to column c - 1: one exp2 per key column and step instead of
    one per element, every factor <= 1, so rounding stays relative ~BC ulp and very negative gates underflow to
    0 as they should); otherwise as a running fp32 sum D of the log2 decays with one exp2 per element. Either
    way every exponent is <= 0 and nothing cancels (no fp64, no hi/lo split). qs, ks: the sub-block's rows of q
    and k in fp32 (zero past the sequence). Returns [BC, BC] pair blocks."""
    ci = tl.arange(0, BC)
    d_kk = tl.zeros([BC, BC], dtype=tl.float32)
    d_qk = tl.zeros([BC, BC], dtype=tl.float32)
    D = tl.zeros([BC, cols.shape[0]], dtype=tl.float32)     # the running sum of decays, from 0
    if PRODUCT:
        D = D + 1.0                                          # or the running product 2^(G_r - G_c), from 1
    for step in range(0, BC):
        col = BC - 1 - step
        tc = t0 + col
        ok = tc < eos
        # the column's key loaded as a [BC, K] tile (every row the same address, served from L1), which puts it,
        # the running tile and the products in the row tiles' layout; a [K] vector broadcast here made Triton
        # move the [BC, K] tile through shared memory every step
        kc = tl.load(k_ptr + tc * s_kt + h * s_kh + cols[None, :] + 0 * ri[:, None], mask=ok, other=0.0)
        kc = kc.to(tl.float32)
        x = tl.load(g_ptr + tc * s_gt + h * s_gh + cols, mask=ok, other=0.0).to(tl.float32) + dtb
        gcol = tl.where(ok, neg_a * _softplus(x), 0.0)[None, :]
        on = (ri >= col)[:, None]
        if PRODUCT:
            e = D * kc                               # rows r < col hold 1: dropped after the sums
        else:
            e = tl.exp2(D) * kc                      # rows r < col hold D = 0: dropped after the sums
        keep = on & (ci[None, :] == col)
        d_kk = tl.where(keep, tl.sum(ks * e, axis=1)[:, None], d_kk)
        d_qk = tl.where(keep, tl.sum(qs * e, axis=1)[:, None], d_qk)
        if PRODUCT:
            D = tl.where(on, D * tl.exp2(gcol), D)
        else:
            D = tl.where(on, D + gcol, 0.0)
    return d_kk, d_qk


@triton.jit
def _mid_exponents(g2, gn, ri, BC: tl.constexpr, K: tl.constexpr):
    """E_r = G_r - G_p for the sub-block's reference row p = BC/2 - 1, per key channel, from the gate tile g2 and
    the successor tile gn (zero on rows p and BC - 1): on rows after p the prefix sum of their half (<= 0), on
    rows up to p minus the exclusive suffix sum of theirs (>= 0). Sums of same-signed decays: nothing cancels."""
    HB: tl.constexpr = BC // 2
    P = tl.reshape(tl.cumsum(tl.reshape(g2, (2, HB, K)), axis=1), (BC, K))
    S = tl.reshape(tl.cumsum(tl.reshape(gn, (2, HB, K)), axis=1, reverse=True), (BC, K))
    return tl.where(ri[:, None] >= HB, P, -S)


@triton.jit
def _balanced_exponents(g_ptr, dtb_ptr, tok, ri, eos, cols, h, s_gt, s_gh, neg_a, K: tl.constexpr):
    """E_r = G_r - m per key channel for a BC-row sub-block, with the reference m halfway between the decays of its
    first and last rows (``diag_ref="balanced"``): |E| <= half the sub-block's total decay, the least any one
    reference allows. G_r is the fp32 prefix sum of the decays of rows 1..r (row 0's own decay is in no pair), a
    sum of non-positive terms; E = G_r - G_last / 2 subtracts, with an absolute error of a few ulp of |G_last|, which
    is at most 2 * RANGE wherever the block is used (about 1e-5 in the exponent: the middle-row form's order).
    One gate tile (no successor tile) and one scan."""
    dtb = tl.load(dtb_ptr + h * K + cols)[None, :]
    g2 = _gates(g_ptr, dtb, tok, tok < eos, cols, h, s_gt, s_gh, neg_a)
    G = tl.cumsum(tl.where(ri[:, None] == 0, 0.0, g2), axis=0)
    return G - 0.5 * tl.min(G, axis=0)[None, :]


@triton.jit
def _sub_block_exponents(g_ptr, dtb_ptr, tok, ri, eos, cols, h, s_gt, s_gh, neg_a, K: tl.constexpr,
                         BC: tl.constexpr, BALANCED: tl.constexpr):
    """The reference-row exponents of a sub-block's key columns ``cols``: halfway between its first and last rows'
    decays (``_balanced_exponents``) or from its middle row (``_mid_exponents``)."""
    if BALANCED:
        E = _balanced_exponents(g_ptr, dtb_ptr, tok, ri, eos, cols, h, s_gt, s_gh, neg_a, K)
    else:
        g2, gn = _gates_and_successors(g_ptr, dtb_ptr, tok, ri, eos, cols, h, s_gt, s_gh, neg_a, K, BC // 2)
        E = _mid_exponents(g2, gn, ri, BC, cols.shape[0])
    return E


@triton.jit
def _halves_exponents(g_ptr, dtb_ptr, tok, ri, eos, cols, h, s_gt, s_gh, neg_a, K: tl.constexpr, BC: tl.constexpr):
    """The exponents of the pairs by halves (``"halves"``) for a BC-row sub-block's key columns ``cols``, from one gate
    tile and one scan. Rows 0..HB-1 and HB..BC-1 (HB = BC/2) are the halves, p = HB - 1 the row between them.
    E: the pairs inside each half through a reference halfway between the decays of the half's first and last rows
    (the balanced reference of ``_balanced_exponents`` per half: |E| at most half the half's decay). X: the pairs
    across the halves through row p, G_r - G_p on the upper half's rows and G_p - G_c on the lower's, both <= 0 for
    any gate (no range to check; an underflow stands for a pair that is zero in fp32 anyway). Q, the scan, sums the
    decays of each half's rows after its first (row HB's own decay, which only the pairs across take, is added to
    X apart), so a huge decay between the halves never cancels inside a half; the upper half's Q subtracts the lower
    half's total, with an absolute error of a few ulp of the block's decay where the block is used (<= 4 * RANGE).
    half_decay: per column, the larger half's decay / 2, which bounds |E|."""
    HB: tl.constexpr = BC // 2
    dtb = tl.load(dtb_ptr + h * K + cols)[None, :]
    g2 = _gates(g_ptr, dtb, tok, tok < eos, cols, h, s_gt, s_gh, neg_a)
    upper = (ri >= HB)[:, None]
    C = tl.cumsum(tl.where((ri % HB == 0)[:, None], 0.0, g2), axis=0)
    lo = tl.min(tl.where(upper, 0.0, C), axis=0)[None, :]           # decays of rows 1..p (<= 0)
    hi = tl.min(C, axis=0)[None, :] - lo                             # decays of rows HB+1..BC-1
    g_hb = tl.sum(tl.where((ri == HB)[:, None], g2, 0.0), axis=0)[None, :]
    Q = tl.where(upper, C - lo, C)
    E = Q - 0.5 * tl.where(upper, hi, lo)
    X = tl.where(upper, Q + g_hb, lo - Q)
    return E, X, -0.5 * tl.minimum(lo, hi)


@triton.jit
def _sliced_reference_pairs(q_ptr, k_ptr, g_ptr, dtb_ptr, t0, eos, h, ri, neg_a, s_qt, s_qh, s_kt, s_kh, s_gt, s_gh,
                            K: tl.constexpr, BC: tl.constexpr, BKD: tl.constexpr, RANGE: tl.constexpr,
                            PREC: tl.constexpr, EARLY_OUT: tl.constexpr, BALANCED: tl.constexpr,
                            HALVES: tl.constexpr):
    """A sub-block's pair blocks on tensor cores, BKD key columns at a time: through one reference per key channel
    (``_reference_pairs``'s form; BALANCED picks the reference) or, with HALVES, by halves (``_halves_exponents``:
    the pairs inside each half through its own reference, those across through the row between the halves).
    Accumulates both products and the largest |E| (EARLY_OUT skips the slices after the first one out of range) and
    returns them with whether the block is in range (out-of-range blocks may hold inf / NaN: not to be stored)."""
    HB: tl.constexpr = BC // 2
    live = (t0 + ri < eos)[:, None]
    a_kk = tl.zeros([BC, BC], dtype=tl.float32)
    a_qk = tl.zeros([BC, BC], dtype=tl.float32)
    x_kk = tl.zeros([BC, BC], dtype=tl.float32)      # HALVES: the pairs across the halves
    x_qk = tl.zeros([BC, BC], dtype=tl.float32)
    big = tl.zeros([BC, BKD], dtype=tl.float32)
    for k0 in range(0, K, BKD):
        # EARLY_OUT (the default): once a slice has left the range the block goes to the next launch (halves or
        # the walk), so the remaining slices are skipped
        if not EARLY_OUT or tl.max(tl.max(big, axis=1), axis=0) <= RANGE:
            kc = k0 + tl.arange(0, BKD)
            qs = tl.load(q_ptr + (t0 + ri)[:, None] * s_qt + h * s_qh + kc[None, :], mask=live, other=0.0)
            ks = tl.load(k_ptr + (t0 + ri)[:, None] * s_kt + h * s_kh + kc[None, :], mask=live, other=0.0)
            qs = qs.to(tl.float32)
            ks = ks.to(tl.float32)
            if HALVES:
                E, X, half_decay = _halves_exponents(g_ptr, dtb_ptr, t0 + ri, ri, eos, kc, h, s_gt, s_gh, neg_a, K,
                                                     BC)
                big = tl.maximum(big, half_decay)
                fx = tl.exp2(X)
                upper = (ri >= HB)[:, None]
                kx = tl.where(upper, 0.0, ks * fx)
                fu = tl.where(upper, fx, 0.0)
                x_kk = tl.dot(ks * fu, tl.trans(kx), x_kk, input_precision=PREC)
                x_qk = tl.dot(qs * fu, tl.trans(kx), x_qk, input_precision=PREC)
            else:
                E = _sub_block_exponents(g_ptr, dtb_ptr, t0 + ri, ri, eos, kc, h, s_gt, s_gh, neg_a, K, BC,
                                         BALANCED)
                big = tl.maximum(big, tl.abs(E))
            up = tl.exp2(E)
            kd = ks * tl.exp2(-E)
            a_kk = tl.dot(ks * up, tl.trans(kd), a_kk, input_precision=PREC)
            a_qk = tl.dot(qs * up, tl.trans(kd), a_qk, input_precision=PREC)
    if HALVES:
        same = (ri[:, None] >= HB) == (ri[None, :] >= HB)
        a_kk = tl.where(same, a_kk, x_kk)
        a_qk = tl.where(same, a_qk, x_qk)
    lower = ri[:, None] >= ri[None, :]
    a_kk = tl.where(lower, a_kk, 0.0)
    a_qk = tl.where(lower, a_qk, 0.0)
    ok = (tl.max(tl.max(big, axis=1), axis=0) <= RANGE) & _all_finite(a_kk, a_qk, RANGE)
    return a_kk, a_qk, ok


@triton.jit
def _walk_pairs(q_ptr, k_ptr, g_ptr, dtb_ptr, t0, eos, h, ri, neg_a, s_qt, s_qh, s_kt, s_kh, s_gt, s_gh,
                K: tl.constexpr, BC: tl.constexpr, PRODUCT: tl.constexpr):
    """A sub-block's pair blocks by the column walk over the whole key width (``_reverse_walk``)."""
    cols = tl.arange(0, K)
    live = (t0 + ri < eos)[:, None]
    dtb = tl.load(dtb_ptr + h * K + cols)
    qs = tl.load(q_ptr + (t0 + ri)[:, None] * s_qt + h * s_qh + cols[None, :], mask=live, other=0.0)
    ks = tl.load(k_ptr + (t0 + ri)[:, None] * s_kt + h * s_kh + cols[None, :], mask=live, other=0.0)
    return _reverse_walk(qs.to(tl.float32), ks.to(tl.float32), k_ptr, g_ptr, t0, eos, h, ri, cols, dtb, neg_a,
                         s_kt, s_kh, s_gt, s_gh, BC, PRODUCT)


@triton.jit
def _all_finite(d_kk, d_qk, RANGE: tl.constexpr):
    """Whether the kept pairs of a reference-form block are finite: a factor that overflowed fp32 (raw q, k are not
    yet normalised, so |x| 2^|E| may pass 2^128 with |E| <= RANGE) reaches its row's diagonal pair as inf or NaN,
    and such a block takes the walk instead. The dropped pairs hold zeros here. RANGE inf switches the check off
    (tests show what it prevents)."""
    if RANGE > 1e30:
        return True
    return tl.min(tl.min(((tl.abs(d_kk) + tl.abs(d_qk)) < float("inf")).to(tl.int32), axis=1), axis=0) == 1


@triton.jit
def _reference_pairs(qs, ks, E, ri, PREC: tl.constexpr):
    """The pair blocks from one reference per key channel on tensor cores: 2^(G_r - G_c) = 2^(G_r - m) 2^(m - G_c),
    so [k_r 2^E_r] [k_c 2^-E_c]^T (and the same with q_r), kept for c <= r. Exact in fp32 as long as no factor
    leaves fp32's range, which the caller checks (|E| <= RANGE before, ``_all_finite`` after); the pairs past the
    diagonal may overflow and are dropped."""
    up = tl.exp2(E)
    kc = ks * tl.exp2(-E)
    lower = ri[:, None] >= ri[None, :]
    d_kk = tl.where(lower, tl.dot(ks * up, tl.trans(kc), input_precision=PREC), 0.0)
    d_qk = tl.where(lower, tl.dot(qs * up, tl.trans(kc), input_precision=PREC), 0.0)
    return d_kk, d_qk


@triton.jit(do_not_specialize=["N"])
def _chunk_diag_kernel(
    q_ptr, k_ptr, g_ptr, alog_ptr, dtb_ptr, cu_ptr, slot_ptr, chunk_seq_ptr, chunk_off_ptr, dd_ptr, done_ptr, lb_ptr,
    s_qt, s_qh, s_kt, s_kh, s_gt, s_gh, N,
    H: tl.constexpr, K: tl.constexpr, BT: tl.constexpr, BC: tl.constexpr, FORM: tl.constexpr,
    RANGE: tl.constexpr, PREC: tl.constexpr, SKIP_DONE: tl.constexpr, BKD: tl.constexpr,
    EARLY_OUT: tl.constexpr, BALANCED: tl.constexpr, BOUND: tl.constexpr,
):
    """Pairs inside 16-token sub-blocks (raw q, k; every exponent evaluated for a kept pair is <= 0), one program
    per (sub-block, head): dd[0][r, c] = sum_d k_r k_c 2^(G_r - G_c), dd[1][r, c] = sum_d q_r k_c 2^(G_r - G_c),
    c <= r. FORM 0 / 1: the column walk (``_reverse_walk``; 1: decays as a running product); FORM 3: the
    reference-row form; FORM 4: the same by halves (``_halves_exponents``). A reference form does the blocks within
    RANGE and marks them in ``done``; launches with SKIP_DONE take only the blocks still unmarked (``_diag_launches``:
    after the whole block's reference, halves and then the walk, the default, or the walk alone; measured on an
    H200: 2.21 ms against 2.26 with the walk inline in one launch, 1x32768, anchors' gates). With
    BKD < K (``_config["diag_bk"]``; 32 by default for 16-token chunks, 96 registers against 168 for the whole width
    on sm_90a) the reference pass takes the key width BKD columns at a time (``_sliced_reference_pairs``; always
    for halves), accumulating both products and the largest |E| (with EARLY_OUT skipping the slices after the first
    one out of range), and decides at the end whether the block is in range (out-of-range blocks may hold inf / NaN
    in the accumulators; they are not stored). BALANCED: the whole block's reference halfway between the first and
    last rows' decays instead of the middle row (``_sub_block_exponents``). BT is the chunk length (16, whose chunks
    are one sub-block, or 64). Items: heads first, then sub-blocks, then chunks. BOUND (``inter_segments``, 16-token
    chunks; the first launch): also the chunk's state-transfer bound into lb [chunks, H] (``_chunk_bound``), here
    because this kernel runs over every chunk before any window's walk, which decides from them."""
    NC: tl.constexpr = BT // BC
    tl.static_assert((BT == BC) | (BOUND == 0), "the chunk bounds are per 16-token chunk")
    item = tl.program_id(0)
    h = item % H
    c = item // H // NC
    j = (item // H) % NC
    slot, eos, t0 = _chunk_tokens(cu_ptr, slot_ptr, chunk_seq_ptr, chunk_off_ptr, c, N, BT)
    go = slot > 0
    if SKIP_DONE:
        go = go & (tl.load(done_ptr + item) == 0)
    if go:
        t0 += j * BC
        neg_a = _neg_a(alog_ptr, h)
        ri = tl.arange(0, BC)
        base = (c * H + h).to(tl.int64) * 2 * BT * BC + j * BC * BC
        live = (t0 + ri < eos)[:, None]
        full = dd_ptr + base + ri[:, None] * BC + ri[None, :]
        if FORM == 3 and BKD == K:
            # the whole key width at once: the range is checked before the products (measured form, 168 registers)
            cols = tl.arange(0, K)
            qs = tl.load(q_ptr + (t0 + ri)[:, None] * s_qt + h * s_qh + cols[None, :], mask=live, other=0.0)
            ks = tl.load(k_ptr + (t0 + ri)[:, None] * s_kt + h * s_kh + cols[None, :], mask=live, other=0.0)
            E = _sub_block_exponents(g_ptr, dtb_ptr, t0 + ri, ri, eos, cols, h, s_gt, s_gh, neg_a, K, BC, BALANCED)
            ok = tl.max(tl.max(tl.abs(E), axis=1), axis=0) <= RANGE
            if ok:
                d_kk, d_qk = _reference_pairs(qs.to(tl.float32), ks.to(tl.float32), E, ri, PREC)
                ok = _all_finite(d_kk, d_qk, RANGE)
                if ok:
                    tl.store(full, d_kk)
                    tl.store(full + BT * BC, d_qk)
            tl.store(done_ptr + item, ok.to(tl.int8))
        elif FORM >= 3:
            a_kk, a_qk, ok = _sliced_reference_pairs(q_ptr, k_ptr, g_ptr, dtb_ptr, t0, eos, h, ri, neg_a, s_qt, s_qh,
                                                     s_kt, s_kh, s_gt, s_gh, K, BC, BKD, RANGE, PREC, EARLY_OUT,
                                                     BALANCED, FORM == 4)
            if ok:
                tl.store(full, a_kk)
                tl.store(full + BT * BC, a_qk)
            tl.store(done_ptr + item, ok.to(tl.int8))     # (a SKIP_DONE launch runs only where it was 0)
        else:
            d_kk, d_qk = _walk_pairs(q_ptr, k_ptr, g_ptr, dtb_ptr, t0, eos, h, ri, neg_a, s_qt, s_qh, s_kt, s_kh,
                                     s_gt, s_gh, K, BC, FORM == 1)
            tl.store(full, d_kk)
            tl.store(full + BT * BC, d_qk)
        if BOUND:
            tl.store(lb_ptr + c * H + h, _chunk_bound(g_ptr, dtb_ptr, t0 + ri, t0 + ri < eos, h, s_gt, s_gh, neg_a, K,
                                                      BKD))


@triton.jit
def _merge_level(X, N, rr, cc, S: tl.constexpr, PREC: tl.constexpr):
    """One doubling step of the unit lower-triangular inverse: X holds the inverses of the S-blocks on its
    diagonal; returns those of the 2S-blocks, [[A^-1, 0], [-B^-1 C A^-1, B^-1]] = X - X C X."""
    m = ((rr // (2 * S)) == (cc // (2 * S))) & ((rr % (2 * S)) >= S) & ((cc % (2 * S)) < S)
    p = tl.dot(X, tl.where(m, N, 0.0), input_precision=PREC)
    return X - tl.dot(p, X, input_precision=PREC)


@triton.jit(do_not_specialize=["N"])
def _chunk_intra_kernel(
    q_ptr, k_ptr, v_ptr, g_ptr, beta_ptr, alog_ptr, dtb_ptr,
    cu_ptr, slot_ptr, chunk_seq_ptr, chunk_off_ptr,
    w_ptr, u_ptr, qg_ptr, kg_ptr, aqk_ptr, gl_ptr, ek_ptr, rn_ptr, dd_ptr,
    s_qt, s_qh, s_kt, s_kh, s_vt, s_vh, s_gt, s_gh, s_bt, s_bh,
    N, scale,
    H: tl.constexpr, K: tl.constexpr, V: tl.constexpr,
    BT: tl.constexpr, BC: tl.constexpr, BK: tl.constexpr, BVI: tl.constexpr,
    PREC_A: tl.constexpr, PREC_M: tl.constexpr, PREC_O: tl.constexpr,
):
    c = tl.program_id(0)
    h = tl.program_id(1)
    slot, eos, t0 = _chunk_tokens(cu_ptr, slot_ptr, chunk_seq_ptr, chunk_off_ptr, c, N, BT)
    if slot <= 0:
        return
    rows = tl.arange(0, BT)
    tok = t0 + rows
    rmask = tok < eos
    neg_a = _neg_a(alog_ptr, h)
    beta = tl.load(beta_ptr + tok * s_bt + h * s_bh, mask=rmask, other=0.0).to(tl.float32)
    NC: tl.constexpr = BT // BC
    rr = rows[:, None]
    cc = rows[None, :]
    base = (c * H + h).to(tl.int64)
    wsd = qg_ptr.dtype.element_ty

    # Pass 1 over column slices: everything that needs the gate. Products use the raw q, k; the row
    # norms are applied afterwards (A_n = diag(rk) A diag(rk), and in the sequential kernel for QG, KG).
    ssq_q = tl.zeros([BT], dtype=tl.float32)
    ssq_k = tl.zeros([BT], dtype=tl.float32)
    a_kk = tl.zeros([BT, BT], dtype=tl.float32)
    a_qk = tl.zeros([BT, BT], dtype=tl.float32)                # level 32: rows 32..63 x columns 0..31
    b_kk = tl.zeros([2, BT // 2, BT // 2], dtype=tl.float32)   # level 16, inside each 32-token half
    b_qk = tl.zeros([2, BT // 2, BT // 2], dtype=tl.float32)
    for k0 in range(0, K, BK):
        cols = k0 + tl.arange(0, BK)
        m2 = rmask[:, None]
        qs = tl.load(q_ptr + tok[:, None] * s_qt + h * s_qh + cols[None, :], mask=m2, other=0.0).to(tl.float32)
        ks = tl.load(k_ptr + tok[:, None] * s_kt + h * s_kh + cols[None, :], mask=m2, other=0.0).to(tl.float32)
        G, X, g_last, L32, L16 = _segment_gates(g_ptr, dtb_ptr, tok, rows, eos, cols, h, s_gt, s_gh, neg_a,
                                                K, BT, BC, BK)
        eg = tl.exp2(G)
        ssq_q += tl.sum(qs * qs, axis=1)
        ssq_k += tl.sum(ks * ks, axis=1)
        # per-token outputs of this slice (unnormalised; fp32 copy of 2^G k for pass 2)
        off = base * BT * K + rr * K + cols[None, :]
        tl.store(qg_ptr + off, (qs * eg * scale).to(wsd))
        tl.store(kg_ptr + off, (ks * tl.exp2(X)).to(wsd))
        tl.store(ek_ptr + off, (ks * eg).to(ek_ptr.dtype.element_ty))
        tl.store(gl_ptr + base * K + cols, tl.exp2(g_last))
        # off-diagonal sub-blocks through reference rows: level 32 (rows 32..63 x columns 0..31, reference row 31),
        # then level 16 (inside each half, reference rows 15 and 47)
        e = tl.exp2(L32)
        is_r = rows >= BT // 2
        colf = tl.where(is_r[:, None], 0.0, ks * e)
        ke = tl.where(is_r[:, None], ks * e, 0.0)
        qe = tl.where(is_r[:, None], qs * e, 0.0)
        a_kk += tl.dot(ke, tl.trans(colf), input_precision=PREC_A)
        a_qk += tl.dot(qe, tl.trans(colf), input_precision=PREC_A)
        e = tl.exp2(L16)
        is_r = (rows % (BT // 2)) >= BT // 4
        colf = tl.where(is_r[:, None], 0.0, ks * e)
        ke = tl.where(is_r[:, None], ks * e, 0.0)
        qe = tl.where(is_r[:, None], qs * e, 0.0)
        colf = tl.trans(tl.reshape(colf, (2, BT // 2, BK)), (0, 2, 1))
        b_kk += tl.dot(tl.reshape(ke, (2, BT // 2, BK)), colf, input_precision=PREC_A)
        b_qk += tl.dot(tl.reshape(qe, (2, BT // 2, BK)), colf, input_precision=PREC_A)

    rq = tl.rsqrt(ssq_q + 1e-6)
    rk = tl.rsqrt(ssq_k + 1e-6)
    tl.store(rn_ptr + base * 2 * BT + rows, rq)
    tl.store(rn_ptr + base * 2 * BT + BT + rows, rk)
    # assemble level 32 + level 16 halves + the diagonal blocks (diag kernel)
    hi = tl.arange(0, 2)
    same2 = hi[:, None, None, None] == hi[None, None, :, None]
    bi = tl.arange(0, NC)
    same4 = bi[:, None, None, None] == bi[None, None, :, None]
    a_kk += tl.reshape(tl.where(same2, b_kk[:, :, None, :], 0.0), (BT, BT))
    a_qk += tl.reshape(tl.where(same2, b_qk[:, :, None, :], 0.0), (BT, BT))
    dd = dd_ptr + base * 2 * BT * BC + rr * BC + tl.arange(0, BC)[None, :]   # diagonal blocks (diag kernel)
    d_kk = tl.reshape(tl.load(dd), (NC, BC, BC))
    d_qk = tl.reshape(tl.load(dd + BT * BC), (NC, BC, BC))
    a_kk += tl.reshape(tl.where(same4, d_kk[:, :, None, :], 0.0), (BT, BT))
    a_qk += tl.reshape(tl.where(same4, d_qk[:, :, None, :], 0.0), (BT, BT))
    aqk = a_qk * (rq * scale)[:, None] * rk[None, :]
    tl.store(aqk_ptr + base * BT * BT + rr * BT + cc, aqk.to(aqk_ptr.dtype.element_ty))
    # N = diag(beta) A (strictly lower), normalised; L = I + N
    nmat = tl.where(rr > cc, a_kk * (rk * beta)[:, None] * rk[None, :], 0.0)
    # L^-1 by doubling: inverses of 2x2 blocks, then 4, 8, 16, 32, 64 (block forward substitution)
    x = tl.where(rr == cc, 1.0, 0.0) - tl.where((rr // 2 == cc // 2) & (rr > cc), nmat, 0.0)
    x = _merge_level(x, nmat, rr, cc, 2, PREC_M)
    x = _merge_level(x, nmat, rr, cc, 4, PREC_M)
    x = _merge_level(x, nmat, rr, cc, 8, PREC_M)
    x = _merge_level(x, nmat, rr, cc, 16, PREC_M)
    x = _merge_level(x, nmat, rr, cc, 32, PREC_M)

    # Pass 2: W = L^-1 diag(beta rk) (2^G k) and U = L^-1 diag(beta) v
    tl.debug_barrier()                          # pass 1's stores of 2^G k are read back by other threads
    # (as loops, Triton 3.6 moves the loop-invariant left operand to the tensor-core layout in every step;
    # unrolled, it does not, but that was no faster on an H200: 3.44 ms unrolled against 3.41 ms at 1x32768)
    tbk = x * (beta * rk)[None, :]
    for k0 in range(0, K, BK):
        _w_slice(tbk, ek_ptr, w_ptr, base, rr, k0, K, BT, BK, PREC_O)
    tb = x * beta[None, :]
    for v0 in range(0, V, BVI):
        _u_slice(tb, v_ptr, u_ptr, base, rr, tok, rmask, h, s_vt, s_vh, v0, V, BT, BVI, PREC_O)


@triton.jit
def _w_slice(tbk, ek_ptr, w_ptr, base, rr, k0, K: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr,
             PREC: tl.constexpr):
    """Columns k0..k0+BK of W = (L^-1 diag(beta rk)) (2^G k)."""
    cols = k0 + tl.arange(0, BK)
    off = base * BT * K + rr * K + cols[None, :]
    ek = tl.load(ek_ptr + off).to(tl.float32)
    tl.store(w_ptr + off, tl.dot(tbk, ek, input_precision=PREC).to(w_ptr.dtype.element_ty))


@triton.jit
def _u_slice(tb, v_ptr, u_ptr, base, rr, tok, rmask, h, s_vt, s_vh, v0, V: tl.constexpr, BT: tl.constexpr,
             BVI: tl.constexpr, PREC: tl.constexpr):
    """Columns v0..v0+BVI of U = (L^-1 diag(beta)) v."""
    vc = v0 + tl.arange(0, BVI)
    vs = tl.load(v_ptr + tok[:, None] * s_vt + h * s_vh + vc[None, :], mask=rmask[:, None], other=0.0)
    u = tl.dot(tb, vs.to(tl.float32), input_precision=PREC)
    tl.store(u_ptr + base * BT * V + rr * V + vc[None, :], u.to(u_ptr.dtype.element_ty))


@triton.jit(do_not_specialize=["N", "c_lo"])
def _chunk16_kernel(
    q_ptr, k_ptr, v_ptr, g_ptr, beta_ptr, alog_ptr, dtb_ptr,
    cu_ptr, slot_ptr, chunk_seq_ptr, chunk_off_ptr,
    w_ptr, u_ptr, qg_ptr, kg_ptr, aqk_ptr, gl_ptr, rn_ptr, dd_ptr,
    s_qt, s_qh, s_kt, s_kh, s_vt, s_vh, s_gt, s_gh, s_bt, s_bh,
    N, scale, c_lo,
    H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BC: tl.constexpr, BVI: tl.constexpr,
    PREC_M: tl.constexpr, PREC_O: tl.constexpr,
):
    """Sixteen-token chunks (``_config["chunk"] = 16``, the default): one program per (chunk, head) does the rest of
    the parallel work of its chunk, which is a single sub-block: with the pairs from the diagonal kernel's ``dd``, the
    gate's prefix and suffix sums inside the chunk, the row norms, the 16x16 inverse, and W, U, QG, KG, Aqk,
    2^G_last in the layouts the sequential kernel reads (with BT = 16). No cross-sub-block products and no 64x64
    inverse; the sequential kernel takes four times as many (smaller) steps. (The pairs computed inside this
    kernel instead took it to 255 registers with spills and were slower: H200, 2026-11-30, RESULTS.md.) The launch
    covers the chunks from c_lo on (a window of them, ``overlap_windows``)."""
    c = c_lo + tl.program_id(0)
    h = tl.program_id(1)
    slot, eos, t0 = _chunk_tokens(cu_ptr, slot_ptr, chunk_seq_ptr, chunk_off_ptr, c, N, BC)
    if slot <= 0:
        return
    ri = tl.arange(0, BC)
    cols = tl.arange(0, K)
    tok = t0 + ri
    live = tok < eos
    neg_a = _neg_a(alog_ptr, h)
    m2 = live[:, None]
    qs = tl.load(q_ptr + tok[:, None] * s_qt + h * s_qh + cols[None, :], mask=m2, other=0.0).to(tl.float32)
    ks = tl.load(k_ptr + tok[:, None] * s_kt + h * s_kh + cols[None, :], mask=m2, other=0.0).to(tl.float32)
    g2, gn = _gates_and_successors(g_ptr, dtb_ptr, tok, ri, eos, cols, h, s_gt, s_gh, neg_a, K, BC)
    dd = dd_ptr + (c * H + h).to(tl.int64) * 2 * BC * BC + ri[:, None] * BC + ri[None, :]   # BT = BC in dd
    d_kk = tl.load(dd)
    d_qk = tl.load(dd + BC * BC)
    G = tl.cumsum(g2, axis=0)                      # decays of rows 0..r (log2, <= 0)
    X = tl.cumsum(gn, axis=0, reverse=True)        # decays of rows r+1..15: G_last - G, summed without cancelling
    rq = tl.rsqrt(tl.sum(qs * qs, axis=1) + 1e-6)
    rk = tl.rsqrt(tl.sum(ks * ks, axis=1) + 1e-6)
    beta = tl.load(beta_ptr + tok * s_bt + h * s_bh, mask=live, other=0.0).to(tl.float32)
    base = (c * H + h).to(tl.int64)
    tl.store(rn_ptr + base * 2 * BC + ri, rq)
    tl.store(rn_ptr + base * 2 * BC + BC + ri, rk)
    eg = tl.exp2(G)
    wsd = qg_ptr.dtype.element_ty
    off = base * BC * K + ri[:, None] * K + cols[None, :]
    tl.store(qg_ptr + off, (qs * eg * scale).to(wsd))
    tl.store(kg_ptr + off, (ks * tl.exp2(X)).to(wsd))
    tl.store(gl_ptr + base * K + cols, tl.exp2(tl.sum(g2, axis=0)))
    rr = ri[:, None]
    cc = ri[None, :]
    tl.store(aqk_ptr + base * BC * BC + rr * BC + cc,
             (d_qk * (rq * scale)[:, None] * rk[None, :]).to(aqk_ptr.dtype.element_ty))
    nmat = tl.where(rr > cc, d_kk * (rk * beta)[:, None] * rk[None, :], 0.0)
    xi = tl.where(rr == cc, 1.0, 0.0) - tl.where((rr // 2 == cc // 2) & (rr > cc), nmat, 0.0)
    xi = _merge_level(xi, nmat, rr, cc, 2, PREC_M)
    xi = _merge_level(xi, nmat, rr, cc, 4, PREC_M)
    xi = _merge_level(xi, nmat, rr, cc, 8, PREC_M)
    w = tl.dot(xi * (beta * rk)[None, :], ks * eg, input_precision=PREC_O)
    tl.store(w_ptr + off, w.to(w_ptr.dtype.element_ty))
    tb = xi * beta[None, :]
    for v0 in range(0, V, BVI):
        vc = v0 + tl.arange(0, BVI)
        vs = tl.load(v_ptr + tok[:, None] * s_vt + h * s_vh + vc[None, :], mask=m2, other=0.0)
        u = tl.dot(tb, vs.to(tl.float32), input_precision=PREC_O)
        tl.store(u_ptr + base * BC * V + rr * V + vc[None, :], u.to(u_ptr.dtype.element_ty))


@triton.jit
def _pair_steps(S, c0, c1, c_out, bos, eos, h, vc, kc, w_ptr, u_ptr, qg_ptr, kg_ptr, aqk_ptr, gl_ptr, rn_ptr, o_ptr,
                s_ot, s_oh, H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BT: tl.constexpr,
                DOT_DT: tl.constexpr, AV_DT: tl.constexpr, PREC: tl.constexpr, WARM_UP: tl.constexpr):
    """The sequential walk two chunks a, b at a time ("pairs", value rows first; the state S [BV, K] in registers),
    so that the state's path has three products per 2 BT tokens instead of four. With v_a = U_a - W_a S^T and
    S_a = S 2^Gl_a + (r_a v_a)^T KG_a (r: 1/|k|), chunk b's v_b = U_b - W_b S_a^T is
    U_b - W_b (S 2^Gl_a)^T - C^T (r_a v_a) with C = KG_a W_b^T, taken from S directly (beside v_a), and chunk b's
    outputs take QG_b (S 2^Gl_a)^T + (QG_b KG_a^T) (r_a v_a): the 16 x 16 corrections come from the loaded operands
    alone, off the state's path, and no exponential is evaluated. A sequence's odd last chunk runs as a pair whose
    second chunk is masked out (zero operands, decay 1). (Scaling W_b and QG_b by 2^Gl_a instead of the state, so
    that the state reaches a product operand once a step, was slower: H200, 2026-11-30, eleventh session.) Chunks
    before c_out (a segment's warm-up, ``inter_segments``; WARM_UP) update the state without writing outputs."""
    rows = tl.arange(0, BT)
    for c in range(c0, c1, 2):
        has_b = c + 1 < c1
        ba = (c * H + h).to(tl.int64)
        bb = ba + H
        mb = (rows < BT) & has_b
        wa_off = ba * BT * K + rows[:, None] * K + kc[None, :]
        wb_off = bb * BT * K + rows[:, None] * K + kc[None, :]
        wa = tl.load(w_ptr + wa_off).to(DOT_DT)
        qa = tl.load(qg_ptr + wa_off).to(DOT_DT)
        ka = tl.load(kg_ptr + wa_off).to(DOT_DT)
        wb = tl.load(w_ptr + wb_off, mask=mb[:, None], other=0.0).to(DOT_DT)
        qb = tl.load(qg_ptr + wb_off, mask=mb[:, None], other=0.0).to(DOT_DT)
        kb = tl.load(kg_ptr + wb_off, mask=mb[:, None], other=0.0).to(DOT_DT)
        ua = tl.load(u_ptr + ba * BT * V + rows[:, None] * V + vc[None, :])
        ub = tl.load(u_ptr + bb * BT * V + rows[:, None] * V + vc[None, :], mask=mb[:, None], other=0.0)
        aqa = tl.load(aqk_ptr + ba * BT * BT + rows[:, None] * BT + rows[None, :])
        aqb = tl.load(aqk_ptr + bb * BT * BT + rows[:, None] * BT + rows[None, :], mask=mb[:, None], other=0.0)
        gla = tl.load(gl_ptr + ba * K + kc)
        glb = tl.load(gl_ptr + bb * K + kc, mask=(kc < K) & has_b, other=1.0)
        rqa = tl.load(rn_ptr + ba * 2 * BT + rows)
        rka = tl.load(rn_ptr + ba * 2 * BT + BT + rows)
        rqb = tl.load(rn_ptr + bb * 2 * BT + rows, mask=mb, other=0.0)
        rkb = tl.load(rn_ptr + bb * 2 * BT + BT + rows, mask=mb, other=0.0)
        cab = tl.dot(ka, tl.trans(wb), input_precision=PREC) * rka[:, None]          # [a rows, b rows]
        dab = tl.dot(ka, tl.trans(qb), input_precision=PREC) * rka[:, None]
        sd = S.to(DOT_DT)
        sg = (S * gla[None, :]).to(DOT_DT)
        vta = tl.trans(ua.to(tl.float32)) - tl.dot(sd, tl.trans(wa), input_precision=PREC)      # [BV, BT]
        vtb = tl.trans(ub.to(tl.float32)) - tl.dot(sg, tl.trans(wb), input_precision=PREC) - \
            tl.dot(vta.to(AV_DT), cab.to(AV_DT), input_precision=PREC)
        ota = rqa[None, :] * tl.dot(sd, tl.trans(qa), input_precision=PREC) + \
            tl.dot(vta.to(AV_DT), tl.trans(aqa.to(AV_DT)), input_precision=PREC)
        otb = rqb[None, :] * (tl.dot(sg, tl.trans(qb), input_precision=PREC) +
                              tl.dot(vta.to(AV_DT), dab.to(AV_DT), input_precision=PREC)) + \
            tl.dot(vtb.to(AV_DT), tl.trans(aqb.to(AV_DT)), input_precision=PREC)
        ta = bos + (c - c0) * BT + rows
        tb = ta + BT
        o_base = o_ptr + h * s_oh + vc[:, None]
        keep_a = ta < eos
        keep_b = (tb < eos) & has_b                 # a window may end inside the sequence
        if WARM_UP:
            keep_a = keep_a & (c >= c_out)
            keep_b = keep_b & (c + 1 >= c_out)
        tl.store(o_base + ta[None, :].to(tl.int64) * s_ot, ota.to(o_ptr.dtype.element_ty), mask=keep_a[None, :])
        tl.store(o_base + tb[None, :].to(tl.int64) * s_ot, otb.to(o_ptr.dtype.element_ty), mask=keep_b[None, :])
        S = S * gla[None, :] + tl.dot((vta * rka[None, :]).to(DOT_DT), ka, input_precision=PREC)
        S = S * glb[None, :] + tl.dot((vtb * rkb[None, :]).to(DOT_DT), kb, input_precision=PREC)
    return S


@triton.jit
def _warm_up_start(lb_ptr, b, c_first, h, warm_max, H: tl.constexpr, WARM: tl.constexpr):
    """Where a segment whose outputs start at chunk b walks from zero: the latest chunk j of at most warm_max chunks
    before b (not before the sequence's first, c_first) whose bounds lb over [j, b) sum to -SEG_FORGET or less (the
    state at b then depends on the state at j by less than 2^-SEG_FORGET of its norm); -1 if there is none (the
    segment depends on the one before: that segment's walk goes on through it). The integer bounds make the sum,
    and so the answer, the same in every program that asks."""
    i = tl.arange(0, WARM)
    j = b - WARM + i
    ok = (j >= c_first) & (i >= WARM - warm_max)
    x = tl.load(lb_ptr + j * H + h, mask=ok, other=0)
    suffix = tl.sum(x, axis=0) - tl.cumsum(x, axis=0) + x            # the bounds' sum over [j, b)
    last = tl.max(tl.where(ok & (suffix.to(tl.float32) <= -SEG_FORGET * LB_SCALE), i, -1), axis=0)
    return tl.where(last >= 0, b - WARM + last, -1)


@triton.jit
def _segment_bound(c0, c1, k, SEG: tl.constexpr):
    """The first chunk of segment k of the sequence's chunks [c0, c1) (c1 past the last; an even length each, so
    that the pair steps of a segment's outputs start where the previous segment's end)."""
    seg_len = (c1 - c0 + SEG - 1) // SEG
    seg_len += seg_len % 2
    return tl.minimum(c0 + k * seg_len, c1)


@triton.jit
def _slot_rows(state_ptr, slot, h, vc, kc, s_ss, s_sh, s_sv, FORM: tl.constexpr):
    """The addresses of the state rows ``vc`` of head h in ``slot``: [BV, K], or [K, BV] key-major (FORM 2)."""
    if FORM == 2:
        rows = vc[None, :] * s_sv + kc[:, None]
    else:
        rows = vc[:, None] * s_sv + kc[None, :]
    return state_ptr + slot.to(tl.int64) * s_ss + h * s_sh + rows


@triton.jit
def _wait_for(flag):
    """Spin until ``flag`` is set (acquire)."""
    seen = tl.atomic_add(flag, 0, sem="acquire")
    while seen == 0:
        seen = tl.atomic_add(flag, 0, sem="acquire")


@triton.jit(do_not_specialize=["warm_max"])
def _segment_start_kernel(lb_ptr, slot_ptr, chunk_off_ptr, start_ptr, warm_max, H: tl.constexpr, SEG: tl.constexpr,
                          WARM: tl.constexpr):
    """One program per (sequence, head): where each of the SEG segments of the pair's walk starts in the segments'
    launch (``_chunk_inter_kernel`` ROLE 2), into start_ptr [N, H, SEG]. Segment k > 0: the first chunk of its
    warm-up (``_warm_up_start``), or -1 when its look-back finds no forgotten state (the segment before walks on
    through it). Segment 0: the sequence's first chunk when some later segment starts on its own, else -1: the pair
    does not split, and the plain launch (ROLE 1) walks it. A null slot or an empty sequence (no bounds) does not
    split. Decided once here for every program of both launches."""
    n = tl.program_id(0)
    h = tl.program_id(1)
    c_first = tl.load(chunk_off_ptr + n)
    c_end = tl.load(chunk_off_ptr + n + 1)
    live = (tl.load(slot_ptr + n) > 0) & (c_first < c_end)
    row = start_ptr + (n * H + h) * SEG
    splits = c_first < 0
    for k in tl.static_range(1, SEG):
        b = _segment_bound(c_first, c_end, k, SEG)
        start = tl.full([], -1, tl.int32)
        if live & (b < c_end):
            start = _warm_up_start(lb_ptr, b, c_first, h, warm_max, H, WARM)
        tl.store(row + k, start)
        splits = splits | (start >= 0)
    tl.store(row, tl.where(splits, c_first, -1))


@triton.jit(do_not_specialize=["win_lo", "win_hi"])
def _chunk_inter_kernel(
    w_ptr, u_ptr, qg_ptr, kg_ptr, aqk_ptr, gl_ptr, rn_ptr,
    o_ptr, state_ptr, cu_ptr, slot_ptr, init_ptr, chunk_off_ptr, start_ptr, flag_ptr, ticket_ptr,
    s_ot, s_oh, s_ss, s_sh, s_sv, win_lo, win_hi,
    H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BT: tl.constexpr, BV: tl.constexpr,
    DOT_DT: tl.constexpr, AV_DT: tl.constexpr, PREC: tl.constexpr, FORM: tl.constexpr, SEG: tl.constexpr,
    ROLE: tl.constexpr,
):
    """One program per (sequence, head, block of value rows) walks the sequence's chunks inside the window of global
    chunk indices [win_lo, win_hi) (all of them in a launch without windows): the state starts from the slot when
    the window begins after the sequence's first chunk (an earlier window's launch left it there), else from the
    slot or zeros as ``init_ptr`` says, and goes back into the slot at the window's end. A sequence with no chunk in
    the window is left alone (an empty sequence is handled by every window alike).

    The walk in segments (``inter_segments`` = SEG > 1, "pairs" only) takes two kinds of launch, each for the
    (sequence, head) pairs the data give it (``start_ptr``: where each segment starts, from
    ``_segment_start_kernel``, which decides from the per-chunk bounds the diagonal kernel wrote for every chunk
    first): ROLE 1, window by window, walks the pairs whose sequence does not split, as above (ROLE 0: every pair, no
    segments); ROLE 2, once after every window (launched over all chunks), the others, with SEG programs per
    (sequence, head, block of value rows), one per segment of the sequence. A segment k > 0 that starts on its own
    walks from zero from its warm-up's first chunk (no outputs there) and then its own chunks: such segments run at
    once. Any other segment ends its program at once, and the walk before it goes on through its chunks: no program
    waits for another's walk. Only segment 0 reads the slot; the program whose walk reaches the sequence's end writes
    it, after segment 0 has said it read it (``flag_ptr``; ROLE 2 programs take their (sequence, segment, head, value
    block) from a ticket in the order they start, ``ticket_ptr``, so segment 0 has started by then, whatever order
    the GPU starts blocks in). Decays too slow for any warm-up thus keep the plain walk's launch and its windows (a
    long sequence's walk is latency-bound: many programs of few value rows, beside the next window's chunk kernel),
    and those that allow one take the segments (fewer loads per value row), whose programs would crowd the chunk
    kernel out of the SMs inside windows."""
    NVB: tl.constexpr = V // BV
    SPLIT: tl.constexpr = ROLE == 2
    tl.static_assert((FORM == 3) | (ROLE < 2), "segments walk with the pairs form only")
    if SPLIT:
        ticket = tl.atomic_add(ticket_ptr, 1)
        g0 = tl.num_programs(0)
        pid0 = ticket % g0
        h = (ticket // g0) % H
        vb = ticket // (g0 * H)
        n = pid0 // SEG
        sg = pid0 % SEG
    else:
        n = tl.program_id(0)
        h = tl.program_id(1)
        vb = tl.program_id(2)
        sg = 0
    c_first = tl.load(chunk_off_ptr + n)
    c_end = tl.load(chunk_off_ptr + n + 1)
    c0 = tl.maximum(c_first, win_lo)
    c1 = tl.minimum(c_end, win_hi)
    if (c0 >= c1) & (c_first < c_end):
        return
    slot = tl.load(slot_ptr + n)
    starts = start_ptr + (n * H + h) * SEG                   # ``_segment_start_kernel``'s decisions for the pair
    if ROLE > 0:
        own_start = tl.load(starts + sg)
        if (own_start >= 0) != SPLIT:
            return
    reads_slot = (tl.load(init_ptr + n) != 0) | (c0 > c_first)
    s_lo = c0                                            # the chunks whose outputs this program writes [s_lo, s_hi)
    s_hi = c1
    start = c0                                           # where its walk starts: s_lo, or before it (warm-up)
    flag = flag_ptr + (n * H + h) * NVB + vb
    if SPLIT:
        s_lo = _segment_bound(c0, c1, sg, SEG)           # (segment 0: c0, its own start)
        start = own_start
        k = sg + 1                                       # the walk ends where the next segment starts on its own
        looking = k < SEG
        while looking:
            on_own = tl.load(starts + k) >= 0
            s_hi = tl.where(on_own, _segment_bound(c0, c1, k, SEG), s_hi)
            k += 1
            looking = (on_own == 0) & (k < SEG)
    eos = tl.load(cu_ptr + n + 1)
    bos = tl.load(cu_ptr + n) + (s_lo - c_first) * BT     # the first token of the program's chunks
    rows = tl.arange(0, BT)
    vc = vb * BV + tl.arange(0, BV)
    kc = tl.arange(0, K)
    o_base = o_ptr + h * s_oh + vc[None, :]
    if slot <= 0:
        for t0 in range(bos, tl.minimum(eos, bos + (s_hi - s_lo) * BT), BT):
            tok = t0 + rows
            tl.store(o_base + tok[:, None].to(tl.int64) * s_ot, tl.zeros([BT, BV], dtype=o_ptr.dtype.element_ty),
                     mask=(tok < eos)[:, None])
        return
    if FORM == 2:                     # the state kept key-major in registers, S^T [K, BV]
        S = tl.zeros([K, BV], dtype=tl.float32)
    else:
        S = tl.zeros([BV, K], dtype=tl.float32)
    if reads_slot & (sg == 0):
        S = tl.load(_slot_rows(state_ptr, slot, h, vc, kc, s_ss, s_sh, s_sv, FORM)).to(tl.float32)
        if SPLIT:
            if s_hi < c1:
                # another program writes the slot at the sequence's end: tell it the slot has been read
                tl.debug_barrier()
                tl.atomic_xchg(flag, 1, sem="release")
    if FORM == 3:
        S = _pair_steps(S, start, s_hi, s_lo, bos - (s_lo - start) * BT, eos, h, vc, kc, w_ptr, u_ptr, qg_ptr,
                        kg_ptr, aqk_ptr, gl_ptr, rn_ptr, o_ptr, s_ot, s_oh, H, K, V, BT, DOT_DT, AV_DT, PREC, SPLIT)
    else:
        for c in range(c0, c1):
            base = (c * H + h).to(tl.int64)
            t0 = bos + (c - c0) * BT
            tok = t0 + rows
            wk = base * BT * K + rows[:, None] * K + kc[None, :]
            w = tl.load(w_ptr + wk).to(DOT_DT)
            qg = tl.load(qg_ptr + wk).to(DOT_DT)
            kg = tl.load(kg_ptr + wk).to(DOT_DT)
            u = tl.load(u_ptr + base * BT * V + rows[:, None] * V + vc[None, :]).to(tl.float32)
            aqk = tl.load(aqk_ptr + base * BT * BT + rows[:, None] * BT + rows[None, :])
            gl = tl.load(gl_ptr + base * K + kc)
            rq = tl.load(rn_ptr + base * 2 * BT + rows)
            rk = tl.load(rn_ptr + base * 2 * BT + BT + rows)
            if FORM == 2:
                # columns first with the state key-major: every product has 64 or 128 rows (Hopper's wgmma)
                st = S.to(DOT_DT)                                                     # [K, BV]
                v_new = u - tl.dot(w, st, input_precision=PREC)
                o = rq[:, None] * tl.dot(qg, st, input_precision=PREC) + \
                    tl.dot(aqk.to(AV_DT), v_new.to(AV_DT), input_precision=PREC)
                tl.store(o_base + tok[:, None].to(tl.int64) * s_ot, o.to(o_ptr.dtype.element_ty),
                         mask=(tok < eos)[:, None])
                S = S * gl[:, None] + tl.dot(tl.trans(kg), (v_new * rk[:, None]).to(DOT_DT), input_precision=PREC)
            elif FORM == 1:
                # value rows first: every product has the register-resident operand (state, v_new^T) on the left
                # and a loaded one on the right, the operand placement Hopper's tensor cores take directly
                sd = S.to(DOT_DT)
                vt = tl.trans(u) - tl.dot(sd, tl.trans(w), input_precision=PREC)              # v_new^T [BV, BT]
                ot = rq[None, :] * tl.dot(sd, tl.trans(qg), input_precision=PREC) + \
                    tl.dot(vt.to(AV_DT), tl.trans(aqk.to(AV_DT)), input_precision=PREC)
                tl.store(o_ptr + h * s_oh + vc[:, None] + tok[None, :].to(tl.int64) * s_ot,
                         ot.to(o_ptr.dtype.element_ty), mask=(tok < eos)[None, :])
                S = S * gl[None, :] + tl.dot((vt * rk[None, :]).to(DOT_DT), kg, input_precision=PREC)
            else:
                st = tl.trans(S.to(DOT_DT))                                           # [K, BV]
                v_new = u - tl.dot(w, st, input_precision=PREC)
                o = rq[:, None] * tl.dot(qg, st, input_precision=PREC) + \
                    tl.dot(aqk.to(AV_DT), v_new.to(AV_DT), input_precision=PREC)
                tl.store(o_base + tok[:, None].to(tl.int64) * s_ot, o.to(o_ptr.dtype.element_ty),
                         mask=(tok < eos)[:, None])
                vk = (v_new * rk[:, None]).to(DOT_DT)                             # KG holds raw k: fold its norm here
                S = S * gl[None, :] + tl.dot(tl.trans(vk), kg, input_precision=PREC)
    # the slot's addresses again from a fresh load of its index: [BV, K] 64-bit offsets kept across the walk would
    # hold registers the steps need (the walk's stores keep the compiler from reusing the first load)
    slot = tl.load(slot_ptr + n)
    if s_hi == c1:                                       # this walk reached the window's (segments: sequence's) end
        if SPLIT:
            if (sg > 0) & reads_slot:
                _wait_for(flag)                          # segment 0 is done with the slot
        tl.store(_slot_rows(state_ptr, slot, h, vc, kc, s_ss, s_sh, s_sv, FORM), S.to(state_ptr.dtype.element_ty))


def as_heads(x, H, D):
    """[T, H, D] view with a unit last stride (copies only if the last dim is strided)."""
    x = x.view(x.shape[0], H, D) if x.dim() == 2 else x
    return x if x.stride(-1) == 1 else x.contiguous()


# Launch settings per input dtype; the benchmark may override them through ``_config``. "diag_bk", "diag_warps" (the
# diagonal kernel's reference launches: the whole block's and by halves), "fallback_form" (by halves over 16-token
# chunks, where it was measured; the walk over 64), "fallback_warps" (its walk launches) and "BVI" take one value or
# one per chunk length. "inter_form" None: "pairs" over 16-token chunks, "rows" over 64; "BV", "inter16_warps",
# "inter16_stages" None: by batch shape (``inter16_launch`` over 16-token chunks, ``inter_block_v`` for "BV" over
# 64); "overlap_windows" (16-token chunks; None: by batch shape, ``overlap_window_count``) launches the chunk kernel
# and the sequential walk in that many windows of chunks, each window's walk on a second stream beside the next
# window's chunk kernel (``_in_windows``; the diagonal kernel runs first, over every chunk); "inter_segments" (1: off),
# "segment_warmup" (the most chunks a segment looks back) and "segment_launch" (value rows, warps, stages of the
# segments' launch): the walk in segments where the decays allow (``_chunk_inter_kernel``); None (the default): by
# batch shape, ``segment_count`` (one long sequence only: more sequences were slower with them).
# Fast-path defaults from the H100 comparison of 2026-11-23 (benchmarks/RESULTS.md, profile_kda_prefill.py): the
# value-rows-first sequential step with bf16 state products, 64 value rows per program and 8 warps; the intra
# kernel's W/U loops from the H200 comparison of 2026-11-30 (seventh session); the reference-row pairs with the
# walk for out-of-range blocks (eighth session); 16-token chunks for every batch shape with their pairs from the
# diagonal kernel, 32 key columns at a time (ninth session); the reference-row launch on 1 warp stopping at the
# first key slice out of range, and the sequential walk two chunks a step with its launch by batch shape (tenth
# session; the 64-token path keeps its own measured settings); the reference of the tensor-core pairs halfway
# between a sub-block's first and last rows' decays and U in one 128-column product (eleventh session); overlap
# windows where the walks fit one wave and the reference pairs' exponents to +-124 with the finite check (twelfth
# session: anchors' gates 64x512 4.341 -> 4.143 ms, 1x32768 4.695 -> 4.489; o error 2.16e-3 -> 2.24e-3); the pairs by
# halves for the blocks out of the whole block's range before the walk (thirteenth session: anchors' gates 1x32768
# 4.476 -> 3.930 ms, 64x512 4.131 -> 3.560; o error 2.24e-3 -> 2.43e-3, vLLM's 3.91e-3); the walk's slot addresses
# formed again after the walk, not kept across it (fourteenth session: spills of the 64-row launch 128 -> 16;
# 256x128 3.861 -> 3.737 ms with the anchors' gates, 3.549 -> 3.425 with fla-init gates); the walk in 4 segments
# for one long sequence (fifteenth session: anchors' gates 1x32768 3.911 -> 3.558 ms, fla-init gates 3.505 -> 3.537).
_FAST = dict(chunk=BC, chunk16_warps=4, BK=16, diag_warps={BC: 1, BT: 4}, fallback_warps=4,
             diag_form="reference", fallback_form={BC: "halves", BT: "walk"}, diag_early_out=True,
             diag_ref="balanced", diag_range=124.0, diag_bk={BC: 32, BT: None}, prec_d="tf32", BVI={BC: 128, BT: 32},
             BV=None, ws_dtype=None, inter16_warps=None, inter16_stages=None, overlap_windows=None,
             ek_dtype=torch.float16,
             u_dtype=torch.float32, aqk_dtype=torch.float32, prec_a="tf32", prec_m="tf32", prec_o="tf32",
             inter_dot="bf16", inter_av="fp32", inter_form=None, inter_prec="tf32",
             intra_warps=4, intra_stages=3, inter_warps=8, inter_stages=2, inter_segments=None, segment_warmup=64,
             segment_launch=(64, 4, 3))
_EXACT = dict(_FAST, ws_dtype=torch.float32, ek_dtype=torch.float32, prec_a="ieee", prec_d="ieee", prec_m="ieee",
              prec_o="ieee", diag_range=96.0,       # factors far from 2^-126 (no subnormal ever near a kept pair)
              inter_dot="fp32", inter_prec="ieee", BV=32, inter_warps=4,
              inter16_warps=4, inter16_stages=3,   # fp32 state products spill already at 4 warps; 2 would spill more
              segment_launch=(32, 4, 3))


def _diag_form(form: str) -> int:
    """``_config["diag_form"]`` as the diagonal kernel's FORM flag."""
    forms = {"walk": 0, "product": 1, "reference": 3, "halves": 4}
    if form not in forms:
        raise ValueError(f"diag_form={form!r}: expected one of {sorted(forms)}")
    return forms[form]


def inter_block_v(n_walks: int, V: int, sms: int) -> int:
    """Value rows per program of the sequential kernel over 64-token chunks when none is configured: 64, halved
    while twice the programs still fit in one wave (a single long sequence: 32 heads x 2 programs would leave half
    the H100 idle; measured 1.36 ms at BV 32 against 1.90 ms at BV 64 for 1x32768, and slower at BV 16)."""
    bv = 64
    while bv > 16 and 2 * n_walks * (V // bv) <= sms:
        bv //= 2
    return bv


def inter16_launch(n_walks: int, V: int, sms: int) -> tuple[int, int, int]:
    """The sequential kernel's (value rows, warps, pipeline stages) over 16-token chunks when none is configured.
    While the walks at 32 value rows a program fit in one wave (latency-bound: one long sequence at H = 32), 16 rows
    on 2 warps with 4 stages (twice the programs, two an SM): 1x32768 4.81 ms against 5.36 at 32 rows on 2 warps
    (H200, 2026-11-30, tenth session; "pairs" form, anchors' gates); else 64 rows on 4 warps with 3 stages."""
    if _walks_fit_one_wave(n_walks, V, sms):
        return min(16, V), 2, 4
    return min(64, V), 4, 3


def _walks_fit_one_wave(n_walks: int, V: int, sms: int) -> bool:
    """Whether the sequential walks at 32 value rows a program fit in one wave: the latency-bound case (one long
    sequence at H = 32) that ``inter16_launch`` and ``overlap_window_count`` treat apart."""
    return n_walks * max(V // 32, 1) <= sms


def _inter16_launch(n_walks: int, V: int, sms: int, cfg: dict) -> tuple[int, int, int]:
    """``inter16_launch`` with any of the configured ``BV``, ``inter16_warps``, ``inter16_stages`` in its place (a
    configured ``BV`` of more than 16 rows without configured warps takes at least 4: 32 or 64 rows on 2 warps spill
    on sm_90a)."""
    bv, warps, stages = inter16_launch(n_walks, V, sms)
    if cfg["BV"]:
        bv = min(cfg["BV"], V)
        warps = warps if bv <= 16 else max(warps, 4)
    return bv, cfg["inter16_warps"] or warps, cfg["inter16_stages"] or stages


def overlap_window_count(n_walks: int, V: int, sms: int, n_chunks: int) -> int:
    """Windows of 16-token chunks for ``overlap_windows=None`` (the default): while the sequential walks fit one wave
    (``inter16_launch``'s latency-bound case: one long sequence at H = 32), up to 8 windows of at least 128 chunks,
    each window's walk beside the next window's chunk kernel; else 1 (the walks fill the GPU themselves). H200,
    2026-11-30 (twelfth session), 1x32768: 4.883 -> 4.701 ms with the anchors' gates, 3.741 -> 3.536 with fla-init
    gates (16 windows the same); 8x4096: 3.79 -> 5.33 ms with 8 windows."""
    if not _walks_fit_one_wave(n_walks, V, sms):
        return 1
    return max(1, min(8, n_chunks // 128))


SEGMENTS = 4              # inter_segments=None: the segments per sequence where ``segment_count`` takes any
SEGMENT_MIN_CHUNKS = 512  # ... and the fewest chunks (the host's bound) a batch must hold for it


def segment_count(n_walks: int, V: int, sms: int, n_chunks: int) -> int:
    """Segments of the sequential walk for ``inter_segments=None`` (the default, 16-token chunks): ``SEGMENTS`` while
    the walks fit one wave (``_walks_fit_one_wave``: one long sequence at H = 32) and the batch holds at least
    ``SEGMENT_MIN_CHUNKS`` chunks, else 1 (off). H200, 2026-12-01 (fifteenth session), vLLM / off / 4 segments ms,
    anchors' gates: 1x32768 5.401 / 3.911 / 3.558, 1x16384 2.712 / 2.002 / 1.878, 1x8192 1.391 / 1.032 / 0.974;
    fla-init gates, where no pair splits: 1x32768 5.393 / 3.505 / 3.537, 1x8192 1.393 / 0.948 / 0.971. More
    sequences (8x4096) were slower with segments (fourteenth session)."""
    if not _walks_fit_one_wave(n_walks, V, sms) or n_chunks < SEGMENT_MIN_CHUNKS:
        return 1
    return SEGMENTS


def prefill_warmups(H: int, V: int, device, chunk: int | None = None) -> list[tuple[int, dict]]:
    """(sequences, settings) of the short prefills that together compile every kernel variant the fast path may
    launch with ``chunk``-token chunks: one per ``prefill_variant_batches`` count, plus, where a batch of that many
    sequences may take segments (``segment_count`` for a long enough batch), the same count with the segments asked
    for (a one-token sequence then launches the segment kernels without being long)."""
    chunk = chunk or _FAST["chunk"]
    runs = []
    for n in prefill_variant_batches(H, V, device, chunk):
        runs.append((n, {}))
        if chunk == BC and _FAST["inter_segments"] is None and segment_count(n * H, V, num_sms(device),
                                                                               SEGMENT_MIN_CHUNKS) > 1:
            runs.append((n, {"inter_segments": SEGMENTS}))
    return runs


def prefill_variant_batches(H: int, V: int, device, chunk: int | None = None) -> list[int]:
    """The smallest number of sequences for each launch of the sequential kernel the fast path may pick with
    ``chunk``-token chunks (None: the fast path's default; ``inter16_launch`` over 16, ``inter_block_v`` over 64;
    the step form and the kernels before it do not depend on the batch): a warm-up that runs a prefill with each of
    these counts compiles every variant the fast path can launch."""
    sms = num_sms(device)
    chunk = chunk or _FAST["chunk"]
    launch = (lambda n: inter16_launch(n * H, V, sms)) if chunk == BC else (lambda n: inter_block_v(n * H, V, sms))
    first: dict = {}
    n = 1
    while True:
        first.setdefault(launch(n), n)
        if launch(n) == launch(1 << 30):
            return sorted(first.values())
        n += 1


def chunk_kda_prefill(q, k, v, g_raw, beta, A_log, dt_bias, scale, recurrent_state, state_indices,
                      has_initial_state, cu_seqlens, out=None, _config=None):
    """KDA over varlen sequences with the state in paged slots, updated in place.

    q, k: [T, H, K] raw (normalised inside); v: [T, H, V]; g_raw: [T, H, K] gate pre-activation
    (before dt_bias); beta: [T, H] (already a sigmoid); A_log: H elements; dt_bias: [H*K];
    recurrent_state: [num_slots, H, V, K] (fp32 or bf16, last dim contiguous); state_indices: int32 [N]
    (slot <= 0: the sequence is skipped, its outputs are zero, no slot is touched);
    has_initial_state: bool [N] (False: start from zeros, the slot is only written);
    cu_seqlens: int32 [N + 1] on the device. Returns o [T, H, V] in v's dtype, or writes it into ``out``
    ([T, H, V], last dim contiguous) when given.

    bf16/fp16 inputs run the fast path (bf16 intermediates, tf32 products); fp32 inputs run every
    product in full fp32 (slower; for tests and checks). No device-to-host synchronisation.
    Workspace for K = V = 128 on the fast path: ~24 KB per (16-token chunk, head), i.e. ~47 KB per token at
    H = 32 (0.8 GB for a 16384-token batch); ~124 KB per (64-token chunk, head) with 64-token chunks (~62 KB per
    token); allocated per call from torch's caching allocator.
    """
    T, H, K = q.shape
    V = v.shape[-1]
    N = state_indices.shape[0]
    dev = q.device
    cfg = dict(_EXACT if q.dtype == torch.float32 else _FAST)
    unknown = set(_config or ()) - set(cfg) - {"skip_inter"}
    if unknown:
        raise ValueError(f"_config keys {sorted(unknown)} are not prefill settings: expected some of {sorted(cfg)}")
    if _config:
        cfg.update(_config)
    assert K in (16, 32, 64, 128, 256) and V in (16, 32, 64, 128, 256), "K and V must be powers of two"
    assert recurrent_state.stride(-1) == 1 and recurrent_state.shape[1:] == (H, V, K)
    q, k, g_raw = as_heads(q, H, K), as_heads(k, H, K), as_heads(g_raw, H, K)
    v = as_heads(v, H, V)
    o = torch.empty(T, H, V, dtype=v.dtype, device=dev) if out is None else out
    assert o.shape == (T, H, V) and o.stride(-1) == 1
    if T == 0 or N == 0:
        return o.zero_()
    ws_dtype = cfg["ws_dtype"] or q.dtype
    bt = cfg["chunk"]
    if bt not in (BC, BT):
        raise ValueError(f"chunk={bt!r}: expected {BT} or {BC} tokens")
    bk, bvi = min(cfg["BK"], K), min(_per_chunk(cfg["BVI"], bt), V)
    _check_diag_settings(cfg, K, bt)              # before any launch (and before the windows' stream fork)
    cu = cu_seqlens.to(torch.int32)
    nch = (cu[1:] - cu[:-1] + bt - 1) // bt
    chunk_off = torch.zeros(N + 1, dtype=torch.int32, device=dev)
    chunk_off[1:] = torch.cumsum(nch, 0)
    nchb = T // bt + N                                   # host bound on the number of chunks
    chunk_seq = torch.searchsorted(chunk_off[1:], torch.arange(nchb, dtype=torch.int32, device=dev),
                                   right=True, out_int32=True)
    w = torch.empty(nchb, H, bt, K, dtype=ws_dtype, device=dev)
    qg = torch.empty_like(w)
    kg = torch.empty_like(w)
    u = torch.empty(nchb, H, bt, V, dtype=cfg["u_dtype"], device=dev)
    aqk = torch.empty(nchb, H, bt, bt, dtype=cfg["aqk_dtype"], device=dev)
    gl = torch.empty(nchb, H, K, dtype=torch.float32, device=dev)
    rn = torch.empty(nchb, H, 2, bt, dtype=torch.float32, device=dev)         # 1/|q|, 1/|k| per token
    slots = state_indices.to(torch.int32)
    a_log = A_log.reshape(-1).to(torch.float32)
    dtb = dt_bias.reshape(-1).to(torch.float32)
    strides = (q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1),
               g_raw.stride(0), g_raw.stride(1), beta.stride(0), beta.stride(1))
    # The sequential step's layout ("inter_form": "pairs" two 16-token chunks a step, value rows first, the default
    # over 16-token chunks; "rows" value rows first, the default over 64-token chunks; "cols" token rows first;
    # "cols_kmajor" token rows first with the state key-major) and operand types ("inter_dot" for the products with
    # the state, "inter_av" for Aqk v_new). bf16 state products measured on the H100: o error unchanged (1.98e-3),
    # final state 1.75e-3 (tf32: 8.6e-4; vLLM 2.7e-3). bf16 Aqk v_new products gave wrong outputs with the "cols"
    # layout (Triton 3.6, not root-caused), so "inter_av" stays fp32.
    if bt == BC:
        bv, warps, stages = _inter16_launch(N * H, V, num_sms(dev), cfg)
    else:
        bv = min(cfg["BV"] or inter_block_v(N * H, V, num_sms(dev)), V)
        warps, stages = cfg["inter_warps"], cfg["inter_stages"]
    dts = {"fp32": tl.float32, "bf16": tl.bfloat16}
    forms = {"cols": 0, "rows": 1, "cols_kmajor": 2, "pairs": 3}
    form = forms.get(cfg["inter_form"] or ("pairs" if bt == BC else "rows"))
    if form is None or (form == 3 and bt != BC):
        raise ValueError(f"inter_form={cfg['inter_form']!r}: expected one of {sorted(forms)} ('pairs' with "
                         f"{BC}-token chunks only)")
    n_win = cfg["overlap_windows"]
    if n_win is not None and (not isinstance(n_win, int) or isinstance(n_win, bool) or n_win < 1 or
                              (n_win > 1 and bt != BC)):
        raise ValueError(f"overlap_windows={n_win!r}: expected None (by batch shape) or a whole number >= 1 (above 1 "
                         f"with {BC}-token chunks only)")
    if n_win is None:
        n_win = overlap_window_count(N * H, V, num_sms(dev), nchb) if bt == BC else 1
    if recurrent_state.dtype != torch.float32:
        n_win = 1            # each window boundary would round the carried state to the slots' dtype once more
    n_seg, warm_max, (bv_s, warps_s, stages_s) = _segment_settings(cfg, form, V)
    if n_seg is None:
        n_seg = segment_count(N * H, V, num_sms(dev), nchb) if form == 3 else 1
    lb = torch.empty(nchb, H, dtype=torch.int32, device=dev) if n_seg > 1 else None
    seg_start = torch.empty(N, H, n_seg, dtype=torch.int32, device=dev) if n_seg > 1 else None
    # the segments' slot-read flags per (sequence, head, value block), then their ticket counter
    flags = (torch.zeros(N * H * (V // bv_s) + 1, dtype=torch.int32, device=dev) if n_seg > 1 else
             torch.empty(1, dtype=torch.int32, device=dev))
    consts = dict(H=H, K=K, V=V, BT=bt, DOT_DT=dts[cfg["inter_dot"]], AV_DT=dts[cfg["inter_av"]],
                  PREC=cfg["inter_prec"], FORM=form, SEG=n_seg)

    def walk(lo, hi, role):
        args = (w, u, qg, kg, aqk, gl, rn, o, recurrent_state, cu, slots, has_initial_state, chunk_off,
                flags if seg_start is None else seg_start, flags, flags[-1:], o.stride(0), o.stride(1),
                recurrent_state.stride(0), recurrent_state.stride(1), recurrent_state.stride(2), lo, hi)
        if role < 2:
            _chunk_inter_kernel[(N, H, V // bv)](*args, BV=bv, ROLE=role, **consts, num_warps=warps,
                                                 num_stages=stages)
        else:
            _chunk_inter_kernel[(N * n_seg, H, V // bv_s)](*args, BV=bv_s, ROLE=2, **consts, num_warps=warps_s,
                                                           num_stages=stages_s)

    def sequential(lo, hi):
        # with segments: the walks of the (sequence, head) pairs that do not split, window by window
        if not cfg.get("skip_inter"):          # benchmarking aid: time the parallel kernels alone
            walk(lo, hi, int(n_seg > 1))

    if bt == BC:
        dd, done = _diag_workspace(nchb, H, BC, cfg, dev)
        _diag_pairs(q, k, g_raw, a_log, dtb, cu, slots, chunk_seq, chunk_off, N, nchb, BC, cfg, dd, done, lb)
        if n_seg > 1:                          # where each pair's segments start, before any window's walk
            _segment_start_kernel[(N, H)](lb, slots, chunk_off, seg_start, warm_max, H=H, SEG=n_seg,
                                          WARM=triton.next_power_of_2(max(warm_max, 1)))

        def parallel(lo, hi):
            _chunk16_kernel[(hi - lo, H)](
                q, k, v, g_raw, beta, a_log, dtb, cu, slots, chunk_seq, chunk_off, w, u, qg, kg, aqk, gl, rn, dd,
                *strides, N, float(scale), lo, H=H, K=K, V=V, BC=BC, BVI=bvi, PREC_M=cfg["prec_m"],
                PREC_O=cfg["prec_o"], num_warps=cfg["chunk16_warps"])

        _in_windows(dev, chunk_windows(nchb, n_win), parallel, sequential)
        if n_seg > 1 and not cfg.get("skip_inter"):
            walk(0, nchb, 2)                   # the pairs that split, whole sequences at once, after every window
    else:
        _chunk_parallel(q, k, v, g_raw, beta, a_log, dtb, cu, slots, chunk_seq, chunk_off, w, u, qg, kg, aqk, gl, rn,
                        strides, N, scale, nchb, cfg, bk, bvi)
        sequential(0, nchb)
    return o


def _segment_settings(cfg: dict, form: int, V: int) -> tuple[int | None, int, tuple[int, int, int]]:
    """``inter_segments`` (the sequential walk split into that many segments per sequence where the data allow,
    walked at once; 1: off; None: by batch shape, ``segment_count``), ``segment_warmup`` (the most chunks a segment
    looks back for a warm-up from zero) and ``segment_launch`` (the segments' launch: value rows, warps, stages),
    checked."""
    n_seg, warm, launch = cfg["inter_segments"], cfg["segment_warmup"], cfg["segment_launch"]
    if n_seg is not None and (not isinstance(n_seg, int) or isinstance(n_seg, bool) or n_seg < 1 or
                              (n_seg > 1 and form != 3)):
        raise ValueError(f"inter_segments={n_seg!r}: expected None (by batch shape, with inter_form 'pairs') or a "
                         f"whole number >= 1 (above 1 with inter_form 'pairs' only)")
    if not isinstance(warm, int) or isinstance(warm, bool) or not 0 <= warm <= 1024:
        raise ValueError(f"segment_warmup={warm!r}: expected a whole number of chunks from 0 to 1024 (the look-back "
                         f"loads them at once)")
    if (not isinstance(launch, tuple) or len(launch) != 3 or launch[0] not in (16, 32, 64, 128) or
            launch[1] not in (1, 2, 4, 8) or launch[2] not in (1, 2, 3, 4)):
        raise ValueError(f"segment_launch={launch!r}: expected (value rows 16/32/64/128, warps 1/2/4/8, stages 1-4)")
    return n_seg, warm, (min(launch[0], V), launch[1], launch[2])


def chunk_windows(n_chunks: int, n_windows: int) -> list[tuple[int, int]]:
    """[lo, hi) ranges of global chunk indices splitting ``n_chunks`` (the host's bound on the chunk count, so with
    many short sequences the last windows may hold few real chunks) into at most ``n_windows`` windows of an even
    number of chunks each, the last one shorter (a sequence starting at an even chunk then steps in whole pairs)."""
    size = -(-n_chunks // n_windows)
    size += size % 2
    return [(lo, min(lo + size, n_chunks)) for lo in range(0, n_chunks, size)]


_SIDE_STREAMS: dict = {}


def _in_windows(dev, windows, parallel, sequential):
    """``parallel(lo, hi)`` for each window of chunks in order on the current stream, and ``sequential(lo, hi)`` for
    each on a second stream once its window's parallel work is done, so that the sequential walk over one window runs
    beside the parallel kernels of the next (``overlap_windows``; the walks of a window start from the states the
    previous window's walks left in the slots, so the second stream keeps them in order). The current stream waits
    for the second at the end; graph capture sees a fork and a join. One window, or a CPU: both in turn. (The second
    stream at high priority was no faster: H200, 2026-11-30, twelfth session.)"""
    if dev.type != "cuda" or len(windows) == 1:
        for lo, hi in windows:
            parallel(lo, hi)
            sequential(lo, hi)
        return
    main = torch.cuda.current_stream(dev)
    if dev.index not in _SIDE_STREAMS:
        _SIDE_STREAMS[dev.index] = torch.cuda.Stream(dev)
    side = _SIDE_STREAMS[dev.index]
    side.wait_stream(main)                   # inputs, workspace and slots as the current stream left them
    try:
        for lo, hi in windows:
            parallel(lo, hi)
            done = torch.cuda.Event()
            done.record(main)
            side.wait_event(done)
            with torch.cuda.stream(side):
                sequential(lo, hi)
    finally:
        main.wait_stream(side)               # joined even when a launch raises (a capture must not end forked)


def _chunk_parallel(q, k, v, g_raw, beta, a_log, dtb, cu, slots, chunk_seq, chunk_off, w, u, qg, kg, aqk, gl, rn,
                    strides, N, scale, nchb, cfg, bk, bvi):
    """The parallel work of 64-token chunks: the diagonal kernel's 16x16 pair blocks, then the intra kernel."""
    H, K = q.shape[1:]
    V = v.shape[-1]
    dev = q.device
    ek = torch.empty(nchb, H, BT, K, dtype=cfg["ek_dtype"], device=dev)      # 2^G k, pass 1 -> pass 2
    dd, done = _diag_workspace(nchb, H, BT, cfg, dev)
    _diag_pairs(q, k, g_raw, a_log, dtb, cu, slots, chunk_seq, chunk_off, N, nchb, BT, cfg, dd, done)
    _chunk_intra_kernel[(nchb, H)](
        q, k, v, g_raw, beta, a_log, dtb, cu, slots, chunk_seq, chunk_off,
        w, u, qg, kg, aqk, gl, ek, rn, dd, *strides,
        N, float(scale), H=H, K=K, V=V, BT=BT, BC=BC, BK=bk, BVI=bvi,
        PREC_A=cfg["prec_a"], PREC_M=cfg["prec_m"], PREC_O=cfg["prec_o"],
        num_warps=cfg["intra_warps"], num_stages=cfg["intra_stages"])


def _diag_workspace(nchb, H, bt, cfg, device):
    """The diagonal kernel's outputs for ``nchb`` chunks of ``bt`` tokens: the pair blocks [nchb, H, 2, bt, BC] (kk,
    qk) and, for the reference forms, their per-item in-range flags."""
    dd = torch.empty(nchb, H, 2, bt, BC, dtype=torch.float32, device=device)
    items = nchb * (bt // BC) * H
    done = torch.empty(items if _diag_form(cfg["diag_form"]) >= 3 else 1, dtype=torch.int8, device=device)
    return dd, done


def _diag_pairs(q, k, g_raw, a_log, dtb, cu, slots, chunk_seq, chunk_off, N, nchb, bt, cfg, dd, done, lb=None):
    """The pairs inside every 16-token sub-block of the ``nchb`` chunks (of ``bt`` tokens) into ``dd``:
    ``_chunk_diag_kernel`` in the configured form; a reference form launches again for the blocks it left out of
    range (``_diag_launches``). With ``lb`` (16-token chunks, segments on) the first launch also writes each chunk's
    state-transfer bound there."""
    H, K = q.shape[1:]
    form, fallback = _diag_form(cfg["diag_form"]), _diag_form(_per_chunk(cfg["fallback_form"], bt))
    per_chunk = (bt // BC) * H
    bkd = _diag_key_slice(cfg, K, bt)
    for i, (f, skip_done) in enumerate(_diag_launches(form, fallback)):
        _chunk_diag_kernel[(nchb * per_chunk,)](
            q, k, g_raw, a_log, dtb, cu, slots, chunk_seq, chunk_off, dd, done, done if lb is None else lb,
            q.stride(0), q.stride(1), k.stride(0), k.stride(1), g_raw.stride(0), g_raw.stride(1), N,
            H=H, K=K, BT=bt, BC=BC, FORM=f, RANGE=cfg["diag_range"], PREC=cfg["prec_d"], SKIP_DONE=skip_done,
            BKD=bkd if f >= 3 else K,   # the elementwise walks take whole rows
            EARLY_OUT=cfg["diag_early_out"] and f >= 3, BALANCED=cfg["diag_ref"] == "balanced",
            BOUND=lb is not None and i == 0,
            num_warps=_per_chunk(cfg["diag_warps" if f >= 3 else "fallback_warps"], bt))


def _diag_launches(form: int, fallback: int) -> list[tuple[int, bool]]:
    """The diagonal kernel's launches as (FORM, SKIP_DONE): a walk form alone; a reference form (3, or 4 "halves"),
    then its fallback for the blocks it left out of range. The "halves" fallback after the whole block's reference
    is itself a reference form: the walk follows it for the blocks out of the halves' range too."""
    if form < 3:
        return [(form, False)]
    if fallback == 4:
        return [(form, False), (4, True), (0, True)]
    return [(form, False), (fallback, True)]


def _diag_key_slice(cfg, K, bt):
    """The key columns the diagonal kernel's reference pass takes at a time: ``diag_bk`` for this
    chunk length, None meaning the whole key width."""
    return min(_per_chunk(cfg["diag_bk"], bt) or K, K)


def _check_diag_settings(cfg, K, bt):
    """The diagonal kernel's settings, checked (ValueError naming the bad value and what is allowed)."""
    _diag_form(cfg["diag_form"])
    bkd = _diag_key_slice(cfg, K, bt)
    if bkd < 16 or K % bkd or bkd & (bkd - 1):
        raise ValueError(f"diag_bk={bkd!r}: expected a power of two from 16 to the key width {K} (or None: all of it)")
    fallback = _per_chunk(cfg["fallback_form"], bt)
    if _diag_form(fallback) not in (0, 1, 4) or cfg["diag_form"] == fallback == "halves":
        raise ValueError(f"fallback_form={fallback!r}: expected 'walk', 'product' or 'halves' (this one after "
                         f"diag_form='reference' only)")
    if cfg["diag_ref"] not in ("row", "balanced"):
        raise ValueError(f"diag_ref={cfg['diag_ref']!r}: expected 'row' or 'balanced'")


def _per_chunk(value, bt):
    """A launch setting given once or per chunk length ({16: .., 64: ..})."""
    return value[bt] if isinstance(value, dict) else value
