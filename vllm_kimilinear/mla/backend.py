"""The MLA layers' vLLM attention backend: cache shape, per-step metadata, and the torch implementation.

vLLM pages the latent cache as ``[num_blocks, block_size, 576]`` (MLACommonBackend's layout); the
metadata builder orders decodes first and hands the layer what it needs to find each sequence's rows.
"""

import os
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
    seq_lens_host: list[int]        # seq_lens as host ints when the batch has prefills (else empty)


def _switch(name: str, allowed: str) -> str:
    """A 0 / 1 switch from the environment: "", "0" or "1"; any other value is refused, naming it and, in
    ``allowed``, what each value means."""
    value = os.environ.get(name, "")
    if value not in ("", "0", "1"):
        raise ValueError(f"{name}={value!r}: allowed values are {allowed}")
    return value


FULL_CUDAGRAPH_ENV = "VLLM_KIMILINEAR_MLA_FULL_CUDAGRAPH"


def full_decode_cudagraphs_enabled() -> bool:
    """Whether MLA decode-only batches may be captured in full CUDA graphs (vLLM's FULL_AND_PIECEWISE then
    replays one graph per decode step, attention included). On by default on CUDA (tokens checked against the
    fp64 reference on the H100: ``benchmarks/check_gpu_tokens.py``); ``VLLM_KIMILINEAR_MLA_FULL_CUDAGRAPH=0``
    keeps the attention between piecewise graphs, ``=1`` asks for full graphs on any platform."""
    value = _switch(FULL_CUDAGRAPH_ENV, "0 (piecewise CUDA graphs only) and 1 (full CUDA graphs for decode-only "
                    "batches); unset means 1 on CUDA")
    if value:
        return value == "1"
    from vllm.platforms import current_platform
    return current_platform.is_cuda()


WGMMA_ENV = "VLLM_KIMILINEAR_MLA_WGMMA"


def wgmma_decode_choice() -> bool | None:
    """``mla_decode``'s ``wgmma`` argument from ``VLLM_KIMILINEAR_MLA_WGMMA``: unset means None (the Gluon wgmma
    kernel on Hopper where it supports the cache, the Triton kernel elsewhere), 0 the Triton kernel everywhere, 1
    the wgmma kernel required (an error at the first decode where it cannot run)."""
    value = _switch(WGMMA_ENV, "0 (the Triton decode kernel) and 1 (the Gluon wgmma kernel, Hopper only); unset "
                    "picks the wgmma kernel on Hopper where it applies")
    return None if not value else value == "1"


FP8_QUERIES_ENV = "VLLM_KIMILINEAR_MLA_FP8_QUERIES"


def fp8_queries_choice() -> bool:
    """``mla_decode``'s ``fp8_queries`` from ``VLLM_KIMILINEAR_MLA_FP8_QUERIES``: unset or 1, with an fp8 cache
    the Hopper kernel rounds the queries to e4m3 for its score product (as vLLM's own fp8 attention backends do),
    0 keeps them in 16 bits (slower, the score error of the cache's rounding only)."""
    return _switch(FP8_QUERIES_ENV, "0 (16-bit queries with the fp8 cache) and 1 (queries rounded to e4m3 with "
                   "the fp8 cache, the default)") != "0"


class KimiMLAMetadataBuilder(AttentionMetadataBuilder[KimiMLAMetadata]):
    _cudagraph_support: ClassVar[AttentionCGSupport] = AttentionCGSupport.NEVER

    def __init__(self, kv_cache_spec, layer_names, vllm_config, device):
        super().__init__(kv_cache_spec, layer_names, vllm_config, device)
        self._init_reorder_batch_threshold(1)

    @classmethod
    def get_cudagraph_support(cls, vllm_config, kv_cache_spec) -> AttentionCGSupport:
        # Decode-only batches are graph-safe: the cache write has no mask, the decode kernel reads lengths and
        # block tables from device memory and handles any split count, its workspace comes from the graph pool.
        if full_decode_cudagraphs_enabled():
            return AttentionCGSupport.UNIFORM_SINGLE_TOKEN_DECODE
        return AttentionCGSupport.NEVER


    def build(self, common_prefix_len: int, common_attn_metadata: CommonAttentionMetadata,
              fast_build: bool = False) -> KimiMLAMetadata:
        m = common_attn_metadata
        nd, npf, nd_tok, _ = split_decodes_and_prefills(m, decode_threshold=1)
        qsl = m.query_start_loc_cpu[: m.num_reqs + 1]
        max_seq_len = m.max_seq_len
        if npf == 0 and full_decode_cudagraphs_enabled() and self._captures_full_graphs():
            # A captured decode keeps the split count (and kernel variant) it was captured with: size every
            # decode-only batch for the longest context, so that the warm-up before a capture compiles and
            # loads the very kernels the capture launches (Triton cannot load a module while capturing).
            max_seq_len = self.vllm_config.model_config.max_model_len
        return KimiMLAMetadata(
            num_actual_tokens=m.num_actual_tokens, num_decodes=nd, num_decode_tokens=nd_tok,
            num_prefills=npf, max_seq_len=max_seq_len, seq_lens=m.seq_lens[: m.num_reqs],
            block_table=m.block_table_tensor[: m.num_reqs], slot_mapping=m.slot_mapping[: m.num_actual_tokens],
            query_lens=(qsl[1:] - qsl[:-1]).tolist(), seq_lens_host=self._host_seq_lens(m) if npf else [])

    def _captures_full_graphs(self) -> bool:
        # vLLM's resolved mode (NONE with --enforce-eager): without full graphs a decode sizes itself for its own
        # longest context
        mode = getattr(self.vllm_config.compilation_config, "cudagraph_mode", None)
        return mode is not None and mode.has_full_cudagraphs()

    @staticmethod
    def _host_seq_lens(m: CommonAttentionMetadata) -> list[int]:
        # the model runner passes its host copy along; read the device tensor only if it did not
        host = getattr(m, "_seq_lens_cpu", None)
        return (host if host is not None else m.seq_lens.cpu())[: m.num_reqs].tolist()


class KimiMLAImpl:
    """The attention math on the paged cache. Cache writes: ``kernels.mla.paged``. Decodes (absorbed form):
    ``kernels.mla.triton_decode.mla_decode`` on CUDA (on Hopper its Gluon wgmma kernel), torch elsewhere.
    Prefills (expanded form): vLLM's FlashAttention varlen on CUDA in bf16/fp16, torch otherwise (CPU, float32)."""

    def __init__(self, num_heads: int, qk_nope_head_dim: int, kv_lora_rank: int, scale: float,
                 context_chunk: int = paged.CONTEXT_CHUNK):
        self.num_heads, self.nope, self.kv_lora_rank, self.scale = num_heads, qk_nope_head_dim, kv_lora_rank, scale
        self.context_chunk = context_chunk           # cached rows a prefill expands at a time
        self._wgmma = wgmma_decode_choice()          # checked at load time: a bad value fails here
        self._fp8_queries = fp8_queries_choice()     # likewise
        self._variants_built = False

    def decode(self, q, kv_cache, W_kvb, md: KimiMLAMetadata, k_scale) -> torch.Tensor:
        nd = md.num_decodes
        q_nope, q_pe = q[..., :self.nope], q[..., self.nope:]
        if not q.is_cuda:
            return paged.decode_absorbed(q_nope, q_pe, kv_cache, md.block_table[:nd], md.seq_lens[:nd], W_kvb,
                                         self.scale, md.max_seq_len, k_scale)
        from kernels.mla.triton_decode import mla_decode

        W = W_kvb.to(q.dtype)
        q_lat = torch.bmm(q_nope.transpose(0, 1), W[:, :self.nope, :]).transpose(0, 1)     # [N, H, L]
        fp8_scale = k_scale if kv_cache.dtype == torch.uint8 else None
        if not self._variants_built and not torch.cuda.is_current_stream_capturing():
            self._build_decode_variants(q_lat, q_pe, kv_cache, md, fp8_scale)
        o_lat, _ = mla_decode(q_lat, q_pe, kv_cache, md.block_table[:nd], md.seq_lens[:nd], self.scale,
                              k_scale=fp8_scale, max_seq_len=md.max_seq_len, wgmma=self._wgmma,
                              fp8_queries=self._fp8_queries)
        return torch.bmm(o_lat.transpose(0, 1), W[:, self.nope:, :].transpose(1, 2)).transpose(0, 1)

    def _build_decode_variants(self, q_lat, q_pe, kv_cache, md: KimiMLAMetadata, fp8_scale) -> None:
        """On the first decode outside a graph capture (vLLM's warm-up runs): decode the first sequence once with
        each split count that compiles another kernel variant, so that none is compiled while serving (a batch's
        split count follows its longest context, so a mixed batch may pick any). fp8_scale: the decode's k_scale
        (None unless the cache is fp8)."""
        from kernels.mla.triton_decode import mla_decode, variant_num_splits

        self._variants_built = True
        for splits in variant_num_splits():
            mla_decode(q_lat[:1], q_pe[:1], kv_cache, md.block_table[:1], md.seq_lens[:1], self.scale,
                       num_splits=splits, k_scale=fp8_scale, wgmma=self._wgmma, fp8_queries=self._fp8_queries)

    def forward(self, q, kv_c, k_pe, kv_cache, W_kvb, md: KimiMLAMetadata, out: torch.Tensor,
                k_scale: torch.Tensor | None = None) -> None:
        n = md.num_actual_tokens
        paged.write_latent_cache(kv_cache, md.slot_mapping, kv_c[:n], k_pe[:n], k_scale)
        nd, nd_tok = md.num_decodes, md.num_decode_tokens
        if nd > 0:
            o = self.decode(q[:nd_tok], kv_cache, W_kvb, md, k_scale)
            out[:nd_tok] = o.reshape(nd_tok, -1).to(out.dtype)
        if md.num_prefills > 0:
            sl = slice(nd, nd + md.num_prefills)
            o = self.prefill(q[nd_tok:n], kv_cache, md.block_table[sl], md.seq_lens_host[sl], md.query_lens[sl],
                             W_kvb, k_scale)
            out[nd_tok:n] = o.reshape(n - nd_tok, -1).to(out.dtype)

    def prefill(self, q, kv_cache, block_table, seq_lens: list[int], query_lens: list[int], W_kvb,
                k_scale=None) -> torch.Tensor:
        """The expanded-form prefill of the sequences in ``block_table`` (forward, and the layer's profile run)."""
        if q.is_cuda and q.dtype in (torch.float16, torch.bfloat16):      # FlashAttention has no fp32
            from vllm_kimilinear.mla.prefill import prefill_flash

            return prefill_flash(q, kv_cache, block_table, seq_lens, query_lens, W_kvb, self.scale, k_scale,
                                 chunk=self.context_chunk)
        return paged.prefill_expanded(q, kv_cache, block_table, seq_lens, query_lens, W_kvb, self.scale, k_scale,
                                      chunk=self.context_chunk)


def check_fp8_cache_support(cache_dtype: str, capability: tuple[int, int] | None) -> None:
    """An fp8 latent cache needs e4m3 conversions in the CUDA decode kernels: compute capability 8.9 or newer
    (capability None: no GPU, where the torch path dequantises). Refused at load time, not at the first decode."""
    if cache_dtype.startswith("fp8") and capability is not None and tuple(capability) < (8, 9):
        raise ValueError(f"--kv-cache-dtype {cache_dtype!r} needs a GPU of compute capability 8.9 or newer (the MLA "
                         f"decode kernels convert fp8 e4m3 in hardware); this GPU's is {capability[0]}."
                         f"{capability[1]}. Use --kv-cache-dtype auto (the model dtype) on it.")


class KimiMLABackend(MLACommonBackend):
    supported_dtypes: ClassVar[list[torch.dtype]] = [torch.float16, torch.bfloat16, torch.float32]
    # fp8 / fp8_e4m3: an e4m3 latent cache (vLLM allocates it as uint8) with one scale per layer.
    supported_kv_cache_dtypes: ClassVar[list[str]] = ["auto", "bfloat16", "float16", "fp8", "fp8_e4m3"]

    @staticmethod
    def get_name() -> str:
        return "KIMILINEAR_MLA"

    @staticmethod
    def get_impl_cls() -> type[KimiMLAImpl]:
        return KimiMLAImpl

    @staticmethod
    def get_builder_cls() -> type[KimiMLAMetadataBuilder]:
        return KimiMLAMetadataBuilder

    @staticmethod
    def get_supported_kernel_block_sizes() -> list[int | MultipleOf]:
        return [MultipleOf(16)]
