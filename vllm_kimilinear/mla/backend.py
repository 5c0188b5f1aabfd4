"""The MLA layers' vLLM attention backend: cache shape, per-step metadata, and the torch implementation.

vLLM pages the latent cache as ``[num_blocks, block_size, 576]`` (MLACommonBackend's layout); the
metadata builder orders decodes first and hands the layer what it needs to find each sequence's rows.
"""

from dataclasses import dataclass
from typing import ClassVar

import torch

from vllm.model_executor.layers.attention.mla_attention import MLACommonBackend
from vllm.v1.attention.backend import (AttentionCGSupport, AttentionMetadataBuilder, CommonAttentionMetadata,
                                       MultipleOf)
from vllm.v1.attention.backends.utils import split_decodes_and_prefills

from kernels.mla import paged


@dataclass
class KimiMLAMetadata:
    num_actual_tokens: int
    num_decodes: int
    num_decode_tokens: int
    num_prefills: int
    max_seq_len: int
    seq_lens: torch.Tensor          # [num_reqs] context + new tokens
    block_table: torch.Tensor       # [num_reqs, max_blocks]
    slot_mapping: torch.Tensor      # [num_actual_tokens] cache row of each new token (-1: padding)
    query_lens: list[int]           # new tokens per request (host ints, for the prefill loop)


class KimiMLAMetadataBuilder(AttentionMetadataBuilder[KimiMLAMetadata]):
    _cudagraph_support: ClassVar[AttentionCGSupport] = AttentionCGSupport.NEVER

    def __init__(self, kv_cache_spec, layer_names, vllm_config, device):
        super().__init__(kv_cache_spec, layer_names, vllm_config, device)
        self._init_reorder_batch_threshold(1)

    def build(self, common_prefix_len: int, common_attn_metadata: CommonAttentionMetadata,
              fast_build: bool = False) -> KimiMLAMetadata:
        m = common_attn_metadata
        nd, npf, nd_tok, _ = split_decodes_and_prefills(m, decode_threshold=1)
        qsl = m.query_start_loc_cpu[: m.num_reqs + 1]
        return KimiMLAMetadata(
            num_actual_tokens=m.num_actual_tokens, num_decodes=nd, num_decode_tokens=nd_tok,
            num_prefills=npf, max_seq_len=m.max_seq_len, seq_lens=m.seq_lens[: m.num_reqs],
            block_table=m.block_table_tensor[: m.num_reqs], slot_mapping=m.slot_mapping[: m.num_actual_tokens],
            query_lens=(qsl[1:] - qsl[:-1]).tolist())


class TorchMLAImpl:
    """The attention math on the paged cache (``kernels.mla.paged``), any device."""

    def __init__(self, num_heads: int, qk_nope_head_dim: int, kv_lora_rank: int, scale: float):
        self.num_heads, self.nope, self.kv_lora_rank, self.scale = num_heads, qk_nope_head_dim, kv_lora_rank, scale

    def forward(self, q, kv_c, k_pe, kv_cache, W_kvb, md: KimiMLAMetadata, out: torch.Tensor) -> None:
        n = md.num_actual_tokens
        paged.write_latent_cache(kv_cache, md.slot_mapping, kv_c[:n], k_pe[:n])
        nd, nd_tok = md.num_decodes, md.num_decode_tokens
        if nd > 0:
            qd = q[:nd_tok]
            o = paged.decode_absorbed(qd[..., :self.nope], qd[..., self.nope:], kv_cache, md.block_table[:nd],
                                      md.seq_lens[:nd], W_kvb, self.scale, md.max_seq_len)
            out[:nd_tok] = o.reshape(nd_tok, -1).to(out.dtype)
        if md.num_prefills > 0:
            sl = slice(nd, nd + md.num_prefills)
            o = paged.prefill_expanded(q[nd_tok:n], kv_cache, md.block_table[sl], md.seq_lens[sl].tolist(),
                                       md.query_lens[sl], W_kvb, self.scale)
            out[nd_tok:n] = o.reshape(n - nd_tok, -1).to(out.dtype)


class KimiMLABackend(MLACommonBackend):
    supported_dtypes: ClassVar[list[torch.dtype]] = [torch.float16, torch.bfloat16, torch.float32]
    supported_kv_cache_dtypes: ClassVar[list[str]] = ["auto", "bfloat16", "float16", "float32"]

    @staticmethod
    def get_name() -> str:
        return "KIMILINEAR_MLA"

    @staticmethod
    def get_impl_cls() -> type[TorchMLAImpl]:
        return TorchMLAImpl

    @staticmethod
    def get_builder_cls() -> type[KimiMLAMetadataBuilder]:
        return KimiMLAMetadataBuilder

    @staticmethod
    def get_supported_kernel_block_sizes() -> list[int | MultipleOf]:
        return [MultipleOf(16)]
