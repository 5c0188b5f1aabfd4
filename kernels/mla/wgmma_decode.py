"""Absorbed MLA decode for Hopper (sm_90): cache tiles by TMA into shared memory, both products on wgmma (Gluon).

The same attention as ``triton_decode`` (one query token per sequence, scores over the latent row [c | k_pe],
values c), written in Gluon so that the kernel decides what Triton's pipeliner would not: every tile of the
cache travels by TMA into a ring of shared-memory stages, from which the tensor cores read it (16-bit tiles) or
threads take it into registers (fp8 tiles: converted to fp16, except for the register kernel's value product,
which takes the bytes as they are). Heads are the columns of both products (tokens the rows of the scores, latent
columns those of o^T), so 32 query heads fill a wgmma (its rows come in sixty-fours; heads would fill half):

    s^T [tokens, heads] = C_tile [tokens, L] q_lat^T + Kpe_tile [tokens, R] q_pe^T
    o^T [L, heads]     += C_tile^T [L, tokens] p^T [tokens, heads]

The running max is per head (a column of s^T); the softmax sums are kept per element and reduced once at the
end. Tiles start at page offsets that are multiples of BLOCK_N, so a page of ``block_size`` positions is
cdiv(block_size, BLOCK_N) tiles and a tile never reads two pages: rows past the page's end come back as zeros
from the three-dimensional descriptor [blocks, rows, width]. Rows past the sequence's end (inside its last
page) are masked out of the scores and zeroed in shared memory before the value product (they may hold any
bits, NaN included, left there by the page's earlier owner). A split is a run of whole tiles; partials and
the merge are ``triton_decode``'s.

Three kernels:
* ``_mla_decode_wgmma``, bf16 / fp16 caches: both products read the TMA stages.
* ``_mla_decode_wgmma_fp8``, fp8 (e4m3) caches, the converter kernel: four converter warps take each fp8 tile from
  its TMA stage into registers, release the stage for the next tile, and write the tile as fp16 into a ring of two
  slots; the four default warps run the products and the softmax from those slots.
* ``_mla_decode_wgmma_fp8_regs``, fp8 caches, the register-operand kernel: a loader warp keeps four fp8 stages
  filled (five with e4m3 queries); by default (``fp8_queries``) the queries are rounded to e4m3 once, with a
  power-of-two scale a head (``_queries_e4m3``), as vLLM's fp8 attention backends round theirs, and four score
  warps run the score product on fp8 wgmma straight from the stages (no register reads, no conversions; half the
  tensor cores' time of the fp16 product), a fresh accumulator every ``FP8_QUERY_GROUP`` columns (the fp8 tensor
  cores keep ~13 bits of a running sum); with 16-bit queries they read each tile's columns 64 at a time into
  registers, convert them to fp16 and hand them to wgmma as its register operand (the queries' columns permuted
  alike, ``_k_latent_column_bits``: each thread reads 16 contiguous bytes, and a chunk is every other 16-byte piece
  of 128 columns, which keeps the reads free of bank conflicts); either way they pass the scores on through two
  padded fp32 slots; four softmax warps turn them into p, moving a head's running max only when it grows by more
  than ``FP8_LAZY_RESCALE``, and write p^T in e4m3 (times ``FP8_P_SCALE``) into one of two p slots; four value
  warps, a tile behind, read the tile 128 columns at a time and hand its bytes, transposed in registers but not
  converted (``_v8_operand``), to fp8 wgmma as the register operand of the value product (half the tensor cores'
  time of the fp16 one; o^T's rows permuted, ``_v8_column_bits``), and rescale o^T only on tiles where a max
  moved. p is thus rounded to e4m3 as the cache's values are (by up to 2^-4 of itself), so o is normalised by the
  sum of the rounded p and the lse by the exact sum (``_fp8_out_scale``); the tests bound o's error by what that
  rounding (and, with e4m3 queries, the fp8 sums of the scores) can do. It serves the model's latent width (512)
  only, the converter kernel the others (``fp8_kernel``).
The fp16 score products run with the queries at 1/16 (a margin below fp16's largest value); the 16 and k_scale
come back in the scores and the output (e4m3 queries: each head's scores times 1 / (16 2^e), its scale undone).
Caches: bf16 / fp16 read by queries of the same type, or fp8 read by bf16 / fp16 queries; pages of at least
BLOCK_N positions; 16 or 32 heads a program. ``mla_decode`` takes these kernels where ``supported`` holds.
"""

import functools

import torch
import triton
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import (fence_async_shared, mbarrier, tma, warpgroup_mma,
                                                              warpgroup_mma_wait)
from triton.experimental.gluon.nvidia.hopper import TensorDescriptor

BLOCK_N = 64          # cache positions a tile: the rows of one wgmma on four warps
STAGES = 2            # 16-bit tiles in shared memory at once (72 KiB each at L + R = 576)
FP8_SLOTS = 2         # fp16 copies of fp8 tiles the converter warps may run ahead by (72 KiB each)
FP8_CONVERTER_REGS = 200    # registers a thread of the converter warps: one fp8 tile (72) and its fp16 halves
FP8_STAGES = 4        # the register-operand fp8 kernel's fp8 tiles in shared memory at once (36 KiB each)
# and with e4m3 queries (18 KiB of queries instead of 36): 223 KiB of shared memory in all (a block may have 227);
# 3.4% faster than 4 at 128 x 128K, the same at 32 x 128K (H200, 2026-12-02, two runs, benchmarks/RESULTS.md)
FP8_Q8_STAGES = 5
FP8_SCORE_REGS = 152  # registers a thread of its score warps (the score product only)
FP8_SOFTMAX_REGS = 104  # registers a thread of its softmax warps; the value warps get 216 (setmaxnreg: 512 in all)
FP8_LOADER_REGS = 40  # registers a thread of its loader warp (TMA issue only)
# the register kernel moves a head's running max only when a tile's exceeds it by more than this (log2 units), so its
# value warps skip rescaling o^T on most tiles (H200, 2026-12-01: 4-5% faster at 32-128 x 128K with 8; 2026-12-02:
# 4 and 8 within the runs' spread, benchmarks/RESULTS.md); its value product takes p times FP8_P_SCALE in e4m3: at
# most 2^(4 + 4) = 256 (e4m3's largest is 448), and e4m3's normal range (relative rounding <= 2^-4) reaches down to
# p = 2^-10 of the running max (with 8 and 1 it reached 2^-6: rows below it were rounded coarsely or to zero, which
# biased o; a head's error on spread attention over 20,000 positions was up to 9.1% against 3.3% with 4 and 16)
FP8_LAZY_RESCALE = gl.constexpr(4.0)
FP8_P_SCALE = gl.constexpr(16.0)
# with fp8 queries the register kernel's score product runs on fp8 wgmma, whose tensor cores keep only about 13
# bits of a sum's running value (measured: 2^-13 of the sum of the terms' magnitudes), so every FP8_QUERY_GROUP
# columns start a fresh accumulator that is added into an fp32 sum (256 columns: the lse off the rounded queries'
# fp64 one by up to 1.9e-2 on peaked attention, 128: 7.2e-3, same speed; 64 and 32 run out of the score warps'
# registers; H200, 2026-12-02, benchmarks/RESULTS.md)
FP8_QUERY_GROUP = gl.constexpr(128)
MAX_BLOCK_H = 32      # heads a program: o^T [L, heads] in fp32 is 128 registers a thread at 32
# split counts (``choose_num_splits``): a split may be as short as one tile, and the merge (all of a head's splits
# loaded at once) costs about one position's worth of time a split (H200, 2026-12-01, batch 1, CUDA graphs, bf16 /
# fp8: 32K 19.0 / 18.2-19.4 us at 128-132 splits, 21.5 / 19.9 at the 75 that five positions a split gave; 4K 12.2 /
# 12.4 at 32 / 64, 12.0 / 13.5 at 22; 128K unchanged at 128-132; benchmarks/RESULTS.md)
MIN_TOKENS_PER_SPLIT = BLOCK_N
MERGE_TOKENS_PER_SPLIT = 1


@gluon.jit
def _tile_origin(t, TILES_PER_PAGE: gl.constexpr, BLOCK_N: gl.constexpr):
    """Tile ``t`` of a sequence: its page's index in the block table and its first row in that page."""
    pg = t // TILES_PER_PAGE
    return pg, (t - pg * TILES_PER_PAGE) * BLOCK_N


@gluon.jit
def _issue_tile(desc_c, desc_r, bt_row, t, pred, bar, c_dst, r_dst, TILES_PER_PAGE: gl.constexpr,
                BLOCK_N: gl.constexpr):
    """Start the TMA copies of tile ``t`` of the sequence (a page and a BLOCK_N-aligned row offset in it)."""
    pg, row0 = _tile_origin(t, TILES_PER_PAGE, BLOCK_N)
    page = gl.load(bt_row + pg, mask=pred, other=0).to(gl.int32)     # TMA coordinates are 32-bit
    mbarrier.expect(bar, desc_c.block_type.nbytes + desc_r.block_type.nbytes, pred=pred)
    tma.async_copy_global_to_shared(desc_c, [page, row0, 0], bar, c_dst, pred=pred)
    tma.async_copy_global_to_shared(desc_r, [page, row0, 0], bar, r_dst, pred=pred)


@gluon.jit
def _tile_rows(t, seq_len, BLOCK_SIZE: gl.constexpr, BLOCK_N: gl.constexpr):
    """Tile ``t``'s positions from its first row on (``left``, up to the sequence's end) and its rows that hold
    positions (``valid``: ``left`` cut at the page's end)."""
    pg, row0 = _tile_origin(t, (BLOCK_SIZE + BLOCK_N - 1) // BLOCK_N, BLOCK_N)
    left = seq_len - (pg * BLOCK_SIZE + row0)
    return left, gl.minimum(left, BLOCK_SIZE - row0)


@gluon.jit
def _split_tiles(seq_lens_ptr, n, split, num_splits, BLOCK_SIZE: gl.constexpr, BLOCK_N: gl.constexpr):
    """The sequence's length and this split's run of tiles (first tile, count)."""
    TILES_PER_PAGE: gl.constexpr = (BLOCK_SIZE + BLOCK_N - 1) // BLOCK_N
    seq_len = gl.load(seq_lens_ptr + n).to(gl.int32)
    full_pages = seq_len // BLOCK_SIZE
    n_tiles = full_pages * TILES_PER_PAGE + (seq_len - full_pages * BLOCK_SIZE + BLOCK_N - 1) // BLOCK_N
    per_split = (n_tiles + num_splits - 1) // num_splits
    t_lo = split * per_split
    return seq_len, t_lo, gl.maximum(gl.minimum(n_tiles - t_lo, per_split), 0)


@gluon.jit
def _load_queries(q_lat_ptr, q_pe_ptr, n, hg, num_heads, s_ql_n, s_ql_h, s_qp_n, s_qp_h, L: gl.constexpr,
                  R: gl.constexpr, BLOCK_H: gl.constexpr, num_warps: gl.constexpr):
    """This program's heads of q_lat [BLOCK_H, L] and q_pe [BLOCK_H, R] in registers, as stored (zeros for heads
    past num_heads), eight contiguous values a thread."""
    q_blk: gl.constexpr = gl.BlockedLayout([1, 8], [4, 8], [num_warps, 1], [1, 0])
    qh = hg * BLOCK_H + gl.arange(0, BLOCK_H, layout=gl.SliceLayout(1, q_blk))
    qh_ok = qh < num_heads
    offs_l = gl.arange(0, L, layout=gl.SliceLayout(0, q_blk))
    offs_r = gl.arange(0, R, layout=gl.SliceLayout(0, q_blk))
    q = gl.load(q_lat_ptr + n * s_ql_n + qh[:, None] * s_ql_h + offs_l[None, :],
                mask=qh_ok[:, None] & (offs_l < L)[None, :], other=0.0)
    qp = gl.load(q_pe_ptr + n * s_qp_n + qh[:, None] * s_qp_h + offs_r[None, :],
                 mask=qh_ok[:, None] & (offs_r < R)[None, :], other=0.0)
    return q, qp


@gluon.jit
def _queries_to_smem(q_lat_ptr, q_pe_ptr, n, hg, num_heads, s_ql_n, s_ql_h, s_qp_n, s_qp_h, scale: gl.constexpr,
                     dtype: gl.constexpr, L: gl.constexpr, R: gl.constexpr, BLOCK_H: gl.constexpr,
                     num_warps: gl.constexpr, PERMUTED: gl.constexpr = False):
    """This program's heads of q_lat and q_pe (times ``scale``) in shared memory as ``dtype``, heads x width with
    the width contiguous: the second operand of the score product (as its transposed views). PERMUTED: the
    columns in the order ``_k_operand`` hands the cache's columns to the product (``_k_latent_column_bits``,
    ``_k_column_bits``), relabelled in registers after plain loads."""
    q, qp = _load_queries(q_lat_ptr, q_pe_ptr, n, hg, num_heads, s_ql_n, s_ql_h, s_qp_n, s_qp_h, L, R, BLOCK_H,
                          num_warps)
    if PERMUTED:
        q = _relabel_rows(q.permute((1, 0)), _k_latent_column_bits(L)).permute((1, 0))
        qp = _relabel_rows(qp.permute((1, 0)), _k_column_bits(R)).permute((1, 0))
    if scale != 1.0:
        q = q.to(gl.float32) * scale
        qp = qp.to(gl.float32) * scale
    q_smem = gl.allocate_shared_memory(dtype, [BLOCK_H, L], gl.NVMMASharedLayout.get_default_for([BLOCK_H, L], dtype),
                                       q.to(dtype))
    qp_smem = gl.allocate_shared_memory(dtype, [BLOCK_H, R], gl.NVMMASharedLayout.get_default_for([BLOCK_H, R], dtype),
                                        qp.to(dtype))
    return q_smem, qp_smem


@gluon.jit
def _softmax_step(sc, valid, qk_scale_log2, m_i, mma: gl.constexpr, LAZY: gl.constexpr = 0.0):
    """One tile's scores s^T [tokens, heads] (rows from ``valid`` on masked) against the running max. Returns
    (m_new, alpha: the factor o^T and the sums take first, p^T). LAZY > 0: a head's max (log2 units) moves only
    when the tile's exceeds it by more than LAZY, so most tiles leave o^T as it is (alpha 1) and p stays at most
    2^LAZY."""
    rows = gl.arange(0, sc.shape[0], layout=gl.SliceLayout(1, mma))
    sc = gl.where((rows < valid)[:, None], sc * qk_scale_log2, float("-inf"))
    m_new = gl.maximum(m_i, gl.max(sc, axis=0))
    if LAZY > 0.0:
        m_new = gl.where(m_new > m_i + LAZY, m_new, m_i)
    alpha = gl.exp2(m_i - m_new)
    p = gl.exp2(sc - m_new[None, :])
    return m_new, alpha, p


@gluon.jit
def _online_softmax(sc, valid, qk_scale_log2, m_i, l_acc, p_smem, mma: gl.constexpr):
    """``_softmax_step`` with the sums updated and p^T written to ``p_smem`` for the value product. Returns (m_i,
    l_acc, alpha)."""
    m_new, alpha, p = _softmax_step(sc, valid, qk_scale_log2, m_i, mma)
    l_acc = l_acc * alpha[None, :] + p
    p_smem.store(p.to(p_smem.dtype))
    fence_async_shared()
    return m_new, l_acc, alpha


@gluon.jit
def _attend_tile(c_s, r_s, q_smem, qp_smem, p_smem, valid, qk_scale_log2, m_i, l_acc, o_acc,
                 BLOCK_N: gl.constexpr, BLOCK_H: gl.constexpr, num_warps: gl.constexpr):
    """One tile of online softmax on wgmma, both operands of both products in shared memory: scores from the tile
    (rows from ``valid`` on are masked), the running max and sums, then the value product into o^T. Returns
    (m_i, l_acc, o_acc)."""
    mma: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[num_warps, 1],
                                                  instr_shape=[16, BLOCK_H, 16])
    sc = warpgroup_mma(c_s, q_smem.permute((1, 0)), gl.zeros([BLOCK_N, BLOCK_H], gl.float32, mma), use_acc=False,
                       is_async=True)
    sc = warpgroup_mma(r_s, qp_smem.permute((1, 0)), sc, is_async=True)
    sc = warpgroup_mma_wait(num_outstanding=0, deps=(sc,))
    m_i, l_acc, alpha = _online_softmax(sc, valid, qk_scale_log2, m_i, l_acc, p_smem, mma)
    o_acc = warpgroup_mma(c_s.permute((1, 0)), p_smem, o_acc * alpha[None, :], is_async=True)
    o_acc = warpgroup_mma_wait(num_outstanding=0, deps=(o_acc,))
    return m_i, l_acc, o_acc


@gluon.jit
def _out_scale(l_i, o_scale, DIRECT: gl.constexpr):
    """What o^T's columns are multiplied by when stored: o_scale / sum (0-sum heads as 1) when the program had the
    whole sequence, else o_scale (a split's partial stays unnormalised)."""
    if DIRECT:
        scale = o_scale / gl.where(l_i > 0.0, l_i, 1.0)
    else:
        scale = gl.full(l_i.shape, o_scale, gl.float32, l_i.type.layout)
    return scale


@gluon.constexpr_function
def _rows_first(layout):
    """``layout`` with each thread's registers listed rows first (the same elements in the same threads), so that a
    thread's contiguous rows are consecutive registers: what a vectorised store along the rows needs."""
    rows = sorted((b for b in layout.reg_bases if b[1] == 0), key=lambda b: b[0])
    return gl.DistributedLinearLayout(rows + [b for b in layout.reg_bases if b[1] != 0], layout.lane_bases,
                                      layout.warp_bases, layout.block_bases, layout.shape)


@gluon.jit
def _store_o(o, scale, ROW0: gl.constexpr, PERM_ROWS: gl.constexpr, n, hg, split, num_heads, acc_ptr, o_ptr,
             s_acc_n, s_acc_h, s_acc_s, s_o_n, s_o_h, L: gl.constexpr, BLOCK_H: gl.constexpr, DIRECT: gl.constexpr,
             mma: gl.constexpr):
    """A block of o^T's rows (latent columns from ROW0; with PERM_ROWS, 128 rows in ``_v8_operand``'s order,
    ``_v8_column_bits``) times ``scale`` a head: into the output (one split) or the split's partial. Stored from the
    accumulator's registers, with no layout change that would need shared memory: in wgmma's order a warp writes
    32-byte runs of eight heads; permuted rows are first relabelled into column order (a thread's rows are
    contiguous columns, so nothing moves) and a thread writes its four as one vector (one value at a time, the
    partials of a batch-1 call took longer than 4 of its tiles: H200, 2026-12-01, benchmarks/RESULTS.md)."""
    out = o * scale[None, :]
    if PERM_ROWS:
        gl.static_assert(o.shape[0] == 128, "permuted rows come in blocks of 128")
        out = _relabel_rows(out, _inverse_bits(_v8_column_bits()))
        out = gl.convert_layout(out, _rows_first(out.type.layout))
    lay: gl.constexpr = out.type.layout
    ol = gl.arange(0, o.shape[0], layout=gl.SliceLayout(1, lay)) + ROW0
    hh = hg * BLOCK_H + gl.arange(0, BLOCK_H, layout=gl.SliceLayout(0, lay))
    ok = (ol < L)[:, None] & (hh < num_heads)[None, :]
    if DIRECT:
        gl.store(o_ptr + n * s_o_n + hh[None, :] * s_o_h + ol[:, None], out.to(o_ptr.dtype.element_ty), mask=ok)
    else:
        gl.store(acc_ptr + n * s_acc_n + hh[None, :] * s_acc_h + split * s_acc_s + ol[:, None], out, mask=ok)


@gluon.jit
def _store_ml(m_i, l_i, n, hg, split, num_heads, ml_ptr, lse_ptr, s_ml_n, s_ml_h, s_lse_n, BLOCK_H: gl.constexpr,
              DIRECT: gl.constexpr, mma: gl.constexpr):
    """The program's max and sum a head (a split's, for the merge), or its lse when it had the whole sequence."""
    hh = hg * BLOCK_H + gl.arange(0, BLOCK_H, layout=gl.SliceLayout(0, mma))
    hh_ok = hh < num_heads
    if DIRECT:
        has = l_i > 0.0
        lse = gl.where(has, (m_i + gl.log2(gl.where(has, l_i, 1.0))) * 0.6931471805599453, float("-inf"))
        gl.store(lse_ptr + n * s_lse_n + hh, lse, mask=hh_ok)
    else:
        ml = ml_ptr + n * s_ml_n + hh * s_ml_h + split * 2
        gl.store(ml, m_i, mask=hh_ok)
        gl.store(ml + 1, l_i, mask=hh_ok)


@gluon.jit
def _write_out(o_acc, m_i, l_acc, o_scale, n, hg, split, num_heads, acc_ptr, ml_ptr, o_ptr, lse_ptr,
               s_acc_n, s_acc_h, s_acc_s, s_ml_n, s_ml_h, s_o_n, s_o_h, s_lse_n,
               L: gl.constexpr, BLOCK_H: gl.constexpr, DIRECT: gl.constexpr, num_warps: gl.constexpr):
    """The program's o^T (times ``o_scale``), max and sum: as a split's partial, or normalised with its lse when
    the program had the whole sequence."""
    mma: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[num_warps, 1],
                                                  instr_shape=[16, BLOCK_H, 16])
    l_i = gl.sum(l_acc, axis=0)
    _store_o(o_acc, _out_scale(l_i, o_scale, DIRECT), 0, False, n, hg, split, num_heads, acc_ptr, o_ptr,
             s_acc_n, s_acc_h, s_acc_s, s_o_n, s_o_h, L, BLOCK_H, DIRECT, mma)
    _store_ml(m_i, l_i, n, hg, split, num_heads, ml_ptr, lse_ptr, s_ml_n, s_ml_h, s_lse_n, BLOCK_H, DIRECT, mma)


@gluon.jit(do_not_specialize=["num_splits", "s_acc_n", "s_acc_h", "s_acc_s", "s_ml_n", "s_ml_h"])
def _mla_decode_wgmma(
    q_lat_ptr, q_pe_ptr, desc_c, desc_r, bt_ptr, seq_lens_ptr, k_scale_ptr, acc_ptr, ml_ptr, o_ptr, lse_ptr,
    num_heads, num_splits, qk_scale_log2,
    s_ql_n, s_ql_h, s_qp_n, s_qp_h, s_bt_n,
    s_acc_n, s_acc_h, s_acc_s, s_ml_n, s_ml_h, s_o_n, s_o_h, s_lse_n,
    L: gl.constexpr, R: gl.constexpr, BLOCK_SIZE: gl.constexpr, BLOCK_H: gl.constexpr, BLOCK_N: gl.constexpr,
    STAGES: gl.constexpr, DIRECT: gl.constexpr, num_warps: gl.constexpr,
):
    """bf16 / fp16 caches: the products read the TMA stages."""
    n = gl.program_id(0).to(gl.int64)
    hg = gl.program_id(1)
    split = gl.program_id(2)
    dtype: gl.constexpr = desc_c.dtype
    TILES_PER_PAGE: gl.constexpr = (BLOCK_SIZE + BLOCK_N - 1) // BLOCK_N
    seq_len, t_lo, count = _split_tiles(seq_lens_ptr, n, split, num_splits, BLOCK_SIZE, BLOCK_N)
    q_smem, qp_smem = _queries_to_smem(q_lat_ptr, q_pe_ptr, n, hg, num_heads, s_ql_n, s_ql_h, s_qp_n, s_qp_h, 1.0,
                                       dtype, L, R, BLOCK_H, num_warps)

    c_bufs = gl.allocate_shared_memory(dtype, [STAGES, BLOCK_N, L], gl.NVMMASharedLayout.get_default_for([BLOCK_N, L],
                                                                                                         dtype))
    r_bufs = gl.allocate_shared_memory(dtype, [STAGES, BLOCK_N, R], gl.NVMMASharedLayout.get_default_for([BLOCK_N, R],
                                                                                                         dtype))
    p_smem = gl.allocate_shared_memory(dtype, [BLOCK_N, BLOCK_H],
                                       gl.NVMMASharedLayout.get_default_for([BLOCK_N, BLOCK_H], dtype))
    bars = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    for b in gl.static_range(STAGES):
        mbarrier.init(bars.index(b), count=1)
    fence_async_shared()

    bt_row = bt_ptr + n * s_bt_n
    for b in gl.static_range(STAGES - 1):
        _issue_tile(desc_c, desc_r, bt_row, t_lo + b, b < count, bars.index(b),
                    c_bufs.index(b).reshape([1, BLOCK_N, L]), r_bufs.index(b).reshape([1, BLOCK_N, R]),
                    TILES_PER_PAGE, BLOCK_N)

    mma: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[num_warps, 1],
                                                  instr_shape=[16, BLOCK_H, 16])
    m_i = gl.full([BLOCK_H], float("-inf"), gl.float32, gl.SliceLayout(0, mma))
    l_acc = gl.zeros([BLOCK_N, BLOCK_H], gl.float32, mma)
    o_acc = gl.zeros([L, BLOCK_H], gl.float32, mma)
    z_blk: gl.constexpr = gl.BlockedLayout([1, 8], [4, 8], [num_warps, 1], [1, 0])
    z_rows = gl.arange(0, BLOCK_N, layout=gl.SliceLayout(1, z_blk))
    for i in range(count):
        # refill the stage the previous tile used (its products are complete)
        j = i + STAGES - 1
        sj = j % STAGES
        _issue_tile(desc_c, desc_r, bt_row, t_lo + j, j < count, bars.index(sj),
                    c_bufs.index(sj).reshape([1, BLOCK_N, L]), r_bufs.index(sj).reshape([1, BLOCK_N, R]),
                    TILES_PER_PAGE, BLOCK_N)
        stage = i % STAGES
        mbarrier.wait(bars.index(stage), (i // STAGES) & 1)
        c_s = c_bufs.index(stage)
        left, valid = _tile_rows(t_lo + i, seq_len, BLOCK_SIZE, BLOCK_N)
        if left < BLOCK_N:
            # the sequence ends inside this tile: zero the rows past it (any bits may be there) before the
            # value product multiplies them by p = 0
            for cc in gl.static_range(L // 64):
                part = c_s.slice(cc * 64, 64, dim=1)
                x = part.load(z_blk)
                part.store(gl.where((z_rows < left)[:, None], x, gl.zeros_like(x)))
            fence_async_shared()
        m_i, l_acc, o_acc = _attend_tile(c_s, r_bufs.index(stage), q_smem, qp_smem, p_smem, valid, qk_scale_log2,
                                         m_i, l_acc, o_acc, BLOCK_N, BLOCK_H, num_warps)

    for b in gl.static_range(STAGES):
        mbarrier.invalidate(bars.index(b))
    _write_out(o_acc, m_i, l_acc, 1.0, n, hg, split, num_heads, acc_ptr, ml_ptr, o_ptr, lse_ptr,
               s_acc_n, s_acc_h, s_acc_s, s_ml_n, s_ml_h, s_o_n, s_o_h, s_lse_n, L, BLOCK_H, DIRECT, num_warps)


@gluon.jit
def _fp8_to_slot(x, xr, live, live_r, dst_c, dst_r, MASK: gl.constexpr):
    """An fp8 tile (latent part ``x``, position part ``xr``, in registers) to fp16 in a slot; with MASK the rows
    where ``live`` / ``live_r`` are false become zeros."""
    y = x.to(gl.float16)
    yr = xr.to(gl.float16)
    if MASK:
        dst_c.store(gl.where(live, y, gl.zeros_like(y)))
        dst_r.store(gl.where(live_r, yr, gl.zeros_like(yr)))
    else:
        dst_c.store(y)
        dst_r.store(yr)


@gluon.jit
def _fp8_converter(desc_c, desc_r, bt_row, t_lo, count, seq_len, c8, r8, loaded, c16, r16, full, empty,
                   L: gl.constexpr, R: gl.constexpr, BLOCK_SIZE: gl.constexpr, BLOCK_N: gl.constexpr,
                   SLOTS: gl.constexpr):
    """Converter warps: each fp8 tile from its TMA stage into registers, the stage at once refilled with the next
    tile, then the tile as fp16 into the next free slot (rows past the sequence's end as zeros: they may hold any
    bits, and the value product multiplies them by p = 0)."""
    TILES_PER_PAGE: gl.constexpr = (BLOCK_SIZE + BLOCK_N - 1) // BLOCK_N
    # a warp reads four whole 128-byte rows of a swizzled stage: no bank conflicts
    c_lay: gl.constexpr = gl.BlockedLayout([1, 16], [4, 8], [4, 1], [1, 0])
    r_lay: gl.constexpr = gl.BlockedLayout([1, 16], [8, 4], [4, 1], [1, 0])
    c_rows = gl.arange(0, BLOCK_N, layout=gl.SliceLayout(1, c_lay))
    r_rows = gl.arange(0, BLOCK_N, layout=gl.SliceLayout(1, r_lay))
    _issue_tile(desc_c, desc_r, bt_row, t_lo, count > 0, loaded, c8.reshape([1, BLOCK_N, L]),
                r8.reshape([1, BLOCK_N, R]), TILES_PER_PAGE, BLOCK_N)
    for i in range(count):
        mbarrier.wait(loaded, i & 1)
        x = c8.load(c_lay)
        xr = r8.load(r_lay)
        gl.thread_barrier()                     # every converter warp holds its part: the stage takes the next tile
        _issue_tile(desc_c, desc_r, bt_row, t_lo + i + 1, i + 1 < count, loaded, c8.reshape([1, BLOCK_N, L]),
                    r8.reshape([1, BLOCK_N, R]), TILES_PER_PAGE, BLOCK_N)
        left, _ = _tile_rows(t_lo + i, seq_len, BLOCK_SIZE, BLOCK_N)
        slot = i % SLOTS
        mbarrier.wait(empty.index(slot), ((i // SLOTS) & 1) ^ 1)         # a fresh barrier passes phase 1 at once
        if left < BLOCK_N:
            _fp8_to_slot(x, xr, (c_rows < left)[:, None], (r_rows < left)[:, None], c16.index(slot), r16.index(slot),
                         True)
        else:
            _fp8_to_slot(x, xr, None, None, c16.index(slot), r16.index(slot), False)
        fence_async_shared()
        gl.thread_barrier()                     # all four warps' stores before the one-thread arrive
        mbarrier.arrive(full.index(slot))


@gluon.jit
def _fp8_consumer(q_smem, qp_smem, c16, r16, p_smem, full, empty, t_lo, count, seq_len, qk_scale_log2, o_scale,
                  n, hg, split, num_heads, acc_ptr, ml_ptr, o_ptr, lse_ptr,
                  s_acc_n, s_acc_h, s_acc_s, s_ml_n, s_ml_h, s_o_n, s_o_h, s_lse_n,
                  L: gl.constexpr, BLOCK_SIZE: gl.constexpr, BLOCK_H: gl.constexpr, BLOCK_N: gl.constexpr,
                  SLOTS: gl.constexpr, DIRECT: gl.constexpr):
    """Default warps: the products and the softmax from the fp16 slots, each slot released once its value product
    is complete; then the program's output."""
    mma: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1], instr_shape=[16, BLOCK_H, 16])
    m_i = gl.full([BLOCK_H], float("-inf"), gl.float32, gl.SliceLayout(0, mma))
    l_acc = gl.zeros([BLOCK_N, BLOCK_H], gl.float32, mma)
    o_acc = gl.zeros([L, BLOCK_H], gl.float32, mma)
    for i in range(count):
        slot = i % SLOTS
        mbarrier.wait(full.index(slot), (i // SLOTS) & 1)
        _, valid = _tile_rows(t_lo + i, seq_len, BLOCK_SIZE, BLOCK_N)
        m_i, l_acc, o_acc = _attend_tile(c16.index(slot), r16.index(slot), q_smem, qp_smem, p_smem, valid,
                                         qk_scale_log2, m_i, l_acc, o_acc, BLOCK_N, BLOCK_H, 4)
        gl.thread_barrier()                     # all four warps past the value product before the one-thread arrive
        mbarrier.arrive(empty.index(slot))
    _write_out(o_acc, m_i, l_acc, o_scale, n, hg, split, num_heads, acc_ptr, ml_ptr, o_ptr, lse_ptr,
               s_acc_n, s_acc_h, s_acc_s, s_ml_n, s_ml_h, s_o_n, s_o_h, s_lse_n, L, BLOCK_H, DIRECT, 4)


@gluon.jit(do_not_specialize=["num_splits", "s_acc_n", "s_acc_h", "s_acc_s", "s_ml_n", "s_ml_h"])
def _mla_decode_wgmma_fp8(
    q_lat_ptr, q_pe_ptr, desc_c, desc_r, bt_ptr, seq_lens_ptr, k_scale_ptr, acc_ptr, ml_ptr, o_ptr, lse_ptr,
    num_heads, num_splits, qk_scale_log2,
    s_ql_n, s_ql_h, s_qp_n, s_qp_h, s_bt_n,
    s_acc_n, s_acc_h, s_acc_s, s_ml_n, s_ml_h, s_o_n, s_o_h, s_lse_n,
    L: gl.constexpr, R: gl.constexpr, BLOCK_SIZE: gl.constexpr, BLOCK_H: gl.constexpr, BLOCK_N: gl.constexpr,
    SLOTS: gl.constexpr, CONVERTER_REGS: gl.constexpr, DIRECT: gl.constexpr, num_warps: gl.constexpr,
):
    """fp8 caches: converter warps (a worker partition) and product warps (the default one), see the module doc.
    Shared memory: one fp8 stage (36 KiB), SLOTS fp16 slots (72 KiB each), the queries (36 KiB), p (4 KiB)."""
    gl.static_assert(num_warps == 4, "four product warps (one warpgroup) and four converter warps")
    n = gl.program_id(0).to(gl.int64)
    hg = gl.program_id(1)
    split = gl.program_id(2)
    cache_dt: gl.constexpr = desc_c.dtype
    seq_len, t_lo, count = _split_tiles(seq_lens_ptr, n, split, num_splits, BLOCK_SIZE, BLOCK_N)
    # fp16 products: q at 1/16 (fp8 holds value / k_scale, |x| <= 448, p <= 1), the 16 and k_scale back in the scores
    k_scale = gl.load(k_scale_ptr)
    q_smem, qp_smem = _queries_to_smem(q_lat_ptr, q_pe_ptr, n, hg, num_heads, s_ql_n, s_ql_h, s_qp_n, s_qp_h, 0.0625,
                                       gl.float16, L, R, BLOCK_H, num_warps)
    c8 = gl.allocate_shared_memory(cache_dt, [BLOCK_N, L], gl.NVMMASharedLayout.get_default_for([BLOCK_N, L], cache_dt))
    r8 = gl.allocate_shared_memory(cache_dt, [BLOCK_N, R], gl.NVMMASharedLayout.get_default_for([BLOCK_N, R], cache_dt))
    c16 = gl.allocate_shared_memory(gl.float16, [SLOTS, BLOCK_N, L],
                                    gl.NVMMASharedLayout.get_default_for([BLOCK_N, L], gl.float16))
    r16 = gl.allocate_shared_memory(gl.float16, [SLOTS, BLOCK_N, R],
                                    gl.NVMMASharedLayout.get_default_for([BLOCK_N, R], gl.float16))
    p_smem = gl.allocate_shared_memory(gl.float16, [BLOCK_N, BLOCK_H],
                                       gl.NVMMASharedLayout.get_default_for([BLOCK_N, BLOCK_H], gl.float16))
    loaded = gl.allocate_shared_memory(gl.int64, [1], mbarrier.MBarrierLayout())
    full = gl.allocate_shared_memory(gl.int64, [SLOTS, 1], mbarrier.MBarrierLayout())
    empty = gl.allocate_shared_memory(gl.int64, [SLOTS, 1], mbarrier.MBarrierLayout())
    mbarrier.init(loaded, count=1)
    for b in gl.static_range(SLOTS):
        mbarrier.init(full.index(b), count=1)
        mbarrier.init(empty.index(b), count=1)
    fence_async_shared()
    gl.warp_specialize([
        (_fp8_consumer, (q_smem, qp_smem, c16, r16, p_smem, full, empty, t_lo, count, seq_len,
                         qk_scale_log2 * 16.0 * k_scale, k_scale, n, hg, split, num_heads, acc_ptr, ml_ptr, o_ptr,
                         lse_ptr, s_acc_n, s_acc_h, s_acc_s, s_ml_n, s_ml_h, s_o_n, s_o_h, s_lse_n,
                         L, BLOCK_SIZE, BLOCK_H, BLOCK_N, SLOTS, DIRECT)),
        (_fp8_converter, (desc_c, desc_r, bt_ptr + n * s_bt_n, t_lo, count, seq_len, c8, r8, loaded, c16, r16, full,
                          empty, L, R, BLOCK_SIZE, BLOCK_N, SLOTS)),
    ], [4], [CONVERTER_REGS])
    mbarrier.invalidate(loaded)
    for b in gl.static_range(SLOTS):
        mbarrier.invalidate(full.index(b))
        mbarrier.invalidate(empty.index(b))


@gluon.constexpr_function
def _k_pair_layout():
    """[64 tokens, 128 latent columns] of an fp8 tile as two chunks of the score product's operand: lane 4g + c of
    warp w holds rows 16w + g and 16w + g + 8, columns 32c + 16h + [0, 16) for h = 0, 1 (the last register bit). A
    chunk is every other 16-byte piece of the 128 columns, so the two rows a quarter-warp reads together (g, g + 1)
    fall in different banks under the tile's 128-byte swizzle (64 contiguous columns would put them in the same)."""
    return gl.DistributedLinearLayout([[0, 1], [0, 2], [0, 4], [0, 8], [8, 0], [0, 16]],
                                      [[0, 32], [0, 64], [1, 0], [2, 0], [4, 0]], [[16, 0], [32, 0]], [], [64, 128])


@gluon.constexpr_function
def _k_load_layout(W):
    """[64 tokens, W columns] of an fp8 tile as the score product's operand needs it: lane 4g + c of warp w holds
    rows 16w + g and 16w + g + 8, columns [W/4 c, W/4 (c + 1)), so a thread reads W/4 contiguous bytes a row."""
    per = W // 4
    regs = [[0, 1 << i] for i in range(per.bit_length() - 1)] + [[8, 0]]
    return gl.DistributedLinearLayout(regs, [[0, per], [0, 2 * per], [1, 0], [2, 0], [4, 0]], [[16, 0], [32, 0]], [],
                                      [64, W])


@gluon.constexpr_function
def _v8_load_layout():
    """[64 tokens, 128 latent columns] of an fp8 tile as the value product's operand needs it: lane 4g + c of warp w
    holds columns [32w + 4g, 32w + 4g + 4) (4 contiguous bytes) of tokens 32s + 8u + 2c + h, s and h in {0, 1}, u
    in {0, 1, 2, 3}: per (s, h) four words, one a token, that ``_v8_operand`` transposes."""
    return gl.DistributedLinearLayout([[0, 1], [0, 2], [8, 0], [16, 0], [1, 0], [32, 0]],
                                      [[2, 0], [4, 0], [0, 4], [0, 8], [0, 16]], [[0, 32], [0, 64]], [], [64, 128])


@gluon.constexpr_function
def _k_column_bits(W):
    """The score product's reduction order within chunks of W columns (``_k_operand``'s), as where each bit of a
    position k goes in its cache column: position 16s + 8f + 2c + e is column (W/4) c + 4s + 2f + e, so the 8 values
    a thread of a wgmma holds for one 16-wide step are contiguous and W/16 steps make one W/4-byte read."""
    nb = W.bit_length() - 1
    return [0, nb - 2, nb - 1, 1] + [2 + i for i in range(nb - 4)]          # bits e, c, c, f, then s


@gluon.constexpr_function
def _k_latent_column_bits(L):
    """The same for the latent columns (``_k_pair_load``'s chunks, each in ``_k_column_bits(64)``'s order): chunk
    j = k // 64 is the even (j even) or odd 16-byte pieces of columns [128 (j // 2), 128 (j // 2) + 128), so a
    chunk's column 16c + b is column 32c + b of those."""
    cc = [b if b < 4 else b + 1 for b in _k_column_bits(64)]
    return cc + [4] + [7 + i for i in range(L.bit_length() - 1 - 7)]      # then j's bits: j % 2, j // 2


@gluon.constexpr_function
def _v8_column_bits():
    """The latent column (within the block's 128) of o^T's row r in a block of 128 rows (``_v8_operand``'s order),
    bit by bit as in ``_k_column_bits``: row 64b + 16w + 8x + g is column 32w + 4g + 2b + x, so the four rows a
    thread holds (x, b) are four contiguous columns."""
    return [2, 3, 4, 0, 5, 6, 1]                        # bits g, x, w, b


@gluon.constexpr_function
def _v8_token_bits():
    """The value product's reduction order within a tile (``_v8_operand``'s), for ``_relabel_rows``: bit d of
    position k is bit [3, 4, 1, 2, 0, 5][d] of its token, i.e. position 32s + 16h + 4c + u is token 32s + 8u + 2c + h
    (``_v8_load_layout``'s names), so p^T's rows go into the p slot in that order."""
    return [3, 4, 1, 2, 0, 5]


@gluon.constexpr_function
def _bits_shape(src_of_dst, trailing):
    """A row index of as many bits as ``src_of_dst`` maps as that many dimensions of 2 (the top bit first), then
    the trailing dimensions."""
    return [2] * len(src_of_dst) + list(trailing)


@gluon.constexpr_function
def _relabel_order(src_of_dst, trailing):
    """``_relabel_rows``' permutation of ``_bits_shape``'s dimensions."""
    nb = len(src_of_dst)
    return [nb - 1 - src_of_dst[nb - 1 - i] for i in range(nb)] + [nb + i for i in range(len(trailing))]


@gluon.jit
def _relabel_rows(x, SRC_OF_DST: gl.constexpr):
    """x's rows reordered: row r of the result is row r' of x, where bit d of r is bit SRC_OF_DST[d] of r'. A
    permutation of the row index's bits is a relabelling of the layout's bases, so no value moves."""
    shape: gl.constexpr = _bits_shape(SRC_OF_DST, x.shape[1:])
    order: gl.constexpr = _relabel_order(SRC_OF_DST, x.shape[1:])
    return x.reshape(shape).permute(order.value).reshape(x.shape)     # permute takes a list, not a constexpr


@gluon.constexpr_function
def _inverse_bits(bits):
    """The inverse of a bit map (``_relabel_rows`` the other way)."""
    inv = [0] * len(bits)
    for i, b in enumerate(bits):
        inv[b] = i
    return inv


@gluon.jit
def _k_load(src, W: gl.constexpr):
    """An fp8 slice [64 tokens, W columns] of a tile into registers as the score product's operand needs it."""
    return src.load(_k_load_layout(W))


@gluon.jit
def _k_pair_load(c_s, q: gl.constexpr):
    """Latent columns [128 q, 128 q + 128) of an fp8 tile into registers as two chunks of the score product's
    operand (``_k_pair_layout``), each laid out as ``_k_load``'s [64, 64]."""
    x = c_s.slice(q * 128, 128, dim=1).load(_k_pair_layout())
    return gl.split(x.reshape([64, 4, 2, 16]).permute((0, 1, 3, 2)).reshape([64, 64, 2]))


@gluon.jit
def _k_operand(x, W: gl.constexpr, mma: gl.constexpr):
    """``_k_load``'s registers as the fp16 register operand of the score product, its columns in ``_k_column_bits``'
    order: two neighbouring values a conversion, then a relabelling that moves nothing."""
    x = x.to(gl.float16).reshape([64, 4, W // 16, 2, 2]).permute((0, 2, 3, 1, 4)).reshape([64, W])
    return gl.convert_layout(x, gl.DotOperandLayout(operand_index=0, parent=mma, k_width=2))


@gluon.jit
def _v8_operand(x, mma: gl.constexpr):
    """``_v8_load_layout``'s registers as the fp8 register operand [128 rows, 64 k] of the value product: each 4 x 4
    block of bytes a thread holds (4 columns of 4 tokens, one word a token) transposed by eight byte permutes into
    one word a column, which is what a register of wgmma's fp8 operand holds (4 consecutive k of one row); rows in
    ``_v8_column_bits``' order, k in ``_v8_token_bits``'. No conversion: the tensor cores take e4m3 as it is."""
    t = gl.inline_asm_elementwise(
        "{ .reg .b32 t0, t1, t2, t3; "
        "prmt.b32 t0, $4, $5, 0x5140; prmt.b32 t1, $4, $5, 0x7362; "
        "prmt.b32 t2, $6, $7, 0x5140; prmt.b32 t3, $6, $7, 0x7362; "
        "prmt.b32 $0, t0, t2, 0x5410; prmt.b32 $1, t0, t2, 0x7632; "
        "prmt.b32 $2, t1, t3, 0x5410; prmt.b32 $3, t1, t3, 0x7632; }",
        "=r,=r,=r,=r,r,r,r,r", [x.to(gl.uint8, bitcast=True)], dtype=gl.uint8, is_pure=True, pack=16)
    # after the transposes, the element at (token 32s + 8X + 2c + h, column 32w + 4g + Y) holds the byte of token
    # 32s + 8Y + 2c + h, column 32w + 4g + X; row 64b + 16w + 8x + g of the operand is X = 2b + x
    t = t.to(gl.float8e4nv, bitcast=True).reshape([2, 2, 2, 4, 2, 4, 8, 2, 2])      # s X1 X0 c h | w g Y1 Y0
    y = t.permute((1, 5, 2, 6, 0, 4, 3, 7, 8)).reshape([128, 64])                    # X1 w X0 g | s h c Y
    return gl.convert_layout(y, gl.DotOperandLayout(operand_index=0, parent=mma, k_width=4))


@gluon.jit
def _zero_rows_from(c_s, left, L: gl.constexpr, BLOCK_N: gl.constexpr):
    """Rows from ``left`` on of an fp8 stage's latent part set to zeros (the sequence ended inside the tile: those
    rows may hold any bits, NaN included, and the value product multiplies them by p = 0), 64 columns at a time."""
    z_blk: gl.constexpr = gl.BlockedLayout([1, 16], [8, 4], [4, 1], [1, 0])
    rows = gl.arange(0, BLOCK_N, layout=gl.SliceLayout(1, z_blk))
    for cc in gl.static_range(L // 64):
        part = c_s.slice(cc * 64, 64, dim=1)
        x = part.load(z_blk)
        part.store(gl.where((rows < left)[:, None], x, gl.zeros_like(x)))
    gl.thread_barrier()                         # every warp's zeros in place before any warp reads the values


@gluon.jit
def _fp8_loader(desc_c, desc_r, bt_row, t_lo, count, c8, r8, ready, empty, L: gl.constexpr, R: gl.constexpr,
                BLOCK_SIZE: gl.constexpr, BLOCK_N: gl.constexpr, STAGES: gl.constexpr):
    """Loader warp: each fp8 tile by TMA into the next stage once the product warps have released it."""
    TILES_PER_PAGE: gl.constexpr = (BLOCK_SIZE + BLOCK_N - 1) // BLOCK_N
    for i in range(count):
        s = i % STAGES
        mbarrier.wait(empty.index(s), ((i // STAGES) & 1) ^ 1)          # a fresh barrier passes phase 1 at once
        _issue_tile(desc_c, desc_r, bt_row, t_lo + i, i < count, ready.index(s), c8.index(s).reshape([1, BLOCK_N, L]),
                    r8.index(s).reshape([1, BLOCK_N, R]), TILES_PER_PAGE, BLOCK_N)


@gluon.jit
def _score_product(c_s, r_s, q_smem, qp_smem, L: gl.constexpr, R: gl.constexpr, BLOCK_H: gl.constexpr,
                   BLOCK_N: gl.constexpr, mma: gl.constexpr):
    """s^T [tokens, heads] of an fp8 tile from register operands, 64 latent columns a chunk (read two chunks at a
    time, ``_k_pair_load``) and the position part as the last chunk: each chunk's bytes are read about two chunks
    ahead of its conversion, which runs while the tensor cores take the chunk before. Returns the complete scores."""
    gl.static_assert(L % 128 == 0, "the latent part is read 128 columns at a time")
    NK: gl.constexpr = L // 64 + 1
    x, xa = _k_pair_load(c_s, 0)
    if L > 128:
        xb, odd = _k_pair_load(c_s, 1)
    else:
        xb = _k_load(r_s, R)
    a = _k_operand(x, 64, mma)
    sc = warpgroup_mma(a, q_smem.slice(0, 64, dim=1).permute((1, 0)), gl.zeros([BLOCK_N, BLOCK_H], gl.float32, mma),
                       use_acc=False, is_async=True)
    for j in gl.static_range(1, NK):
        x = xa
        xa = xb
        if j + 2 == NK - 1:
            xb = _k_load(r_s, R)
        elif j + 2 < NK - 1:
            if j % 2 == 1:
                xb = odd
            else:
                xb, odd = _k_pair_load(c_s, (j + 2) // 2)
        if j < NK - 1:
            a_next = _k_operand(x, 64, mma)
            sc = warpgroup_mma(a_next, q_smem.slice(j * 64, 64, dim=1).permute((1, 0)), sc, is_async=True)
        else:
            a_next = _k_operand(x, R, mma)
            sc = warpgroup_mma(a_next, qp_smem.permute((1, 0)), sc, is_async=True)
        sc, a = warpgroup_mma_wait(num_outstanding=1, deps=(sc, a))
        a = a_next
    sc, a = warpgroup_mma_wait(num_outstanding=0, deps=(sc, a))
    return sc


@gluon.jit
def _queries_e4m3(q_lat_ptr, q_pe_ptr, n, hg, num_heads, s_ql_n, s_ql_h, s_qp_n, s_qp_h, inv_smem, L: gl.constexpr,
                  R: gl.constexpr, BLOCK_H: gl.constexpr, num_warps: gl.constexpr):
    """This program's heads of q_lat and q_pe in shared memory as e4m3, heads x width (the score product's second
    operand, K-major as fp8 wgmma needs): each head times the power of two 2^e that brings its largest |value| into
    (224, 448] and rounded (``fp8.round_queries_e4m3`` is the same in torch); 1 / (16 2^e) a head into
    ``inv_smem``, the factor that puts the head's scores into the fp16 score product's units (queries at 1/16)."""
    q, qp = _load_queries(q_lat_ptr, q_pe_ptr, n, hg, num_heads, s_ql_n, s_ql_h, s_qp_n, s_qp_h, L, R, BLOCK_H,
                          num_warps)
    q = q.to(gl.float32)
    qp = qp.to(gl.float32)
    amax = gl.maximum(gl.max(gl.abs(q), axis=1), gl.max(gl.abs(qp), axis=1))
    # a head of zeros takes scale 1; one below 2^-100 (bf16 subnormals) the scale of 2^-100, so that neither the
    # scale nor 1 / (16 scale) leaves fp32's normal range
    scale = gl.exp2(gl.floor(gl.log2(448.0 / gl.where(amax > 0.0, gl.maximum(amax, 2.0 ** -100), 448.0))))
    f8: gl.constexpr = gl.float8e4nv
    q8 = gl.allocate_shared_memory(f8, [BLOCK_H, L], gl.NVMMASharedLayout.get_default_for([BLOCK_H, L], f8),
                                   (q * scale[:, None]).to(f8))
    qp8 = gl.allocate_shared_memory(f8, [BLOCK_H, R], gl.NVMMASharedLayout.get_default_for([BLOCK_H, R], f8),
                                    (qp * scale[:, None]).to(f8))
    inv_smem.store(0.0625 / scale)
    return q8, qp8


@gluon.jit
def _score_product_e4m3(c_s, r_s, q8, qp8, A, B, L: gl.constexpr, GROUP: gl.constexpr):
    """s^T [tokens, heads] of an fp8 tile with e4m3 queries, both operands straight from shared memory (fp8 wgmma,
    m64nHk32): GROUP latent columns a group and the position part as the last one, each group into a fresh
    accumulator (two in turn, the next group in flight while the last one is added) summed in fp32. The two come
    back for the next tile (fresh zeros in the loop would be live registers all along). Returns (s^T, A, B)."""
    NG: gl.constexpr = L // GROUP
    gl.static_assert(L % GROUP == 0 and NG >= 2, "the latent part is two or more whole groups")
    A = warpgroup_mma(c_s.slice(0, GROUP, dim=1), q8.slice(0, GROUP, dim=1).permute((1, 0)), A, use_acc=False,
                      is_async=True)
    B = warpgroup_mma(c_s.slice(GROUP, GROUP, dim=1), q8.slice(GROUP, GROUP, dim=1).permute((1, 0)), B,
                      use_acc=False, is_async=True)
    done = warpgroup_mma_wait(num_outstanding=1, deps=(A,))
    total = done + 0.0
    busy = B
    for g in gl.static_range(2, NG + 1):
        if g < NG:
            a_op = c_s.slice(g * GROUP, GROUP, dim=1)
            b_op = q8.slice(g * GROUP, GROUP, dim=1).permute((1, 0))
        else:
            a_op = r_s
            b_op = qp8.permute((1, 0))
        # the group just added frees its accumulator for the next one while the one in flight finishes
        nxt = warpgroup_mma(a_op, b_op, done, use_acc=False, is_async=True)
        done = warpgroup_mma_wait(num_outstanding=1, deps=(busy,))
        total = total + done
        busy = nxt
    busy = warpgroup_mma_wait(num_outstanding=0, deps=(busy,))
    return total + busy, busy, done


@gluon.jit
def _value_product(c_s, p_t, o0, o1, o2, o3, mma: gl.constexpr):
    """o^T += C_tile^T p^T for an fp8 tile on fp8 wgmma (m64nHk32): the tile's own bytes as the register operand,
    128 latent columns at a time (``_v8_operand``) into o^T's blocks o0..o3, p^T in e4m3 from the p slot (``p_t``:
    [64 k, heads], K-major). Each block's bytes are read while the tensor cores take the block before. Returns the
    four blocks complete."""
    x = c_s.slice(0, 128, dim=1).load(_v8_load_layout())
    o0 = warpgroup_mma(_v8_operand(x, mma), p_t, o0, is_async=True)
    x = c_s.slice(128, 128, dim=1).load(_v8_load_layout())
    o1 = warpgroup_mma(_v8_operand(x, mma), p_t, o1, is_async=True)
    x = c_s.slice(256, 128, dim=1).load(_v8_load_layout())
    o0 = warpgroup_mma_wait(num_outstanding=1, deps=(o0,))
    o2 = warpgroup_mma(_v8_operand(x, mma), p_t, o2, is_async=True)
    x = c_s.slice(384, 128, dim=1).load(_v8_load_layout())
    o1 = warpgroup_mma_wait(num_outstanding=1, deps=(o1,))
    o3 = warpgroup_mma(_v8_operand(x, mma), p_t, o3, is_async=True)
    o2 = warpgroup_mma_wait(num_outstanding=1, deps=(o2,))
    o3 = warpgroup_mma_wait(num_outstanding=0, deps=(o3,))
    return o0, o1, o2, o3


@gluon.jit
def _fp8_scores(q_smem, qp_smem, q_inv, c8, r8, s_smem, ready, empty, s_full, s_empty, count,
                L: gl.constexpr, R: gl.constexpr, BLOCK_H: gl.constexpr, BLOCK_N: gl.constexpr, STAGES: gl.constexpr,
                FP8_QUERIES: gl.constexpr):
    """Score warps: per tile, the score product (then the stage is theirs no more) into a free score slot. With
    FP8_QUERIES the product of the e4m3 queries (``_queries_e4m3``) straight from the stage, each head's scores
    brought back by ``q_inv``; else the fp16 product on register operands."""
    if FP8_QUERIES:
        mma: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1],
                                                      instr_shape=[16, BLOCK_H, 32])
        inv = q_inv.load(gl.SliceLayout(0, mma))
        A = gl.zeros([BLOCK_N, BLOCK_H], gl.float32, mma)
        B = gl.zeros([BLOCK_N, BLOCK_H], gl.float32, mma)
    else:
        mma: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1],
                                                      instr_shape=[16, BLOCK_H, 16])
    for i in range(count):
        s = i % STAGES
        mbarrier.wait(ready.index(s), (i // STAGES) & 1)
        if FP8_QUERIES:
            sc, A, B = _score_product_e4m3(c8.index(s), r8.index(s), q_smem, qp_smem, A, B, L, FP8_QUERY_GROUP)
            sc = sc * inv[None, :]
        else:
            sc = _score_product(c8.index(s), r8.index(s), q_smem, qp_smem, L, R, BLOCK_H, BLOCK_N, mma)
        gl.thread_barrier()                     # all four warps' reads of the stage before the one-thread arrive
        mbarrier.arrive(empty.index(s))
        slot = i % 2
        mbarrier.wait(s_empty.index(slot), ((i // 2) & 1) ^ 1)            # a fresh barrier passes phase 1 at once
        s_smem.index(slot).store(sc)
        gl.thread_barrier()
        mbarrier.arrive(s_full.index(slot))


@gluon.jit
def _fp8_softmax(s_smem, p_smem, a_smem, l_smem, s_full, s_empty, p_full, p_empty, done,
                 t_lo, count, seq_len, qk_scale_log2, n, hg, split, num_heads, ml_ptr, lse_ptr, s_ml_n, s_ml_h, s_lse_n,
                 BLOCK_SIZE: gl.constexpr, BLOCK_H: gl.constexpr, BLOCK_N: gl.constexpr, DIRECT: gl.constexpr):
    """Softmax warps: per tile, the scores out of their slot, the online softmax into a free p slot (p^T in e4m3,
    its rows in the value product's order) with the factor o^T takes first; at the end the program's max and sum
    (for the merge) or its lse, and for the value warps that sum and the sum of the e4m3 p the value product took.
    Being warps of their own, they run one tile's softmax while the score warps take the next tile."""
    mma: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1], instr_shape=[16, BLOCK_H, 16])
    m_i = gl.full([BLOCK_H], float("-inf"), gl.float32, gl.SliceLayout(0, mma))
    l_acc = gl.zeros([BLOCK_N, BLOCK_H], gl.float32, mma)
    l8_acc = gl.zeros([BLOCK_N, BLOCK_H], gl.float32, mma)
    for i in range(count):
        slot = i % 2
        mbarrier.wait(s_full.index(slot), (i // 2) & 1)
        sc = s_smem.index(slot).load(mma)
        gl.thread_barrier()                     # all four warps' reads of the slot before the one-thread arrive
        mbarrier.arrive(s_empty.index(slot))
        _, valid = _tile_rows(t_lo + i, seq_len, BLOCK_SIZE, BLOCK_N)
        mbarrier.wait(p_empty.index(slot), ((i // 2) & 1) ^ 1)
        m_i, alpha, p = _softmax_step(sc, valid, qk_scale_log2, m_i, mma, FP8_LAZY_RESCALE)
        p8 = (p * FP8_P_SCALE).to(gl.float8e4nv)         # o^T and l8 in these units, normalised by l8
        l_acc = l_acc * alpha[None, :] + p
        l8_acc = l8_acc * alpha[None, :] + p8.to(gl.float32)
        p_smem.index(slot).store(_relabel_rows(p8, _v8_token_bits()).permute((1, 0)))
        fence_async_shared()
        a_smem.index(slot).store(alpha)
        gl.thread_barrier()
        mbarrier.arrive(p_full.index(slot))
    l_i = gl.sum(l_acc, axis=0)
    _store_ml(m_i, l_i, n, hg, split, num_heads, ml_ptr, lse_ptr, s_ml_n, s_ml_h, s_lse_n, BLOCK_H, DIRECT, mma)
    l_smem.index(0).store(l_i)                  # for the value warps' normalisation (``_fp8_out_scale``)
    l_smem.index(1).store(gl.sum(l8_acc, axis=0))
    gl.thread_barrier()
    mbarrier.arrive(done)


@gluon.jit
def _fp8_out_scale(l_i, l8, o_scale, DIRECT: gl.constexpr):
    """What the register kernel's o^T columns are multiplied by when stored. o^T sums p8 v over the e4m3 p (p8) the
    value product took, so it is normalised by their sum l8, not by the exact sum l_i: o = sum(p8 v) / sum(p8) is
    then a convex combination of the rows whatever p8's rounding (one dominant row stays exact; with l_i, o would be
    off by the rounding of that row's p, up to 2^-4). One split: o_scale / l8. A split's partial: o_scale l_i / l8,
    so that the merge, which weighs and divides by the exact sums (as the lse needs), averages normalised outputs.
    0-sum heads (no position) as 1."""
    l8 = gl.where(l8 > 0.0, l8, 1.0)
    if DIRECT:
        scale = o_scale / l8
    else:
        scale = o_scale * l_i / l8
    return scale


@gluon.jit
def _fp8_values(c8, p_smem, a_smem, l_smem, ready, empty, p_full, p_empty, done, t_lo, count, seq_len, o_scale,
                n, hg, split, num_heads, acc_ptr, o_ptr, s_acc_n, s_acc_h, s_acc_s, s_o_n, s_o_h,
                L: gl.constexpr, BLOCK_SIZE: gl.constexpr, BLOCK_H: gl.constexpr, BLOCK_N: gl.constexpr,
                STAGES: gl.constexpr, DIRECT: gl.constexpr):
    """Value warps: per tile, once its p is ready, o^T rescaled (when a head's max moved) and the value product (rows
    past the sequence's end zeroed first, on the last tile), then the stage and the p slot go back; at the end o^T
    into the output or the split's partial."""
    gl.static_assert(L == 512, "o^T is kept in four blocks of 128 rows")
    mma: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1], instr_shape=[16, BLOCK_H, 32])
    o0 = gl.zeros([128, BLOCK_H], gl.float32, mma)
    o1 = gl.zeros([128, BLOCK_H], gl.float32, mma)
    o2 = gl.zeros([128, BLOCK_H], gl.float32, mma)
    o3 = gl.zeros([128, BLOCK_H], gl.float32, mma)
    for i in range(count):
        s = i % STAGES
        slot = i % 2
        mbarrier.wait(ready.index(s), (i // STAGES) & 1)
        mbarrier.wait(p_full.index(slot), (i // 2) & 1)
        c_s = c8.index(s)
        left, _ = _tile_rows(t_lo + i, seq_len, BLOCK_SIZE, BLOCK_N)
        if left < BLOCK_N:                      # the score warps are done with this stage (p is out)
            _zero_rows_from(c_s, left, L, BLOCK_N)
        alpha = a_smem.index(slot).load(gl.SliceLayout(0, mma))
        if gl.min(alpha, axis=0) < 1.0:          # some head's max moved (``FP8_LAZY_RESCALE``)
            o0 = o0 * alpha[None, :]
            o1 = o1 * alpha[None, :]
            o2 = o2 * alpha[None, :]
            o3 = o3 * alpha[None, :]
        o0, o1, o2, o3 = _value_product(c_s, p_smem.index(slot).permute((1, 0)), o0, o1, o2, o3, mma)
        gl.thread_barrier()                     # all four warps done with the stage and the slot
        mbarrier.arrive(empty.index(s))
        mbarrier.arrive(p_empty.index(slot))
    mbarrier.wait(done, 0)
    scale = _fp8_out_scale(l_smem.index(0).load(gl.SliceLayout(0, mma)), l_smem.index(1).load(gl.SliceLayout(0, mma)),
                           o_scale, DIRECT)
    _store_o(o0, scale, 0, True, n, hg, split, num_heads, acc_ptr, o_ptr, s_acc_n, s_acc_h, s_acc_s, s_o_n, s_o_h,
             L, BLOCK_H, DIRECT, mma)
    _store_o(o1, scale, 128, True, n, hg, split, num_heads, acc_ptr, o_ptr, s_acc_n, s_acc_h, s_acc_s, s_o_n, s_o_h,
             L, BLOCK_H, DIRECT, mma)
    _store_o(o2, scale, 256, True, n, hg, split, num_heads, acc_ptr, o_ptr, s_acc_n, s_acc_h, s_acc_s, s_o_n, s_o_h,
             L, BLOCK_H, DIRECT, mma)
    _store_o(o3, scale, 384, True, n, hg, split, num_heads, acc_ptr, o_ptr, s_acc_n, s_acc_h, s_acc_s, s_o_n, s_o_h,
             L, BLOCK_H, DIRECT, mma)


@gluon.jit(do_not_specialize=["num_splits", "s_ml_n", "s_ml_h"])     # the partials' strides are multiples of L
def _mla_decode_wgmma_fp8_regs(
    q_lat_ptr, q_pe_ptr, desc_c, desc_r, bt_ptr, seq_lens_ptr, k_scale_ptr, acc_ptr, ml_ptr, o_ptr, lse_ptr,
    num_heads, num_splits, qk_scale_log2,
    s_ql_n, s_ql_h, s_qp_n, s_qp_h, s_bt_n,
    s_acc_n, s_acc_h, s_acc_s, s_ml_n, s_ml_h, s_o_n, s_o_h, s_lse_n,
    L: gl.constexpr, R: gl.constexpr, BLOCK_SIZE: gl.constexpr, BLOCK_H: gl.constexpr, BLOCK_N: gl.constexpr,
    STAGES: gl.constexpr, LOADER_REGS: gl.constexpr, SCORE_REGS: gl.constexpr, SOFTMAX_REGS: gl.constexpr,
    FP8_QUERIES: gl.constexpr, DIRECT: gl.constexpr, num_warps: gl.constexpr,
):
    """fp8 caches: a loader warp, four score warps, four softmax warps and four value warps (the default partition);
    the value product on register operands read from the fp8 stages, the score product too or, with FP8_QUERIES,
    on the stages themselves; the score warps hand each tile's scores to the softmax warps through two fp32 slots,
    and those hand p to the value warps, a tile behind, through two p slots."""
    gl.static_assert(num_warps == 4, "four value warps (one warpgroup) beside the score, softmax and loader warps")
    gl.static_assert(BLOCK_N == 64, "the register operands' layouts are written for 64-token tiles")
    n = gl.program_id(0).to(gl.int64)
    hg = gl.program_id(1)
    split = gl.program_id(2)
    cache_dt: gl.constexpr = desc_c.dtype
    seq_len, t_lo, count = _split_tiles(seq_lens_ptr, n, split, num_splits, BLOCK_SIZE, BLOCK_N)
    k_scale = gl.load(k_scale_ptr)
    vec: gl.constexpr = gl.SwizzledSharedLayout(1, 1, 1, order=[0])
    q_inv = gl.allocate_shared_memory(gl.float32, [BLOCK_H], vec)     # a head's score factor (fp8 queries)
    if FP8_QUERIES:
        q_smem, qp_smem = _queries_e4m3(q_lat_ptr, q_pe_ptr, n, hg, num_heads, s_ql_n, s_ql_h, s_qp_n, s_qp_h, q_inv,
                                        L, R, BLOCK_H, num_warps)
    else:
        q_smem, qp_smem = _queries_to_smem(q_lat_ptr, q_pe_ptr, n, hg, num_heads, s_ql_n, s_ql_h, s_qp_n, s_qp_h,
                                           0.0625, gl.float16, L, R, BLOCK_H, num_warps, True)
    c8 = gl.allocate_shared_memory(cache_dt, [STAGES, BLOCK_N, L],
                                   gl.NVMMASharedLayout.get_default_for([BLOCK_N, L], cache_dt))
    r8 = gl.allocate_shared_memory(cache_dt, [STAGES, BLOCK_N, R],
                                   gl.NVMMASharedLayout.get_default_for([BLOCK_N, R], cache_dt))
    p_smem = gl.allocate_shared_memory(gl.float8e4nv, [2, BLOCK_H, BLOCK_N],      # p^T in e4m3, K-major
                                       gl.NVMMASharedLayout.get_default_for([BLOCK_H, BLOCK_N], gl.float8e4nv))
    a_smem = gl.allocate_shared_memory(gl.float32, [2, BLOCK_H], vec)     # alpha of the tile in each p slot
    l_smem = gl.allocate_shared_memory(gl.float32, [2, BLOCK_H], vec)     # the sums of p and of its e4m3 values
    ready = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    empty = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    p_full = gl.allocate_shared_memory(gl.int64, [2, 1], mbarrier.MBarrierLayout())
    p_empty = gl.allocate_shared_memory(gl.int64, [2, 1], mbarrier.MBarrierLayout())
    done = gl.allocate_shared_memory(gl.int64, [1], mbarrier.MBarrierLayout())
    s_smem = gl.allocate_shared_memory(gl.float32, [2, BLOCK_N, BLOCK_H],            # scores, to the softmax warps
                                       gl.PaddedSharedLayout.with_identity_for([[BLOCK_H, 8]], [BLOCK_N, BLOCK_H],
                                                                               [1, 0]))
    s_full = gl.allocate_shared_memory(gl.int64, [2, 1], mbarrier.MBarrierLayout())
    s_empty = gl.allocate_shared_memory(gl.int64, [2, 1], mbarrier.MBarrierLayout())
    for b in gl.static_range(STAGES):
        mbarrier.init(ready.index(b), count=1)
        mbarrier.init(empty.index(b), count=2)              # the score warps and the value warps
    for b in gl.static_range(2):
        mbarrier.init(p_full.index(b), count=1)
        mbarrier.init(p_empty.index(b), count=1)
        mbarrier.init(s_full.index(b), count=1)
        mbarrier.init(s_empty.index(b), count=1)
    mbarrier.init(done, count=1)
    fence_async_shared()
    gl.warp_specialize([
        (_fp8_values, (c8, p_smem, a_smem, l_smem, ready, empty, p_full, p_empty, done, t_lo, count, seq_len, k_scale,
                       n, hg, split, num_heads, acc_ptr, o_ptr, s_acc_n, s_acc_h, s_acc_s, s_o_n, s_o_h,
                       L, BLOCK_SIZE, BLOCK_H, BLOCK_N, STAGES, DIRECT)),
        (_fp8_scores, (q_smem, qp_smem, q_inv, c8, r8, s_smem, ready, empty, s_full, s_empty, count, L, R, BLOCK_H,
                       BLOCK_N, STAGES, FP8_QUERIES)),
        (_fp8_softmax, (s_smem, p_smem, a_smem, l_smem, s_full, s_empty, p_full, p_empty, done, t_lo, count, seq_len,
                        qk_scale_log2 * 16.0 * k_scale, n, hg, split, num_heads, ml_ptr, lse_ptr, s_ml_n, s_ml_h,
                        s_lse_n, BLOCK_SIZE, BLOCK_H, BLOCK_N, DIRECT)),
        (_fp8_loader, (desc_c, desc_r, bt_ptr + n * s_bt_n, t_lo, count, c8, r8, ready, empty, L, R, BLOCK_SIZE,
                       BLOCK_N, STAGES)),
    ], [4, 4, 1], [SCORE_REGS, SOFTMAX_REGS, LOADER_REGS])
    for b in gl.static_range(STAGES):
        mbarrier.invalidate(ready.index(b))
        mbarrier.invalidate(empty.index(b))
    for b in gl.static_range(2):
        mbarrier.invalidate(p_full.index(b))
        mbarrier.invalidate(p_empty.index(b))
        mbarrier.invalidate(s_full.index(b))
        mbarrier.invalidate(s_empty.index(b))
    mbarrier.invalidate(done)


@functools.lru_cache(maxsize=None)
def _tile_layout(width: int, esize: int):
    """The widest swizzle a tile's row of ``width`` elements holds, as the kernel's shared buffers have."""
    return gl.NVMMASharedLayout(swizzle_byte_width=min(128, width * esize), element_bitwidth=8 * esize, rank=3)


def cache_descriptors(kv_cache: torch.Tensor, L: int, block_n: int = BLOCK_N):
    """Gluon TMA descriptors of the cache [blocks, rows, L + R] for tiles of ``block_n`` rows: the latent part
    (columns [0, L)) and the position part (columns [L, L + R)), each as [blocks, rows, width] so that rows past
    a page's end read as zeros. Built at every call (a few microseconds; CUDA graphs capture them): a descriptor
    holds its tensor, so a cache of them would keep caches vLLM has freed (its profiling runs') alive."""
    nb, bs, D = kv_cache.shape
    strides = [kv_cache.stride(0), kv_cache.stride(1), 1]
    esize = kv_cache.element_size()
    return (TensorDescriptor(kv_cache, [nb, bs, L], strides, [1, block_n, L], _tile_layout(L, esize)),
            TensorDescriptor(kv_cache[:, :, L:], [nb, bs, D - L], strides, [1, block_n, D - L],
                             _tile_layout(D - L, esize)))


@functools.lru_cache(maxsize=None)
def _capability(index):
    return torch.cuda.get_device_capability(index)


def block_h(num_heads: int) -> int:
    """Heads a program: all of them up to MAX_BLOCK_H, at least 16 (a wgmma's N; padded heads are masked)."""
    return min(MAX_BLOCK_H, max(16, triton.next_power_of_2(num_heads)))


def supported(q_lat: torch.Tensor, kv_cache: torch.Tensor) -> bool:
    """Whether this kernel serves the call: an sm_90 device; a bf16 / fp16 cache read by queries of its type, or an
    fp8 (e4m3) cache read by bf16 / fp16 queries; a latent width that is a power of two from 64 to 512 and a
    position width of 64; pages of at least BLOCK_N rows; 16-byte-aligned rows."""
    if not kv_cache.is_cuda or _capability(kv_cache.device.index)[0] != 9:
        return False
    nb, bs, D = kv_cache.shape
    L = q_lat.shape[-1]
    R = D - L
    esize = kv_cache.element_size()
    if kv_cache.dtype == torch.float8_e4m3fn:
        types_ok = q_lat.dtype in (torch.bfloat16, torch.float16)
    else:
        types_ok = kv_cache.dtype in (torch.bfloat16, torch.float16) and q_lat.dtype == kv_cache.dtype
    return (types_ok and 64 <= L <= 512 and L & (L - 1) == 0 and R == 64 and bs >= BLOCK_N
            and kv_cache.stride(-1) == 1
            and (kv_cache.stride(0) * esize) % 16 == 0 and (kv_cache.stride(1) * esize) % 16 == 0
            and kv_cache.data_ptr() % 16 == 0 and (L * esize) % 16 == 0)


def tile_count(seq_len: int, block_size: int) -> int:
    """Tiles the kernel walks for ``seq_len`` positions on pages of ``block_size`` rows (page-aligned tiles)."""
    full = seq_len // block_size
    return full * -(-block_size // BLOCK_N) + -(-(seq_len - full * block_size) // BLOCK_N)


def whole_tile_splits(num_splits: int, tiles: int) -> int:
    """The fewest splits that give each split as many tiles as ``num_splits`` would: a split is a run of whole
    tiles, so e.g. 2,083 tiles (131,072 positions on 1,888-row pages) in 132 splits are 16 a split, which 131
    splits also give, without an empty one."""
    if tiles <= 0:
        return 1
    per = -(-tiles // max(1, num_splits))
    return -(-tiles // per)


def fp8_kernel(L: int) -> str:
    """Which fp8 kernel a call takes: "registers" (``_mla_decode_wgmma_fp8_regs``) at the model's latent width of 512
    (the only width it serves: its value product keeps o^T in four blocks of 128 rows), else "converter"
    (``_mla_decode_wgmma_fp8``).
    Since its partials are stored as 16-byte vectors and its queries loaded so, the register kernel, then with an
    fp16 value product, was as fast as the converter one at 1 x 4K and faster everywhere else (H200, 2026-12-01, CUDA
    graphs, register / converter: 1 x 4K 14.2 / 14.4 us, 1 x 128K 36.8 / 49.4, 32 x 4K 37.5 / 49.5, 128 x 4K 102.9 /
    162.0; its fp8 value product since is faster still at 1 x 128K and equal at 1 x 4K: benchmarks/RESULTS.md)."""
    return "registers" if L == 512 else "converter"


def kernel_and_setting(fp8: bool, registers: bool = False, fp8_queries: bool = True):
    """The Gluon kernel for a cache type (fp8: the register-operand one with ``registers``, else the converter one)
    and its launch constants besides the shapes (``fp8_queries``: the register kernel's score product on e4m3
    queries)."""
    if fp8 and registers:
        return _mla_decode_wgmma_fp8_regs, dict(STAGES=FP8_Q8_STAGES if fp8_queries else FP8_STAGES,
                                                LOADER_REGS=FP8_LOADER_REGS,
                                                SCORE_REGS=FP8_SCORE_REGS, SOFTMAX_REGS=FP8_SOFTMAX_REGS,
                                                FP8_QUERIES=bool(fp8_queries))
    if fp8:
        return _mla_decode_wgmma_fp8, dict(SLOTS=FP8_SLOTS, CONVERTER_REGS=FP8_CONVERTER_REGS)
    return _mla_decode_wgmma, dict(STAGES=STAGES)


def launch(q_lat, q_pe, kv_cache, block_table, seq_lens, k_scale, qk_scale_log2: float, num_splits: int, acc, ml, out,
           lse, acc_strides, ml_strides, fp8_queries: bool = True):
    """Stage 1 on these kernels, into ``triton_decode``'s partial buffers (their strides as ``mla_decode`` has them),
    or into ``out`` / ``lse`` at one split. fp8_queries: the register kernel rounds the queries to e4m3 for its
    score product (the other kernels keep them as they are)."""
    N, H, L = q_lat.shape
    bh = block_h(H)
    desc_c, desc_r = cache_descriptors(kv_cache, L)
    fp8 = kv_cache.dtype == torch.float8_e4m3fn
    kernel, setting = kernel_and_setting(fp8, fp8 and fp8_kernel(L) == "registers", fp8_queries)
    kernel[(N, triton.cdiv(H, bh), num_splits)](
        q_lat, q_pe, desc_c, desc_r, block_table, seq_lens, k_scale, acc, ml, out, lse,
        H, num_splits, qk_scale_log2,
        q_lat.stride(0), q_lat.stride(1), q_pe.stride(0), q_pe.stride(1), block_table.stride(0),
        *acc_strides, *ml_strides, out.stride(0), out.stride(1), lse.stride(0),
        L=L, R=q_pe.shape[-1], BLOCK_SIZE=kv_cache.shape[1], BLOCK_H=bh, BLOCK_N=BLOCK_N,
        DIRECT=num_splits == 1, num_warps=4, **setting,
    )
