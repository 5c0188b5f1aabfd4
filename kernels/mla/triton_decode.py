"""Absorbed MLA decode over the paged latent cache, as Triton kernels (split-K, "flash-decoding").

One query token per sequence n, already mapped into latent space (q_lat = W_UK^T q_nope). For each
head h and each cached position t < seq_lens[n], with the row [c_t | k_pe_t] of ``kv_cache``:

    s_t = (q_lat . c_t + q_pe . k_pe_t) * scale,   p = softmax_t(s),   o_lat = sum_t p_t c_t

Stage 1 gives each program one sequence, a group of BLOCK_H heads and one split (a contiguous run of
positions); it streams that run's rows once for all its heads, keeping a running max m, sum l and
accumulator (fp32), and writes them as a partial. Stage 2 merges the splits of each (sequence, head).
With one split, stage 1 writes the final result and stage 2 is skipped. An fp8 (e4m3) cache holds
``value / k_scale``; the kernel reads the raw fp8 values and applies k_scale to the scores and output.

Reading the cache: with pages of at least PAGE_LOOP_MIN_TILES tiles (vLLM gives this model ~1888-token
blocks), a split walks its pages one by one, with one block-table load per page. The tile loads of the
inner loop then depend on no load of that loop, and Triton multi-buffers them. Small pages use a flat loop
with a lookup per position. fp8 tiles and flat-loop tiles are prefetched one tile ahead into registers
instead, because Triton's pipelining covers neither (except 16-bit flat-loop tiles at their default launch, 32
tokens on 4 warps, two programs an SM: there the prefetch costs more than it saves). Opt-in (``tma=True``,
untimed): tiles fetched through TMA descriptors of the cache, which Triton multi-buffers in shared memory for fp8
tiles too.
"""

import torch
import triton
import triton.language as tl

from kernels.device import num_sms

LOG2E = 1.4426950408889634     # scores run in log2 units (exp2); lse is turned back by * ln 2
MIN_TOKENS_PER_SPLIT = 256     # a split shorter than this costs more in partials than it saves
MAX_SPLITS = 256
PAGE_LOOP_MIN_TILES = 4        # pages of at least this many tiles take the page-by-page loop
SPLIT_OVERHEAD_TOKENS = 200    # a split's fixed cost (q, partials, pipeline fill) in cache positions, estimated
COMBINE_ELEMENTS = 8192        # partial values a merge program loads at once (64 a thread at four warps)


@triton.jit
def _load_tile(row, t_ok, offs_l, offs_r, l_ok, r_ok, L: tl.constexpr, R: tl.constexpr, BLOCK_L: tl.constexpr,
               BLOCK_R: tl.constexpr):
    """The latent part c and the position part k_pe of the cached rows at ``row`` (masked rows read as 0)."""
    if BLOCK_L == L:
        c = tl.load(row[:, None] + offs_l[None, :], mask=t_ok[:, None], other=0.0)
    else:
        c = tl.load(row[:, None] + offs_l[None, :], mask=t_ok[:, None] & l_ok[None, :], other=0.0)
    if BLOCK_R == R:
        kpe = tl.load(row[:, None] + L + offs_r[None, :], mask=t_ok[:, None], other=0.0)
    else:
        kpe = tl.load(row[:, None] + L + offs_r[None, :], mask=t_ok[:, None] & r_ok[None, :], other=0.0)
    return c, kpe


@triton.jit
def _row_addresses(kv_ptr, bt_row, tok, end, s_kv_blk, s_kv_row, BLOCK_SIZE: tl.constexpr):
    """Addresses of the cached rows of positions ``tok`` (one block-table lookup each; past ``end``: block 0)."""
    page = tl.load(bt_row + tok // BLOCK_SIZE, mask=tok < end, other=0).to(tl.int64)
    return kv_ptr + page * s_kv_blk + (tok % BLOCK_SIZE).to(tl.int64) * s_kv_row


@triton.jit
def _rows(base, p0, bt_row, tok, hi, s_kv_blk, s_kv_row, BLOCK_SIZE: tl.constexpr, LOOKUP: tl.constexpr):
    """Addresses of the cached rows of positions ``tok``: inside one page starting at position p0 whose rows
    begin at ``base``, or (LOOKUP) through one block-table lookup per position, from the cache at ``base``."""
    if LOOKUP:
        return _row_addresses(base, bt_row, tok, hi, s_kv_blk, s_kv_row, BLOCK_SIZE)
    return base + (tok - p0).to(tl.int64) * s_kv_row


@triton.jit
def _attend_range(q, qp, base, p0, bt_row, lo, hi, m, l_sum, acc, offs_l, offs_r, l_ok, r_ok, score_mul,
                  s_kv_blk, s_kv_row, L: tl.constexpr, R: tl.constexpr, BLOCK_L: tl.constexpr,
                  BLOCK_R: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_SIZE: tl.constexpr,
                  DOT_PRECISION: tl.constexpr, TOKENS_AS_ROWS: tl.constexpr, PREFETCH: tl.constexpr,
                  LOOKUP: tl.constexpr):
    """Fold positions [lo, hi) into the running softmax state, BLOCK_N at a time (rows found as ``_rows``
    says). PREFETCH issues the next tile's loads into registers before the current tile's products."""
    if PREFETCH:
        tok = lo + tl.arange(0, BLOCK_N)
        c_nx, kpe_nx = _load_tile(_rows(base, p0, bt_row, tok, hi, s_kv_blk, s_kv_row, BLOCK_SIZE, LOOKUP),
                                  tok < hi, offs_l, offs_r, l_ok, r_ok, L, R, BLOCK_L, BLOCK_R)
        for t0 in range(lo, hi, BLOCK_N):
            c, kpe = c_nx, kpe_nx
            nxt = t0 + BLOCK_N + tl.arange(0, BLOCK_N)
            c_nx, kpe_nx = _load_tile(_rows(base, p0, bt_row, nxt, hi, s_kv_blk, s_kv_row, BLOCK_SIZE, LOOKUP),
                                      nxt < hi, offs_l, offs_r, l_ok, r_ok, L, R, BLOCK_L, BLOCK_R)
            tok = t0 + tl.arange(0, BLOCK_N)
            m, l_sum, acc = _attend(q, qp, c, kpe, tok < hi, m, l_sum, acc, score_mul, DOT_PRECISION,
                                    TOKENS_AS_ROWS)
    else:
        for t0 in range(lo, hi, BLOCK_N):
            tok = t0 + tl.arange(0, BLOCK_N)
            t_ok = tok < hi
            c, kpe = _load_tile(_rows(base, p0, bt_row, tok, hi, s_kv_blk, s_kv_row, BLOCK_SIZE, LOOKUP), t_ok,
                                offs_l, offs_r, l_ok, r_ok, L, R, BLOCK_L, BLOCK_R)
            m, l_sum, acc = _attend(q, qp, c, kpe, t_ok, m, l_sum, acc, score_mul, DOT_PRECISION, TOKENS_AS_ROWS)
    return m, l_sum, acc


@triton.jit
def _attend_range_tma(q, qp, desc_c, desc_r, page, p0, lo, hi, m, l_sum, acc, score_mul, L: tl.constexpr,
                      R: tl.constexpr, BLOCK_N: tl.constexpr, DOT_PRECISION: tl.constexpr):
    """As ``_attend_range`` over one page (block number ``page``, first position p0), the tiles fetched by TMA
    through host descriptors of the cache ([blocks, rows, L + R]; rows past the page come back as zeros, rows
    past ``hi`` are zeroed here, so no stale value reaches the products). Triton multi-buffers these loads."""
    for t0 in range(lo, hi, BLOCK_N):
        tok = t0 + tl.arange(0, BLOCK_N)
        t_ok = tok < hi
        c = desc_c.load([page, t0 - p0, 0]).reshape(BLOCK_N, L).to(q.dtype)
        kpe = desc_r.load([page, t0 - p0, L]).reshape(BLOCK_N, R).to(q.dtype)
        c = tl.where(t_ok[:, None], c, 0.0)
        kpe = tl.where(t_ok[:, None], kpe, 0.0)
        m, l_sum, acc = _attend(q, qp, c, kpe, t_ok, m, l_sum, acc, score_mul, DOT_PRECISION, False)
    return m, l_sum, acc


@triton.jit
def _attend(q, qp, c, kpe, t_ok, m, l_sum, acc, score_mul, DOT_PRECISION: tl.constexpr,
            TOKENS_AS_ROWS: tl.constexpr):
    """Fold one tile of cached rows (c, kpe; ``t_ok``: which rows are real) into the running softmax state
    (m, l_sum in log2 units; acc unnormalised: [BLOCK_H, BLOCK_L], or its transpose with TOKENS_AS_ROWS)."""
    c = c.to(q.dtype)
    kpe = kpe.to(q.dtype)
    if TOKENS_AS_ROWS:
        # transposed products: the tile is the left operand (64-row tiles reach Hopper's wgmma, which the
        # 32 query heads alone do not), scores are [BLOCK_N, BLOCK_H], acc is [BLOCK_L, BLOCK_H]
        st = tl.dot(c, tl.trans(q), input_precision=DOT_PRECISION)
        st = tl.dot(kpe, tl.trans(qp), acc=st, input_precision=DOT_PRECISION)
        st = tl.where(t_ok[:, None], st * score_mul, float("-inf"))
        m_new = tl.maximum(m, tl.max(st, axis=0))
        alpha = tl.exp2(m - m_new)
        pt = tl.exp2(st - m_new[None, :])
        l_new = l_sum * alpha + tl.sum(pt, axis=0)
        acc_new = tl.dot(tl.trans(c), pt.to(c.dtype), acc=acc * alpha[None, :], input_precision=DOT_PRECISION)
    else:
        s = tl.dot(q, tl.trans(c), input_precision=DOT_PRECISION)
        s = tl.dot(qp, tl.trans(kpe), acc=s, input_precision=DOT_PRECISION)
        s = tl.where(t_ok[None, :], s * score_mul, float("-inf"))
        m_new = tl.maximum(m, tl.max(s, axis=1))
        alpha = tl.exp2(m - m_new)
        p = tl.exp2(s - m_new[:, None])
        l_new = l_sum * alpha + tl.sum(p, axis=1)
        acc_new = tl.dot(p.to(c.dtype), c, acc=acc * alpha[:, None], input_precision=DOT_PRECISION)
    return m_new, l_new, acc_new


@triton.jit(do_not_specialize=["num_splits", "s_acc_n", "s_acc_h", "s_acc_s", "s_ml_n", "s_ml_h"])
def _mla_decode_split(
    q_lat_ptr, q_pe_ptr, kv_ptr, bt_ptr, seq_lens_ptr, k_scale_ptr,
    acc_ptr, ml_ptr, o_ptr, lse_ptr, desc_c, desc_r,
    num_heads, num_splits, qk_scale_log2,
    s_ql_n, s_ql_h, s_qp_n, s_qp_h, s_kv_blk, s_kv_row, s_bt_n,
    s_acc_n, s_acc_h, s_acc_s, s_ml_n, s_ml_h, s_o_n, s_o_h, s_lse_n,
    L: tl.constexpr, R: tl.constexpr, BLOCK_L: tl.constexpr, BLOCK_R: tl.constexpr,
    BLOCK_SIZE: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_N: tl.constexpr,
    IS_FP8: tl.constexpr, DIRECT: tl.constexpr, DOT_PRECISION: tl.constexpr, PAGE_LOOP: tl.constexpr,
    PREFETCH: tl.constexpr, TOKENS_AS_ROWS: tl.constexpr, F16_MATH: tl.constexpr, TMA: tl.constexpr,
):
    n = tl.program_id(0).to(tl.int64)
    hg = tl.program_id(1)
    split = tl.program_id(2)

    seq_len = tl.load(seq_lens_ptr + n)
    # Each split covers a whole number of BLOCK_N tiles; trailing splits may be empty.
    per_split = tl.cdiv(tl.cdiv(seq_len, num_splits), BLOCK_N) * BLOCK_N
    start = split * per_split
    end = tl.minimum(start + per_split, seq_len)

    heads = hg * BLOCK_H + tl.arange(0, BLOCK_H)
    h_ok = heads < num_heads
    offs_l = tl.arange(0, BLOCK_L)
    offs_r = tl.arange(0, BLOCK_R)
    l_ok = offs_l < L
    r_ok = offs_r < R
    if not DIRECT:
        if start >= end:     # an empty split (short or padded sequence): (m, l) = (-inf, 0), no partial
            ml = ml_ptr + n * s_ml_n + heads * s_ml_h + split * 2
            tl.store(ml, tl.full([BLOCK_H], float("-inf"), tl.float32), mask=h_ok)
            tl.store(ml + 1, tl.zeros([BLOCK_H], tl.float32), mask=h_ok)
            return

    q = tl.load(q_lat_ptr + n * s_ql_n + heads[:, None] * s_ql_h + offs_l[None, :],
                mask=h_ok[:, None] & l_ok[None, :], other=0.0)
    qp = tl.load(q_pe_ptr + n * s_qp_n + heads[:, None] * s_qp_h + offs_r[None, :],
                 mask=h_ok[:, None] & r_ok[None, :], other=0.0).to(q.dtype)

    if IS_FP8:
        k_scale = tl.load(k_scale_ptr).to(tl.float32)
    else:
        k_scale = 1.0
    score_mul = qk_scale_log2 * k_scale          # scores in log2 units, fp8 scale folded in
    if F16_MATH:
        # fp8 cache with 16-bit queries: products in fp16, the one type e4m3 converts to in a single packed
        # instruction (bf16 needs two more per pair). q is scaled by 1/16 on the way (fp16 tops out at 65504;
        # the scores get the 16 back), p <= 1 fits as it is.
        q = (q.to(tl.float32) * 0.0625).to(tl.float16)
        qp = (qp.to(tl.float32) * 0.0625).to(tl.float16)
        score_mul = score_mul * 16.0

    m = tl.full([BLOCK_H], float("-inf"), tl.float32)
    l_sum = tl.zeros([BLOCK_H], tl.float32)
    if TOKENS_AS_ROWS:
        acc = tl.zeros([BLOCK_L, BLOCK_H], tl.float32)
    else:
        acc = tl.zeros([BLOCK_H, BLOCK_L], tl.float32)

    bt_row = bt_ptr + n * s_bt_n
    if TMA or PAGE_LOOP:
        # Page by page: one block-table load per page, then an inner loop over the page's tiles whose loads
        # depend on no other load in that loop, so Triton multi-buffers them (an in-loop page lookup leaves a
        # single buffer: the pipeliner gives the indirect load the first stage and the data only one).
        for pg in range(start // BLOCK_SIZE, tl.cdiv(end, BLOCK_SIZE)):
            p0 = pg * BLOCK_SIZE
            page = tl.load(bt_row + pg)
            lo = tl.maximum(start, p0)
            hi = tl.minimum(end, p0 + BLOCK_SIZE)
            if TMA:
                m, l_sum, acc = _attend_range_tma(q, qp, desc_c, desc_r, page, p0, lo, hi, m, l_sum, acc, score_mul,
                                                  L, R, BLOCK_N, DOT_PRECISION)
            else:
                m, l_sum, acc = _attend_range(
                    q, qp, kv_ptr + page.to(tl.int64) * s_kv_blk, p0, bt_row, lo, hi, m, l_sum, acc, offs_l, offs_r,
                    l_ok, r_ok, score_mul, s_kv_blk, s_kv_row, L, R, BLOCK_L, BLOCK_R, BLOCK_N, BLOCK_SIZE,
                    DOT_PRECISION, TOKENS_AS_ROWS, PREFETCH, False)
    else:                    # small pages: one flat loop, a block-table lookup per position
        m, l_sum, acc = _attend_range(
            q, qp, kv_ptr, 0, bt_row, start, end, m, l_sum, acc, offs_l, offs_r, l_ok, r_ok, score_mul, s_kv_blk,
            s_kv_row, L, R, BLOCK_L, BLOCK_R, BLOCK_N, BLOCK_SIZE, DOT_PRECISION, TOKENS_AS_ROWS, PREFETCH, True)

    if TOKENS_AS_ROWS:
        acc = tl.trans(acc)
    acc = acc * k_scale
    if DIRECT:
        has = l_sum > 0.0
        out = acc / tl.where(has, l_sum, 1.0)[:, None]
        tl.store(o_ptr + n * s_o_n + heads[:, None] * s_o_h + offs_l[None, :],
                 out.to(o_ptr.dtype.element_ty), mask=h_ok[:, None] & l_ok[None, :])
        lse = tl.where(has, (m + tl.log2(tl.where(has, l_sum, 1.0))) * 0.6931471805599453, float("-inf"))
        tl.store(lse_ptr + n * s_lse_n + heads, lse, mask=h_ok)
    else:
        tl.store(acc_ptr + n * s_acc_n + heads[:, None] * s_acc_h + split * s_acc_s + offs_l[None, :],
                 acc, mask=h_ok[:, None] & l_ok[None, :])
        ml = ml_ptr + n * s_ml_n + heads * s_ml_h + split * 2
        tl.store(ml, m, mask=h_ok)
        tl.store(ml + 1, l_sum, mask=h_ok)


@triton.jit(do_not_specialize=["num_splits", "s_acc_n", "s_acc_h", "s_acc_s", "s_ml_n", "s_ml_h"])
def _mla_decode_combine(
    acc_ptr, ml_ptr, o_ptr, lse_ptr, num_splits,
    s_acc_n, s_acc_h, s_acc_s, s_ml_n, s_ml_h, s_o_n, s_o_h, s_lse_n,
    L: tl.constexpr, BLOCK_L: tl.constexpr, BLOCK_S: tl.constexpr,
):
    """Merge the splits' partials of one sequence's head, BLOCK_L latent columns a program (grid axis 2): every
    split's (m, l) and partial columns are loaded at once, so the merge waits for memory once, not once a split."""
    n = tl.program_id(0).to(tl.int64)
    h = tl.program_id(1)
    part_l = tl.program_id(2)
    offs_l = part_l * BLOCK_L + tl.arange(0, BLOCK_L)
    l_ok = offs_l < L
    ml = ml_ptr + n * s_ml_n + h * s_ml_h
    part = acc_ptr + n * s_acc_n + h * s_acc_h

    # empty splits hold m = -inf, l = 0: they weigh nothing (where, not a product, so stale bits cannot leak in)
    sidx = tl.arange(0, BLOCK_S)
    s_ok = sidx < num_splits
    l_all = tl.load(ml + sidx * 2 + 1, mask=s_ok, other=0.0)
    m_all = tl.load(ml + sidx * 2, mask=s_ok, other=0.0)
    pv = tl.load(part + sidx[:, None] * s_acc_s + offs_l[None, :], mask=s_ok[:, None] & l_ok[None, :], other=0.0)
    live = l_all > 0.0
    m = tl.max(tl.where(live, m_all, float("-inf")), axis=0)
    m_safe = tl.where(m == float("-inf"), 0.0, m)
    w = tl.where(live, tl.exp2(m_all - m_safe), 0.0)
    l_sum = tl.sum(w * l_all, axis=0)
    acc = tl.sum(tl.where(live[:, None], w[:, None] * pv, 0.0), axis=0)

    has = l_sum > 0.0
    out = acc / tl.where(has, l_sum, 1.0)
    tl.store(o_ptr + n * s_o_n + h * s_o_h + offs_l, out.to(o_ptr.dtype.element_ty), mask=l_ok)
    lse = tl.where(has, (m + tl.log2(tl.where(has, l_sum, 1.0))) * 0.6931471805599453, float("-inf"))
    tl.store(lse_ptr + n * s_lse_n + h, lse, mask=part_l == 0)


def _cache_descriptors(kv_cache, L: int, R: int, block_n: int):
    """Host TMA descriptors of the cache as [blocks, rows, L + R]: one for the latent part of a tile of block_n
    rows, one for its position part (loaded at column L)."""
    from triton.tools.tensor_descriptor import TensorDescriptor

    nb, bs, D = kv_cache.shape
    esize = kv_cache.element_size()
    if L & (L - 1) or R & (R - 1) or R * esize < 16:
        raise ValueError(f"mla_decode(tma=True): latent {L} and position {R} widths must be powers of two, "
                         f"the position part at least 16 bytes")
    if (kv_cache.stride(0) * esize) % 16 or (kv_cache.stride(1) * esize) % 16 or kv_cache.data_ptr() % 16:
        raise ValueError(f"mla_decode(tma=True): the cache's base and strides {tuple(kv_cache.stride())} must be "
                         f"16-byte aligned")
    shape, strides = [nb, bs, D], [kv_cache.stride(0), kv_cache.stride(1), 1]
    return (TensorDescriptor(kv_cache, shape, strides, [1, block_n, L]),
            TensorDescriptor(kv_cache, shape, strides, [1, block_n, R]))


def choose_num_splits(batch: int, num_head_groups: int, max_seq_len: int, num_sms: int,
                      min_tokens: int = MIN_TOKENS_PER_SPLIT, merge_tokens: int = 0) -> int:
    """Splits per sequence from host-known values. Programs run in waves of ``num_sms`` (the caller passes the
    SMs times the programs one SM holds at the launch: ``default_config``'s ``programs_per_sm``); the time is
    about (waves) x (positions a split + SPLIT_OVERHEAD_TOKENS) + merge_tokens x splits (the merge's cost of each
    split, in positions), and the count minimising it is taken (the fewest on a tie), with at least
    ``min_tokens`` positions a split. E.g. on 132 SMs at one program an SM: batch 32 takes 4 splits (128
    programs, one wave), batch 128 one split (no merge), batch 1 at 128K 132."""
    if max_seq_len <= 0:
        return 1
    rows = max(1, batch * num_head_groups)
    cap = max(1, min(MAX_SPLITS, max_seq_len // min_tokens))

    def cost(s: int) -> int:
        return -(-rows * s // num_sms) * (-(-max_seq_len // s) + SPLIT_OVERHEAD_TOKENS) + merge_tokens * s
    return min(range(1, cap + 1), key=lambda s: (cost(s), s))


def wgmma_num_splits(batch: int, num_heads: int, max_seq_len: int, block_size: int, num_sms: int) -> int:
    """Splits per sequence for the Gluon kernels (``wgmma_decode``): ``choose_num_splits`` with their heads a
    program, one-tile splits and their merge cost, then the fewest splits that give each split the same whole tiles."""
    from kernels.mla import wgmma_decode
    n = choose_num_splits(batch, triton.cdiv(num_heads, wgmma_decode.block_h(num_heads)), max_seq_len, num_sms,
                          wgmma_decode.MIN_TOKENS_PER_SPLIT, wgmma_decode.MERGE_TOKENS_PER_SPLIT)
    return wgmma_decode.whole_tile_splits(n, wgmma_decode.tile_count(max_seq_len, block_size))


def combine_width(num_splits: int) -> int:
    """The merge kernel's tile of splits (a compiled variant each)."""
    return max(4, triton.next_power_of_2(num_splits))


def combine_block_l(num_splits: int, L: int) -> int:
    """Latent columns a merge program: COMBINE_ELEMENTS // (its splits), up to the whole row. Many splits come
    from few sequences, so their merge is spread over more programs, each still loading all its splits at once."""
    return max(1, min(triton.next_power_of_2(L), COMBINE_ELEMENTS // combine_width(num_splits)))


def variant_num_splits() -> list[int]:
    """One split count for each kernel variant ``mla_decode`` can launch with a given cache and query dtype: one
    split (the direct variant: no merge), then the smallest count of each width of the merge kernel up to
    MAX_SPLITS. Decoding once with each compiles them all, e.g. before serving (a count taken from a batch's own
    longest context would otherwise compile its variant in the middle of serving)."""
    first: dict[int, int] = {}
    for s in range(2, MAX_SPLITS + 1):
        first.setdefault(combine_width(s), s)
    return [1] + sorted(first.values())


def legacy_num_splits(batch: int, num_head_groups: int, max_seq_len: int, num_sms: int) -> int:
    """The split count used until the fifth session (about four programs per SM), kept for the benchmark's
    same-run comparison."""
    if max_seq_len <= 0:
        return 1
    want = -(-4 * num_sms // max(1, batch * num_head_groups))
    return max(1, min(want, max(1, max_seq_len // MIN_TOKENS_PER_SPLIT), MAX_SPLITS))


def default_block_h(num_heads: int) -> int:
    """Heads per program: all of them up to 64 (tl.dot needs at least 16 rows)."""
    return min(64, max(16, triton.next_power_of_2(num_heads)))


def default_config(num_heads: int, L: int, cache_bytes: int = 2) -> dict:
    """Launch configuration used when none is given, for a cache of ``cache_bytes`` bytes an element: block_h,
    block_n, num_warps, num_stages, the programs an SM holds at once (``programs_per_sm``, for
    ``choose_num_splits``) and whether the flat loop prefetches (``flat_prefetch``). Three stages give the
    page-by-page loop two tile buffers (Triton 3.6, sm_90: `scripts/inspect_sm90.py mla`). 16-bit caches with up
    to 32 heads a program: 32-token tiles on 4 warps, two programs an SM (one program of 8 warps stalls on its
    shared-memory operand loads; H200, 2026-12-01, batch 32 x 128K 1832 -> 1623 us with twice the splits, 128 x
    128K 6976 -> 6556). fp8 caches keep 64-token tiles on 8 warps, one program an SM (the fastest of an 18-setting
    sweep on the H100 at batch >= 32; fp8 with 32-token tiles 1.7x slower on the H200); fp32 caches take tiles that
    fit in shared memory."""
    bh = default_block_h(num_heads)
    if L < 256:
        return dict(block_h=bh, block_n=16, num_warps=4, num_stages=3, programs_per_sm=1, flat_prefetch=True)
    if cache_bytes == 4:        # fp32 (checks, not speed): one 32-token tile buffer, 148 KiB at L = 512, which fits
        # sm_80's 163 KiB a block (64-token tiles with two buffers need 368 KiB, over any GPU's limit)
        return dict(block_h=bh, block_n=32, num_warps=8, num_stages=2, programs_per_sm=1, flat_prefetch=True)
    if cache_bytes != 2 or bh > 32:
        return dict(block_h=bh, block_n=64, num_warps=8, num_stages=3, programs_per_sm=1, flat_prefetch=True)
    # pages under 4 tiles (128 tokens) take the flat loop: no register prefetch there on 4 warps (64-token pages,
    # 32 x 128K, H200: 2250 us without, 3769 with; the earlier 64-token launch with it 2936)
    return dict(block_h=bh, block_n=32, num_warps=4, num_stages=3, programs_per_sm=2, flat_prefetch=False)


def mla_decode(q_lat, q_pe, kv_cache, block_table, seq_lens, scale: float, num_splits: int | None = None,
               k_scale=None, *, max_seq_len: int | None = None, out: torch.Tensor | None = None,
               out_lse: torch.Tensor | None = None, block_h: int | None = None, block_n: int | None = None,
               num_warps: int | None = None, num_stages: int | None = None, prefetch: bool | None = None,
               tokens_as_rows: bool = False, fp16_math: bool | None = None, tma: bool = False,
               wgmma: bool | None = None, fp8_queries: bool = True):
    """Absorbed MLA decode attention over the paged latent cache.

    q_lat: [N, H, L] (any strides with unit last stride); q_pe: [N, H, R];
    kv_cache: [num_blocks, block_size, L + R] rows [c | k_pe], unit last stride (fp32/bf16/fp16, or
    float8_e4m3fn / its uint8 view holding value / k_scale); block_table: [N, >= cdiv(len, block_size)]
    int32/int64; seq_lens: [N] int32, entries > 0 (a 0 gives o = 0, lse = -inf).
    k_scale: float or a 1-element fp32 tensor, applied to fp8 caches only (None means 1.0).
    num_splits: splits per sequence; None picks ``choose_num_splits`` from ``max_seq_len`` (a host int;
    without it, the block table's width x block_size). Nothing here syncs with the device.
    Returns (o_lat [N, H, L] in q_lat's dtype, or written into ``out``; lse [N, H] float32, or into
    ``out_lse``: the natural log of the softmax denominator of the scaled scores).
    block_h / block_n / num_warps / num_stages override the launch configuration (for tuning); prefetch
    (default: fp8 caches, and pages too small for the page-by-page loop, except for 16-bit caches with L >= 256
    at the default launch, ``default_config``'s ``flat_prefetch``; never with tokens_as_rows or tma) loads
    the next tile into registers before the current tile's products. Triton's own pipelining does not cover those
    two cases: it does not multi-buffer an fp8 tile that both products read (one of them transposed), nor a tile
    whose addresses come from a block-table load in the same loop. tokens_as_rows computes the transposed products
    (scores [tokens, heads], accumulator [latent, heads]): with 64-token tiles (``block_n=64``; the 16-bit
    default is 32) they run on Hopper's wgmma, which 32 query heads alone cannot reach; same result. fp16_math
    (default: fp8 caches with 16-bit queries) runs the products in fp16 (q scaled by 1/16): e4m3 converts to fp16
    in one packed instruction.
    tma (opt-in, Hopper; untimed): tiles come through TMA descriptors of the cache, which Triton multi-buffers
    in shared memory even for fp8 tiles (their plain loads go through registers); needs L and R powers of two,
    16-byte-aligned cache strides; replaces the page-by-page and flat loops (one page at a time, any page size).
    wgmma: stage 1 on ``wgmma_decode``'s Gluon kernel (TMA ring, both products on wgmma). None (default): where
    ``wgmma_decode.supported`` holds and no launch setting above is given; True: required (an error where it
    cannot run); False: never.
    fp8_queries (default True): where the wgmma kernel reads an fp8 cache of latent width 512 (its register
    kernel), the queries are rounded to e4m3 (a power-of-two scale a head, ``fp8.round_queries_e4m3``) and the
    score product runs on fp8 x fp8 tensor cores, as vLLM's fp8 attention backends do (FlashMLA, FlashInfer,
    FlashAttention 3): faster, with the score error of the cache's own rounding once more. False keeps the
    queries' 16 bits there; the other kernels always do.
    """
    N, H, L = q_lat.shape
    R = q_pe.shape[-1]
    num_blocks, bs, D = kv_cache.shape
    assert q_pe.shape[:2] == (N, H) and D == L + R, "shapes: q_lat [N,H,L], q_pe [N,H,R], kv [nb,bs,L+R]"
    assert block_table.shape[0] >= N and seq_lens.shape[0] >= N
    if tokens_as_rows and prefetch:
        # compiled by Triton 3.6 for sm_90, this pair (64-token tiles, 8 warps, 2 stages) hit an illegal memory
        # access on an H100 (2026-11-23, benchmarks/RESULTS.md); not root-caused, so it is refused
        raise ValueError("mla_decode: tokens_as_rows=True cannot be combined with prefetch=True "
                         "(use prefetch=False or None with tokens_as_rows)")
    if tma and (prefetch or tokens_as_rows):
        raise ValueError("mla_decode: tma=True loads tiles through TMA; it cannot be combined with prefetch=True "
                         "or tokens_as_rows=True")
    if kv_cache.dtype == torch.uint8:
        kv_cache = kv_cache.view(torch.float8_e4m3fn)
    is_fp8 = kv_cache.dtype == torch.float8_e4m3fn
    if q_lat.stride(-1) != 1:
        q_lat = q_lat.contiguous()
    if q_pe.stride(-1) != 1:
        q_pe = q_pe.contiguous()
    assert kv_cache.stride(-1) == 1, "kv_cache rows must have unit last stride"
    if seq_lens.dtype not in (torch.int32, torch.int64):
        seq_lens = seq_lens.to(torch.int32)
    dev = q_lat.device

    if is_fp8:
        if k_scale is None:
            k_scale = 1.0
        if not isinstance(k_scale, torch.Tensor):
            k_scale = torch.full((1,), float(k_scale), dtype=torch.float32, device=dev)
        k_scale_arg = k_scale.to(device=dev, dtype=torch.float32).reshape(-1)[:1]
    else:
        k_scale_arg = seq_lens                   # unused placeholder pointer

    try:                                              # Gluon (Triton >= 3.5); without it, the Triton kernel only
        from kernels.mla import wgmma_decode
    except ImportError as e:
        if wgmma:
            raise ValueError(f"mla_decode(wgmma=True): this Triton has no Gluon ({e})") from e
        wgmma = False
    if wgmma is not False:
        tuned = (any(x is not None for x in (block_h, block_n, num_warps, num_stages, prefetch, fp16_math))
                 or tokens_as_rows or tma)
        runs = not tuned and wgmma_decode.supported(q_lat, kv_cache)
        if wgmma and not runs:
            raise ValueError(f"mla_decode(wgmma=True): needs an sm_90 GPU, a bf16/fp16 cache read by queries of its "
                             f"type or an fp8 cache read by bf16/fp16 queries (cache {kv_cache.dtype}, queries "
                             f"{q_lat.dtype}, device {kv_cache.device}), latent width a power of two in [64, 512] "
                             f"and position width 64 (got {L}, {R}), pages of at least {wgmma_decode.BLOCK_N} rows "
                             f"(got {bs}) and no launch override")
        wgmma = runs
    bound = max_seq_len if max_seq_len is not None else block_table.shape[1] * bs
    if wgmma:
        if num_splits is None:
            num_splits = wgmma_num_splits(N, H, bound, bs, num_sms(dev))
    else:
        cfg = default_config(H, L, kv_cache.element_size())
        launch = (block_h or cfg["block_h"], block_n or cfg["block_n"], num_warps or cfg["num_warps"],
                  num_stages or cfg["num_stages"])
        # programs an SM holds and the flat loop's prefetch: as measured for the default launch (plain tile loads),
        # else one and on; a partial override takes the default's other settings
        default_launch = (launch == tuple(cfg[k] for k in ("block_h", "block_n", "num_warps", "num_stages")) and
                          not tma and not tokens_as_rows)
        per_sm = cfg["programs_per_sm"] if default_launch else 1
        flat_prefetch = cfg["flat_prefetch"] if default_launch else True
        block_h, block_n, num_warps, num_stages = launch
        head_groups = triton.cdiv(H, block_h)
        if num_splits is None:
            num_splits = choose_num_splits(N, head_groups, bound, num_sms(dev) * per_sm)
    num_splits = max(1, int(num_splits))

    if out is None:
        out = torch.empty(N, H, L, dtype=q_lat.dtype, device=dev)
    lse = out_lse if out_lse is not None else torch.empty(N, H, dtype=torch.float32, device=dev)
    assert out.shape == (N, H, L) and out.stride(-1) == 1, "out: [N, H, L] with unit last stride"
    assert lse.shape == (N, H) and lse.stride(-1) == 1 and lse.dtype == torch.float32, "out_lse: [N, H] fp32"
    if N == 0:
        return out, lse
    direct = num_splits == 1
    if direct:
        acc = ml = out                            # unused
        acc_strides = (0, 0, 0)
        ml_strides = (0, 0)
    else:
        acc = torch.empty(N, H, num_splits, L, dtype=torch.float32, device=dev)
        ml = torch.empty(N, H, num_splits, 2, dtype=torch.float32, device=dev)
        acc_strides = (acc.stride(0), acc.stride(1), acc.stride(2))
        ml_strides = (ml.stride(0), ml.stride(1))

    if wgmma:
        wgmma_decode.launch(q_lat, q_pe, kv_cache, block_table, seq_lens, k_scale_arg, float(scale) * LOG2E,
                            num_splits, acc, ml, out, lse, acc_strides, ml_strides, fp8_queries)
    else:
        precision = "ieee" if q_lat.dtype == torch.float32 else "tf32"
        page_loop = bs >= PAGE_LOOP_MIN_TILES * block_n
        desc_c = desc_r = None
        if tma:
            desc_c, desc_r = _cache_descriptors(kv_cache, L, R, block_n)
        _mla_decode_split[(N, head_groups, num_splits)](
            q_lat, q_pe, kv_cache, block_table, seq_lens, k_scale_arg,
            acc, ml, out, lse, desc_c, desc_r,
            H, num_splits, float(scale) * LOG2E,
            q_lat.stride(0), q_lat.stride(1), q_pe.stride(0), q_pe.stride(1),
            kv_cache.stride(0), kv_cache.stride(1), block_table.stride(0),
            *acc_strides, *ml_strides, out.stride(0), out.stride(1), lse.stride(0),
            L=L, R=R, BLOCK_L=triton.next_power_of_2(L), BLOCK_R=max(16, triton.next_power_of_2(R)),
            BLOCK_SIZE=bs, BLOCK_H=block_h, BLOCK_N=block_n,
            IS_FP8=is_fp8, DIRECT=direct, DOT_PRECISION=precision, PAGE_LOOP=page_loop,
            PREFETCH=(not tma and not tokens_as_rows and (is_fp8 or (not page_loop and flat_prefetch)))
            if prefetch is None else prefetch,
            TOKENS_AS_ROWS=tokens_as_rows, TMA=tma,
            F16_MATH=is_fp8 and q_lat.dtype in (torch.float16, torch.bfloat16) if fp16_math is None else fp16_math,
            num_warps=num_warps, num_stages=num_stages,
        )
    if not direct:
        block_l = combine_block_l(num_splits, L)
        _mla_decode_combine[(N, H, triton.cdiv(L, block_l))](
            acc, ml, out, lse, num_splits,
            *acc_strides, *ml_strides, out.stride(0), out.stride(1), lse.stride(0),
            L=L, BLOCK_L=block_l, BLOCK_S=combine_width(num_splits), num_warps=4,
        )
    return out, lse
