"""MLA prefill on CUDA: vLLM's FlashAttention varlen kernel on the expanded form.

Each prefilling sequence's latent rows (its cached context and the new tokens just written) are gathered
from the paged cache and expanded through kv_b_proj into per-head keys [W_UK c | k_pe] and values W_UV c;
FlashAttention then runs causal attention of the new tokens over them (bottom-right aligned, so chunked
prefills with a cached prefix work). Values are zero-padded to the key width for the kernel.
"""

import torch

from kernels.mla.paged import gather_rows, rows_as_float


def prefill_flash(q, kv_cache, block_table, seq_lens: list[int], query_lens: list[int], W_kvb, scale: float,
                  k_scale=None) -> torch.Tensor:
    """q: [T, H, P+R] new tokens packed in order. Returns [T, H, V] in q's dtype."""
    from vllm.vllm_flash_attn import flash_attn_varlen_func

    H, L = W_kvb.shape[0], W_kvb.shape[-1]
    P = q.shape[-1] - (kv_cache.shape[-1] - L)
    V = W_kvb.shape[1] - P
    rows = torch.cat([gather_rows(kv_cache, block_table[i:i + 1], torch.full((1,), n, device=q.device), n)[0][0]
                      for i, n in enumerate(seq_lens)])
    rows = rows_as_float(rows, q.dtype, k_scale)
    W = W_kvb.to(q.dtype)
    kv = torch.einsum("tl,hdl->thd", rows[:, :L], W)                           # [S, H, P+V]
    k = torch.cat([kv[..., :P], rows[:, None, L:].expand(-1, H, -1)], dim=-1).contiguous()
    v = torch.nn.functional.pad(kv[..., P:], (0, k.shape[-1] - V))
    dev = q.device
    cu_q = torch.tensor([0] + list(torch.tensor(query_lens).cumsum(0).tolist()), dtype=torch.int32, device=dev)
    cu_k = torch.tensor([0] + list(torch.tensor(seq_lens).cumsum(0).tolist()), dtype=torch.int32, device=dev)
    out = flash_attn_varlen_func(q.contiguous(), k, v, max_seqlen_q=max(query_lens), cu_seqlens_q=cu_q,
                                 max_seqlen_k=max(seq_lens), cu_seqlens_k=cu_k, softmax_scale=scale, causal=True)
    return out[..., :V]
