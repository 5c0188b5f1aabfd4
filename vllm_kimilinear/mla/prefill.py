"""MLA prefill on CUDA: vLLM's FlashAttention varlen kernel on the expanded form.

Each prefilling sequence's latent rows (its cached context and the new tokens just written) are gathered
from the paged cache and expanded through kv_b_proj into per-head keys [W_UK c | k_pe] and values W_UV c;
FlashAttention then runs causal attention of the new tokens over them (bottom-right aligned, so chunked
prefills with a cached prefix work). Values are zero-padded to the key width for the kernel. The
FlashAttention version is the one vLLM picks for this GPU and config (FA3 on Hopper), as its own backends do.
"""

import functools
from itertools import accumulate

import torch

from kernels.mla.paged import expand_latents, gather_rows, rows_as_float


@functools.cache
def _fa_version(head_size: int) -> int | None:
    from vllm.v1.attention.backends.fa_utils import get_flash_attn_version

    return get_flash_attn_version(head_size=head_size)


def prefill_flash(q, kv_cache, block_table, seq_lens: list[int], query_lens: list[int], W_kvb, scale: float,
                  k_scale=None) -> torch.Tensor:
    """q: [T, H, P+R] new tokens packed in order. Returns [T, H, V] in q's dtype."""
    from vllm.vllm_flash_attn import flash_attn_varlen_func

    L = W_kvb.shape[-1]
    P = q.shape[-1] - (kv_cache.shape[-1] - L)
    V = W_kvb.shape[1] - P
    rows = torch.cat([gather_rows(kv_cache, block_table[i:i + 1], torch.full((1,), n, device=q.device), n)[0][0]
                      for i, n in enumerate(seq_lens)])
    k, v = expand_latents(rows_as_float(rows, q.dtype, k_scale), W_kvb.to(q.dtype), P)
    k = k.contiguous()
    v = torch.nn.functional.pad(v, (0, k.shape[-1] - V))
    dev = q.device
    cu_q = torch.tensor([0, *accumulate(query_lens)], dtype=torch.int32, device=dev)
    cu_k = torch.tensor([0, *accumulate(seq_lens)], dtype=torch.int32, device=dev)
    version = _fa_version(k.shape[-1])
    out = flash_attn_varlen_func(q.contiguous(), k, v, max_seqlen_q=max(query_lens), cu_seqlens_q=cu_q,
                                 max_seqlen_k=max(seq_lens), cu_seqlens_k=cu_k, softmax_scale=scale, causal=True,
                                 **({} if version is None else {"fa_version": version}))
    return out[..., :V]
