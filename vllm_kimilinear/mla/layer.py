"""Kimi-Linear's MLA token mixer (NoPE, no q LoRA) and the latent-cache attention layer under it.

    q          = q_proj x                          -> [T, H, 128 nope | 64 pe]
    c | k_pe   = kv_a_proj_with_mqa x              -> 512 | 64, c normalised by kv_a_layernorm
    attention  over the paged cache of [c | k_pe] rows (expanded through kv_b_proj for prefills,
               absorbed for decodes), softmax scale (128 + 64)^-0.5, no rotary embedding
    out        = o_proj(attention)
"""

import torch
from torch import nn

from vllm.config import VllmConfig, get_current_vllm_config
from vllm.distributed import get_tensor_model_parallel_world_size
from vllm.forward_context import get_forward_context
from vllm.model_executor.layers.attention_layer_base import AttentionLayerBase
from vllm.model_executor.layers.layernorm import RMSNorm
from vllm.model_executor.layers.linear import ColumnParallelLinear, ReplicatedLinear, RowParallelLinear
from vllm.model_executor.model_loader.weight_utils import sharded_weight_loader
from vllm.model_executor.utils import set_weight_attrs
from vllm.utils.torch_utils import (LayerNameType, _encode_layer_name, _resolve_layer_name,
                                    direct_register_custom_op)
from vllm.v1.kv_cache_interface import MLAAttentionSpec

from kernels.mla.paged import CONTEXT_CHUNK
from vllm_kimilinear.mla.backend import KimiMLABackend, check_fp8_cache_support

HF_LATENT_NORM_EPS = 1e-6   # the released remote code's kv_a_layernorm eps ("hf" semantics)


class LatentAttention(nn.Module, AttentionLayerBase):
    """Owns one MLA layer's paged latent cache; vLLM finds it in the static forward context."""

    def __init__(self, num_heads: int, qk_nope_head_dim: int, qk_rope_head_dim: int, v_head_dim: int,
                 kv_lora_rank: int, kv_b_proj: nn.Module, vllm_config: VllmConfig, prefix: str):
        super().__init__()
        self.prefix = prefix
        self.num_heads = num_heads
        self.nope, self.rope, self.v_head_dim, self.kv_lora_rank = (qk_nope_head_dim, qk_rope_head_dim,
                                                                    v_head_dim, kv_lora_rank)
        self.head_size = kv_lora_rank + qk_rope_head_dim
        self.kv_b_proj = [kv_b_proj]          # a list, so its weights are not registered twice
        self.scale = (qk_nope_head_dim + qk_rope_head_dim) ** -0.5
        self.cache_dtype_str = vllm_config.cache_config.cache_dtype
        if self.cache_dtype_str not in KimiMLABackend.supported_kv_cache_dtypes:
            raise ValueError(f"--kv-cache-dtype {self.cache_dtype_str!r} is not supported by vllm-kimilinear's "
                             f"MLA cache yet; supported: {KimiMLABackend.supported_kv_cache_dtypes}.")
        check_fp8_cache_support(self.cache_dtype_str,
                                torch.cuda.get_device_capability() if torch.cuda.is_available() else None)
        # a prefill expands at most this many cached rows at a time: never more than one step's tokens, the
        # most the profile run measures
        self.impl = KimiMLABackend.get_impl_cls()(
            num_heads, qk_nope_head_dim, kv_lora_rank, self.scale,
            context_chunk=min(CONTEXT_CHUNK, vllm_config.scheduler_config.max_num_batched_tokens))
        self._profiled = False
        if torch.cuda.is_available():       # pick the FlashAttention version now, under this engine's config
            from vllm_kimilinear.mla.prefill import fa_version

            fa_version(qk_nope_head_dim + qk_rope_head_dim)
        # The fp8 cache's scale (stored = row / k_scale). Kimi-Linear checkpoints ship none; 1.0 suits the
        # RMS-normalised latent (kernels/mla/fp8.py).
        self.register_buffer("k_scale", torch.ones(1, dtype=torch.float32), persistent=False)
        self.kv_cache = torch.tensor([])
        ctx = get_current_vllm_config().compilation_config.static_forward_context
        if prefix in ctx:
            raise ValueError(f"Duplicate layer name: {prefix}")
        ctx[prefix] = self

    def get_attn_backend(self):
        return KimiMLABackend

    def get_kv_cache_spec(self, vllm_config: VllmConfig) -> MLAAttentionSpec:
        from vllm.utils.torch_utils import kv_cache_dtype_str_to_dtype

        return MLAAttentionSpec(block_size=vllm_config.cache_config.block_size, num_kv_heads=1,
                                head_size=self.head_size,
                                dtype=kv_cache_dtype_str_to_dtype(self.cache_dtype_str, vllm_config.model_config),
                                cache_dtype_str=self.cache_dtype_str)

    def kv_b_weight(self) -> torch.Tensor:
        """kv_b_proj's weight as [local heads, nope + v, kv_lora_rank]."""
        return self.kv_b_proj[0].weight.view(self.num_heads, self.nope + self.v_head_dim, self.kv_lora_rank)

    def attend(self, q, kv_c, k_pe, out) -> None:
        md = get_forward_context().attn_metadata
        if md is None:          # profile run
            self._profile_prefill(q, kv_c, k_pe, out)
            return
        self.impl.forward(q, kv_c, k_pe, self.kv_cache, self.kv_b_weight(), md[self.prefix], out, self.k_scale)

    def _profile_prefill(self, q, kv_c, k_pe, out) -> None:
        """On CUDA, vLLM sizes the KV cache from the peak memory of its profile run (the first forward without
        attention metadata): run the real prefill on the whole profile batch as one sequence, over a
        throw-away one-page cache, so that the expanded keys and values are counted. A prefill over a cached
        prefix expands it at most ``context_chunk`` rows at a time, after freeing the new rows' expansion, so
        it stays within this peak. Later forwards without metadata skip it."""
        T = q.shape[0]
        if self._profiled or not q.is_cuda or T == 0 or torch.cuda.is_current_stream_capturing():
            return
        self._profiled = True
        cache = torch.cat([kv_c, k_pe], dim=-1).unsqueeze(0)              # one page of T rows, in q's dtype
        table = torch.zeros(1, 1, dtype=torch.int32, device=q.device)
        o = self.impl.prefill(q, cache, table, [T], [T], self.kv_b_weight())   # as forward would (fp32: torch)
        out.copy_(o.reshape(T, -1))


class KimiMLAAttention(nn.Module):
    def __init__(self, config, vllm_config: VllmConfig, prefix: str, hf_semantics: bool):
        super().__init__()
        tp = get_tensor_model_parallel_world_size()
        self.num_heads = config.num_attention_heads
        self.local_heads = self.num_heads // tp
        self.nope, self.rope = config.qk_nope_head_dim, config.qk_rope_head_dim
        self.v_head_dim, self.kv_lora_rank = config.v_head_dim, config.kv_lora_rank
        quant = vllm_config.quant_config
        hidden = config.hidden_size
        self.q_proj = ColumnParallelLinear(hidden, self.num_heads * (self.nope + self.rope), bias=False,
                                           quant_config=quant, prefix=f"{prefix}.q_proj")
        self.kv_a_proj_with_mqa = ReplicatedLinear(hidden, self.kv_lora_rank + self.rope, bias=False,
                                                   quant_config=quant, prefix=f"{prefix}.kv_a_proj_with_mqa")
        eps = HF_LATENT_NORM_EPS if hf_semantics else config.rms_norm_eps
        self.kv_a_layernorm = RMSNorm(self.kv_lora_rank, eps=eps)
        # kv_b_proj is only ever used as a matrix (expanded prefill, absorbed decode), so it is a plain
        # parameter sharded by heads: no linear backend may repack it after loading.
        self.kv_b_proj = nn.Module()
        w = nn.Parameter(torch.empty(self.local_heads * (self.nope + self.v_head_dim), self.kv_lora_rank),
                         requires_grad=False)
        set_weight_attrs(w, {"weight_loader": sharded_weight_loader(0)})
        self.kv_b_proj.register_parameter("weight", w)
        self.o_proj = RowParallelLinear(self.num_heads * self.v_head_dim, hidden, bias=False, quant_config=quant,
                                        prefix=f"{prefix}.o_proj")
        self.attn = LatentAttention(self.local_heads, self.nope, self.rope, self.v_head_dim, self.kv_lora_rank,
                                    self.kv_b_proj, vllm_config, prefix=f"{prefix}.attn")

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        T = hidden_states.shape[0]
        q = self.q_proj(hidden_states)[0].view(T, self.local_heads, self.nope + self.rope)
        latent = self.kv_a_proj_with_mqa(hidden_states)[0]
        kv_c, k_pe = latent.split([self.kv_lora_rank, self.rope], dim=-1)
        kv_c = self.kv_a_layernorm(kv_c.contiguous())
        out = torch.zeros(T, self.local_heads * self.v_head_dim, dtype=hidden_states.dtype,
                          device=hidden_states.device)
        torch.ops.vllm.kimilinear_mla_attention(q, kv_c, k_pe.contiguous(), out,
                                                _encode_layer_name(self.attn.prefix))
        return self.o_proj(out)[0]


def _mla_attention(q: torch.Tensor, kv_c: torch.Tensor, k_pe: torch.Tensor, out: torch.Tensor,
                   layer_name: LayerNameType) -> None:
    get_forward_context().no_compile_layers[_resolve_layer_name(layer_name)].attend(q, kv_c, k_pe, out)


def _mla_attention_fake(q: torch.Tensor, kv_c: torch.Tensor, k_pe: torch.Tensor, out: torch.Tensor,
                        layer_name: LayerNameType) -> None:
    return None


direct_register_custom_op("kimilinear_mla_attention", _mla_attention, mutates_args=["out"],
                          fake_impl=_mla_attention_fake)
