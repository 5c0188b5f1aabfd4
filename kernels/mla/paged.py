"""MLA (NoPE, Kimi-Linear's) over vLLM's paged latent cache, in plain PyTorch.

The cache holds one row of L + R values per token: the normalised latent c (L = kv_lora_rank, 512) and
the position-free key part k_pe (R = 64), ``kv_cache: [num_blocks, block_size, L + R]``. Token t of a
sequence lives at row ``block_table[t // block_size] * block_size + t % block_size``.

kv_b_proj maps a latent to per-head keys and values: ``W_kvb: [H, P + V, L]`` (P = qk_nope_head_dim).
    prefill (expanded):  k_h = [W_UK_h c | k_pe],  v_h = W_UV_h c,  softmax(q k^T * scale) v
    decode  (absorbed):  q~_h = W_UK_h^T q_nope_h;  s = q~_h . c + q_pe_h . k_pe;  o_h = W_UV_h (p . c)
Both compute the same attention; the absorbed form reads each cached row once per token.
"""

import torch

from kernels.mla.fp8 import dequantize_latent, quantize_latent


def write_latent_cache(kv_cache, slot_mapping, kv_c, k_pe, k_scale=None):
    """Store new tokens' [c | k_pe] rows at ``slot_mapping``.

    Padding tokens (slot < 0) are written to row 0, which belongs to vLLM's null block 0 and is never read:
    no mask, so no data-dependent shapes or host sync (CUDA-graph safe). A uint8 cache is an fp8 (e4m3)
    cache: rows are stored as saturate(row / k_scale).
    """
    flat = kv_cache.view(-1, kv_cache.shape[-1])
    rows = torch.cat([kv_c, k_pe], dim=-1)
    if flat.dtype == torch.uint8:
        rows = quantize_latent(rows, 1.0 if k_scale is None else k_scale).view(torch.uint8)
    flat.index_copy_(0, slot_mapping.clamp(min=0).long(), rows.to(flat.dtype))


def rows_as_float(rows, dtype, k_scale=None):
    """Cache rows as floats: dequantised from an fp8 (uint8) cache, else cast."""
    if rows.dtype == torch.uint8:
        return dequantize_latent(rows, 1.0 if k_scale is None else k_scale, dtype)
    return rows.to(dtype)


def gather_rows(kv_cache, block_table, seq_lens, max_len: int):
    """Rows of each sequence's first ``max_len`` positions: [N, max_len, L+R], and a validity mask."""
    bs = kv_cache.shape[1]
    pos = torch.arange(max_len, device=kv_cache.device)
    blocks = block_table.long().gather(1, (pos // bs).expand(block_table.shape[0], -1).clamp(
        max=block_table.shape[1] - 1))
    rows = blocks * bs + (pos % bs)[None, :]
    valid = pos[None, :] < seq_lens[:, None]
    flat = kv_cache.view(-1, kv_cache.shape[-1])
    return flat[rows.clamp(min=0)], valid


def expand_latents(rows, W, P: int):
    """Float cache rows [S, L+R] -> per-head keys [S, H, P+R] = [W_UK c | k_pe] and values [S, H, V] = W_UV c.

    W: kv_b_proj as [H, P + V, L], in the rows' dtype.
    """
    H, L = W.shape[0], W.shape[-1]
    kv = torch.einsum("tl,hdl->thd", rows[:, :L], W)                        # [S, H, P+V]
    k = torch.cat([kv[..., :P], rows[:, None, L:].expand(-1, H, -1)], dim=-1)
    return k, kv[..., P:]


def decode_absorbed(q_nope, q_pe, kv_cache, block_table, seq_lens, W_kvb, scale: float, max_len: int,
                    k_scale=None):
    """One query token per sequence. q_nope: [N, H, P]; q_pe: [N, H, R]. Returns [N, H, V] (float32+)."""
    L = W_kvb.shape[-1]
    P = q_nope.shape[-1]
    dtype = torch.promote_types(q_nope.dtype, torch.float32)
    W = W_kvb.to(dtype)
    rows, valid = gather_rows(kv_cache, block_table, seq_lens, max_len)
    rows = rows_as_float(rows, dtype, k_scale)
    c, kpe = rows[..., :L], rows[..., L:]
    q_lat = torch.einsum("nhp,hpl->nhl", q_nope.to(dtype), W[:, :P, :])
    s = (torch.einsum("nhl,ntl->nht", q_lat, c) + torch.einsum("nhr,ntr->nht", q_pe.to(dtype), kpe)) * scale
    s = s.masked_fill(~valid[:, None, :], float("-inf"))
    p = torch.softmax(s, dim=-1)
    o_lat = torch.einsum("nht,ntl->nhl", p, c)
    return torch.einsum("nhl,hvl->nhv", o_lat, W[:, P:, :])


CONTEXT_CHUNK = 16384    # cached rows a prefill expands at a time (keys + values ~400 MB at H=32 in bf16)


def row_range(kv_cache, block_table_row, lo: int, hi: int):
    """Cache rows of positions [lo, hi) of one sequence: [hi - lo, L + R]."""
    bs = kv_cache.shape[1]
    pos = torch.arange(lo, hi, device=kv_cache.device)
    rows = block_table_row.long()[pos // bs] * bs + pos % bs
    return kv_cache.view(-1, kv_cache.shape[-1])[rows]


def context_pieces(total: int, qlen: int, chunk: int = CONTEXT_CHUNK) -> list[tuple[int, int, bool]]:
    """How one sequence's keys are split in a prefill, as (lo, hi, causal): the cached prefix
    [0, total - qlen) in pieces of at most ``chunk`` rows, which every new token sees whole, then the new
    tokens' own rows [total - qlen, total), causally. The expanded keys and values of one piece at a time
    are all a prefill holds, whatever the context length."""
    prefix = total - qlen
    return [(lo, min(lo + chunk, prefix), False) for lo in range(0, prefix, chunk)] + [(prefix, total, True)]


def merge_into(acc, part):
    """Attention over two disjoint key ranges combined: acc and part are (o [Q, H, V], lse [Q, H]), each o
    normalised over its own range and lse the natural log of that range's softmax denominator; acc None is an
    empty range. Folding the pieces in one at a time keeps one partial alive, whatever the context length."""
    if acc is None:
        return part
    (o_a, lse_a), (o_b, lse_b) = acc, part
    lse = torch.logaddexp(lse_a, lse_b)
    return (o_a * torch.exp(lse_a - lse)[..., None].to(o_a.dtype)
            + o_b * torch.exp(lse_b - lse)[..., None].to(o_b.dtype)), lse


def prefill_expanded(q, kv_cache, block_table, seq_lens, query_lens, W_kvb, scale: float, k_scale=None,
                     chunk: int = CONTEXT_CHUNK):
    """Causal attention of each sequence's new tokens over its whole cached prefix (itself included).

    q: [T, H, P+R] for the new tokens, sequences packed in order; seq_lens / query_lens: total (context + new)
    and new tokens per sequence (python ints). Returns [T, H, V] (float32+). The keys are expanded piece by
    piece (``context_pieces``) and the pieces' results merged by their log-sum-exp.
    """
    H = q.shape[1]
    L = W_kvb.shape[-1]
    dtype = torch.promote_types(q.dtype, torch.float32)
    W = W_kvb.to(dtype)
    P = q.shape[-1] - (kv_cache.shape[-1] - L)      # q = [nope | pe], the cache row = [c | k_pe]
    V = W.shape[1] - P
    out = q.new_empty(q.shape[0], H, V, dtype=dtype)
    start = 0
    for i, qlen in enumerate(query_lens):
        total = int(seq_lens[i])
        qi = q[start:start + qlen].to(dtype)
        acc = None
        for lo, hi, causal in context_pieces(total, qlen, chunk):
            k, v = expand_latents(rows_as_float(row_range(kv_cache, block_table[i], lo, hi), dtype, k_scale), W, P)
            s = torch.einsum("qhd,khd->hqk", qi, k) * scale
            if causal:                                  # the new rows: token j sees rows 0..j of this piece
                keep = torch.arange(hi - lo, device=q.device)[None, :] <= torch.arange(qlen, device=q.device)[:, None]
                s = s.masked_fill(~keep[None], float("-inf"))
            lse = torch.logsumexp(s, dim=-1)                                              # [H, Q]
            acc = merge_into(acc, (torch.einsum("hqk,khv->qhv", torch.exp(s - lse[..., None]), v), lse.t()))
        out[start:start + qlen] = acc[0]
        start += qlen
    return out
