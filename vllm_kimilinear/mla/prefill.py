"""MLA prefill on CUDA: vLLM's FlashAttention varlen kernel on the expanded form.

Each prefilling sequence's latent rows are read from the paged cache and expanded through kv_b_proj into
per-head keys [W_UK c | k_pe] and values W_UV c, one piece of context at a time (``context_pieces``): all
sequences' new rows in one causal varlen call, then, for sequences with a cached prefix (chunked
prefills), the prefix in pieces of at most ``CONTEXT_CHUNK`` rows, non-causal; the pieces are merged by
their log-sum-exp, so the memory a prefill needs does not grow with the context. Values are zero-padded to
the key width for the kernel. The FlashAttention version is the one vLLM picks for this GPU and config (FA3
on Hopper), as its own backends do.
"""

import functools
from itertools import accumulate

import torch

from kernels.mla.paged import CONTEXT_CHUNK, context_pieces, expand_latents, merge_into, row_range, rows_as_float


@functools.cache
def fa_version(head_size: int) -> int | None:
    """vLLM's choice of FlashAttention version for this GPU, head size and config; first asked (and kept) when
    the MLA layers are built, under the engine's config, so that its attention settings count."""
    from vllm.v1.attention.backends.fa_utils import get_flash_attn_version

    return get_flash_attn_version(head_size=head_size)


def _cu_seqlens(lens: list[int], dev) -> torch.Tensor:
    """Cumulative lengths on the device, copied from pinned host memory without waiting for the stream."""
    return torch.tensor([0, *accumulate(lens)], dtype=torch.int32).pin_memory().to(dev, non_blocking=True)


def _flash(q, k, v, q_lens: list[int], k_lens: list[int], scale: float, causal: bool, with_lse: bool):
    from vllm.vllm_flash_attn import flash_attn_varlen_func

    version = fa_version(k.shape[-1])
    cu_q = _cu_seqlens(q_lens, q.device)
    return flash_attn_varlen_func(
        q, k, v, max_seqlen_q=max(q_lens), max_seqlen_k=max(k_lens), softmax_scale=scale, causal=causal,
        cu_seqlens_q=cu_q, cu_seqlens_k=cu_q if k_lens == q_lens else _cu_seqlens(k_lens, q.device),
        return_softmax_lse=with_lse, **({} if version is None else {"fa_version": version}))


def prefill_flash(q, kv_cache, block_table, seq_lens: list[int], query_lens: list[int], W_kvb, scale: float,
                  k_scale=None, chunk: int = CONTEXT_CHUNK) -> torch.Tensor:
    """q: [T, H, P+R] new tokens packed in order. Returns [T, H, V] in q's dtype."""
    L = W_kvb.shape[-1]
    P = q.shape[-1] - (kv_cache.shape[-1] - L)
    V = W_kvb.shape[1] - P
    W = W_kvb.to(q.dtype)
    q = q.contiguous()

    def expand(i, lo, hi):                # keys [hi - lo, H, P+R], values [hi - lo, H, V] of sequence i's rows
        return expand_latents(rows_as_float(row_range(kv_cache, block_table[i], lo, hi), q.dtype, k_scale), W, P)

    def padded(v, width):
        return torch.nn.functional.pad(v, (0, width - v.shape[-1]))

    # the new rows of every sequence: one causal call (bottom-right and top-left agree: as many keys as queries)
    news = [expand(i, n - ql, n) for i, (n, ql) in enumerate(zip(seq_lens, query_lens))]
    k = torch.cat([kk for kk, _ in news]).contiguous()
    v = padded(torch.cat([vv for _, vv in news]), k.shape[-1])
    has_prefix = any(n > ql for n, ql in zip(seq_lens, query_lens))
    res = _flash(q, k, v, query_lens, query_lens, scale, causal=True, with_lse=has_prefix)
    del news, k, v                       # the prefix pieces below stay within this peak
    if not has_prefix:
        return res[..., :V]
    out, lse = res[0][..., :V], res[1]                                     # lse: [H, T]
    start = 0
    for i, (n, ql) in enumerate(zip(seq_lens, query_lens)):
        if n > ql:
            qi = q[start:start + ql]
            acc = (out[start:start + ql].float(), lse[:, start:start + ql].t().float())
            for lo, hi, causal in context_pieces(n, ql, chunk)[:-1]:     # the cached prefix, piece by piece
                kk, vv = expand(i, lo, hi)
                o_p, lse_p = _flash(qi, kk.contiguous(), padded(vv, kk.shape[-1]), [ql], [hi - lo], scale,
                                    causal=False, with_lse=True)
                acc = merge_into(acc, (o_p[..., :V].float(), lse_p.t().float()))     # one partial alive at a time
                del kk, vv, o_p, lse_p
            out[start:start + ql] = acc[0].to(out.dtype)
        start += ql
    return out
