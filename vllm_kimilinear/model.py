"""Kimi-Linear-48B-A3B for vLLM: the plugin's ``KimiLinearForCausalLM``.

Top-down: dense MLP and MoE blocks, the decoder layer (a KDA or MLA token mixer, then an MLP or MoE),
the model, and the causal-LM wrapper with weight loading and the hybrid-state class methods that vLLM
sizes its cache pages with. Checkpoint tensor names load unchanged.
"""

from collections.abc import Iterable

import torch
from torch import nn

from vllm.compilation.decorators import support_torch_compile
from vllm.config import VllmConfig
from vllm.model_executor.layers.activation import SiluAndMul
from vllm.model_executor.layers.fused_moe import FusedMoE, fused_moe_make_expert_params_mapping
from vllm.model_executor.layers.layernorm import RMSNorm
from vllm.model_executor.layers.linear import MergedColumnParallelLinear, ReplicatedLinear, RowParallelLinear
from vllm.model_executor.layers.logits_processor import LogitsProcessor
from vllm.model_executor.layers.mamba.mamba_utils import MambaStateCopyFuncCalculator
from vllm.model_executor.layers.vocab_parallel_embedding import ParallelLMHead, VocabParallelEmbedding
from vllm.model_executor.model_loader.weight_utils import default_weight_loader
from vllm.model_executor.models.interfaces import HasInnerState, IsHybrid
from vllm.model_executor.models.utils import extract_layer_index, make_layers, maybe_prefix
from vllm.sequence import IntermediateTensors

from vllm_kimilinear.config import expected_checkpoint_names, is_moe_layer, read_layout
from vllm_kimilinear.kda.layer import KimiDeltaAttention
from vllm_kimilinear.kda.state import kda_state_dtypes, kda_state_shapes
from vllm_kimilinear.mla.layer import KimiMLAAttention
from vllm_kimilinear.router import HFRouter


class KimiMLP(nn.Module):
    """SwiGLU: down(silu(gate x) * up x); gate/up load into one merged projection."""

    def __init__(self, hidden: int, intermediate: int, quant_config, prefix: str, reduce_results: bool = True):
        super().__init__()
        self.gate_up_proj = MergedColumnParallelLinear(hidden, [intermediate] * 2, bias=False,
                                                       quant_config=quant_config, prefix=f"{prefix}.gate_up_proj")
        self.down_proj = RowParallelLinear(intermediate, hidden, bias=False, quant_config=quant_config,
                                           reduce_results=reduce_results, prefix=f"{prefix}.down_proj")
        self.act_fn = SiluAndMul()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.act_fn(self.gate_up_proj(x)[0]))[0]


class KimiMoE(nn.Module):
    """Sigmoid-routed top-k experts through vLLM's FusedMoE, plus the shared expert.

    "engine" semantics: ``e_score_correction_bias`` picks the experts only; weights are the plain
    sigmoid scores, renormalised, times ``routed_scaling_factor``. "hf" semantics: the bias also enters
    the weights (``HFRouter``), as the released remote code computes them.
    """

    def __init__(self, config, quant_config, prefix: str, hf_semantics: bool):
        super().__init__()
        E = config.num_experts
        # the remote code ("hf") computes the router logits in fp32 from fp32 weights; vLLM's in-tree model
        # ("engine") in the model dtype
        self.logits_dtype = torch.float32 if hf_semantics else None
        self.gate = ReplicatedLinear(config.hidden_size, E, bias=False, quant_config=None,
                                     params_dtype=self.logits_dtype, prefix=f"{prefix}.gate")
        self.gate.e_score_correction_bias = nn.Parameter(torch.zeros(E), requires_grad=False)
        shared = None
        if getattr(config, "num_shared_experts", 0):
            shared = KimiMLP(config.hidden_size, config.moe_intermediate_size * config.num_shared_experts,
                             quant_config, prefix=f"{prefix}.shared_experts", reduce_results=False)
        self.shared_experts = shared
        routing = dict(scoring_func=config.moe_router_activation_func,
                       e_score_correction_bias=self.gate.e_score_correction_bias,
                       routed_scaling_factor=config.routed_scaling_factor,
                       use_grouped_topk=config.use_grouped_topk, num_expert_group=config.num_expert_group,
                       topk_group=config.topk_group)
        if hf_semantics:
            routing = dict(custom_routing_function=HFRouter(self.gate.e_score_correction_bias,
                                                            config.routed_scaling_factor))
        self.experts = FusedMoE(shared_experts=shared, num_experts=E, top_k=config.num_experts_per_token,
                                hidden_size=config.hidden_size, intermediate_size=config.moe_intermediate_size,
                                renormalize=config.moe_renormalize, quant_config=quant_config,
                                router_logits_dtype=self.logits_dtype, prefix=f"{prefix}.experts", **routing)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        router_logits, _ = self.gate(x if self.logits_dtype is None else x.to(self.logits_dtype))
        return self.experts(hidden_states=x, router_logits=router_logits)


class KimiDecoderLayer(nn.Module):
    def __init__(self, config, vllm_config: VllmConfig, prefix: str, layout):
        super().__init__()
        idx = extract_layer_index(prefix)
        quant = vllm_config.quant_config
        self.is_kda = layout.is_kda(idx)
        if self.is_kda:
            self.self_attn = KimiDeltaAttention(config, vllm_config, prefix=f"{prefix}.self_attn")
        else:
            self.self_attn = KimiMLAAttention(config, vllm_config, prefix=f"{prefix}.self_attn",
                                              hf_semantics=layout.hf_semantics)
        if is_moe_layer(config, idx):
            self.block_sparse_moe = KimiMoE(config, quant, prefix=f"{prefix}.block_sparse_moe",
                                            hf_semantics=layout.hf_semantics)
            self.mlp = self.block_sparse_moe
        else:
            self.mlp = KimiMLP(config.hidden_size, config.intermediate_size, quant, prefix=f"{prefix}.mlp")
        self.input_layernorm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)

    def forward(self, hidden_states, residual):
        if residual is None:
            residual = hidden_states
            hidden_states = self.input_layernorm(hidden_states)
        else:
            hidden_states, residual = self.input_layernorm(hidden_states, residual)
        hidden_states = self.self_attn(hidden_states)
        hidden_states, residual = self.post_attention_layernorm(hidden_states, residual)
        return self.mlp(hidden_states), residual


@support_torch_compile
class KimiLinearModel(nn.Module):
    def __init__(self, *, vllm_config: VllmConfig, prefix: str = ""):
        super().__init__()
        config = vllm_config.model_config.hf_config
        layout = read_layout(config, vllm_config.parallel_config.tensor_parallel_size)
        self.config = config
        self.embed_tokens = VocabParallelEmbedding(config.vocab_size, config.hidden_size,
                                                   prefix=f"{prefix}.embed_tokens")
        self.start_layer, self.end_layer, self.layers = make_layers(
            config.num_hidden_layers, lambda prefix: KimiDecoderLayer(config, vllm_config, prefix, layout),
            prefix=f"{prefix}.layers")
        self.norm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)

    def embed_input_ids(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.embed_tokens(input_ids)

    def forward(self, input_ids: torch.Tensor | None, positions: torch.Tensor,
                intermediate_tensors: IntermediateTensors | None = None,
                inputs_embeds: torch.Tensor | None = None) -> torch.Tensor:
        hidden_states = inputs_embeds if inputs_embeds is not None else self.embed_input_ids(input_ids)
        residual = None
        for layer in self.layers[self.start_layer:self.end_layer]:
            hidden_states, residual = layer(hidden_states, residual)
        hidden_states, _ = self.norm(hidden_states, residual)
        return hidden_states


class KimiLinearForCausalLM(nn.Module, HasInnerState, IsHybrid):
    def __init__(self, *, vllm_config: VllmConfig, prefix: str = ""):
        super().__init__()
        config = vllm_config.model_config.hf_config
        self.config = config
        self.model = KimiLinearModel(vllm_config=vllm_config, prefix=maybe_prefix(prefix, "model"))
        self.lm_head = ParallelLMHead(config.vocab_size, config.hidden_size, prefix=maybe_prefix(prefix, "lm_head"))
        if getattr(config, "tie_word_embeddings", False):
            self.lm_head = self.lm_head.tie_weights(self.model.embed_tokens)
        self.logits_processor = LogitsProcessor(config.vocab_size)

    def embed_input_ids(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model.embed_input_ids(input_ids)

    def forward(self, input_ids: torch.Tensor | None, positions: torch.Tensor,
                intermediate_tensors: IntermediateTensors | None = None,
                inputs_embeds: torch.Tensor | None = None, **kwargs) -> torch.Tensor:
        return self.model(input_ids, positions, intermediate_tensors, inputs_embeds)

    def compute_logits(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.logits_processor(self.lm_head, hidden_states)

    # --- the hybrid cache: must describe exactly what KimiDeltaAttention allocates ---
    @classmethod
    def get_mamba_state_shape_from_config(cls, vllm_config: VllmConfig):
        return kda_state_shapes(vllm_config)

    @classmethod
    def get_mamba_state_dtype_from_config(cls, vllm_config: VllmConfig):
        return kda_state_dtypes(vllm_config)

    @classmethod
    def get_mamba_state_copy_func(cls):
        return MambaStateCopyFuncCalculator.kda_state_copy_func()

    # --- weights ---
    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> set[str]:
        stacked = [(".gate_up_proj", ".gate_proj", 0), (".gate_up_proj", ".up_proj", 1)]
        experts = fused_moe_make_expert_params_mapping(self, ckpt_gate_proj_name="w1", ckpt_down_proj_name="w2",
                                                       ckpt_up_proj_name="w3",
                                                       num_experts=getattr(self.config, "num_experts", 0) or 0)
        params = dict(self.named_parameters())
        loaded: set[str] = set()
        seen: set[str] = set()
        for ckpt_name, tensor in weights:
            seen.add(ckpt_name)
            if "rotary_emb" in ckpt_name:
                continue
            name = self._load_one(ckpt_name, tensor, params, stacked, experts)
            if name is not None:
                loaded.add(name)
        missing = [n for n in expected_checkpoint_names(self.config) if n not in seen]
        if missing:
            raise ValueError(f"The checkpoint lacks {len(missing)} tensor(s) that this Kimi-Linear config needs, "
                             f"e.g. {missing[:5]}; check that every safetensors shard is present.")
        return loaded

    @staticmethod
    def _load_one(name, tensor, params, stacked, experts) -> str | None:
        for param_name, ckpt_part, shard_id in stacked:
            if ckpt_part in name:       # dense MLP and shared expert; routed experts are named w1/w2/w3
                name = name.replace(ckpt_part, param_name)
                params[name].weight_loader(params[name], tensor, shard_id)
                return name
        for param_name, ckpt_part, expert_id, shard_id in experts:
            if ckpt_part in name:
                name = name.replace(ckpt_part, param_name)
                params[name].weight_loader(params[name], tensor, name, expert_id=expert_id, shard_id=shard_id)
                return name
        if name not in params:
            raise ValueError(f"Checkpoint tensor {name!r} has no place in the plugin's Kimi-Linear model.")
        param = params[name]
        getattr(param, "weight_loader", default_weight_loader)(param, tensor)
        return name
