"""Load-time checks of a Kimi-Linear config, and the plugin's reading of it.

Every problem is reported as one ``ValueError`` that names the bad value and what is allowed, before
any weights are loaded or any kernel runs.
"""

from dataclasses import dataclass

# Head sizes the KDA kernels (torch and Triton) are written and tested for.
SUPPORTED_KDA_HEAD_DIMS = (64, 128)
SUPPORTED_CONV_SIZES = (2, 3, 4)
# The config key that selects between the two known semantics of this model (README, "Semantics").
SEMANTICS_KEY = "kimi_linear_semantics"
SEMANTICS = ("engine", "hf")
REQUIRED_LINEAR_KEYS = ("kda_layers", "full_attn_layers", "num_heads", "head_dim", "short_conv_kernel_size")


@dataclass(frozen=True)
class KimiLayout:
    """What the plugin reads from the config: 0-based layer kinds and the chosen semantics."""

    kda_layers: frozenset[int]
    mla_layers: frozenset[int]
    kda_num_heads: int
    kda_head_dim: int
    conv_size: int
    semantics: str

    def is_kda(self, layer_idx: int) -> bool:
        return layer_idx in self.kda_layers

    @property
    def hf_semantics(self) -> bool:
        return self.semantics == "hf"


def read_layout(config, tp_size: int = 1) -> KimiLayout:
    """Validate ``config`` (a KimiLinearConfig / PretrainedConfig) and return its layout."""
    lac = getattr(config, "linear_attn_config", None)
    if not isinstance(lac, dict):
        raise ValueError(
            "Kimi-Linear config has no `linear_attn_config` (got "
            f"{lac!r}); it must be a dict with keys {list(REQUIRED_LINEAR_KEYS)}, as in "
            "moonshotai/Kimi-Linear-48B-A3B-Instruct's config.json.")
    missing = [k for k in REQUIRED_LINEAR_KEYS if k not in lac]
    if missing:
        raise ValueError(f"Kimi-Linear `linear_attn_config` lacks {missing}; required keys: "
                         f"{list(REQUIRED_LINEAR_KEYS)}.")
    n = config.num_hidden_layers
    kda = list(lac["kda_layers"])
    full = list(lac["full_attn_layers"])
    both = sorted(set(kda) & set(full))
    if both:
        raise ValueError(f"Kimi-Linear layers {both} are listed as both KDA (`kda_layers`) and MLA "
                         "(`full_attn_layers`); each layer must be exactly one kind.")
    out_of_range = sorted(i for i in kda + full if not 1 <= i <= n)
    if out_of_range:
        raise ValueError(f"Kimi-Linear layer numbers {out_of_range} are outside 1..{n} "
                         "(`kda_layers` / `full_attn_layers` count layers from 1).")
    uncovered = sorted(set(range(1, n + 1)) - set(kda) - set(full))
    if uncovered:
        raise ValueError(f"Kimi-Linear layers {uncovered} are in neither `kda_layers` nor "
                         "`full_attn_layers`; every layer 1..num_hidden_layers must be one kind.")
    head_dim = int(lac["head_dim"])
    if head_dim not in SUPPORTED_KDA_HEAD_DIMS:
        raise ValueError(f"KDA head size {head_dim} (`linear_attn_config.head_dim`) is not supported "
                         f"by vllm-kimilinear's KDA kernels; supported: {list(SUPPORTED_KDA_HEAD_DIMS)}.")
    conv = int(lac["short_conv_kernel_size"])
    if conv not in SUPPORTED_CONV_SIZES:
        raise ValueError(f"KDA short-conv size {conv} is not supported; supported: {list(SUPPORTED_CONV_SIZES)}.")
    heads = int(lac["num_heads"])
    if heads % tp_size:
        raise ValueError(f"KDA num_heads={heads} cannot be split over tensor_parallel_size={tp_size}; "
                         "use a tensor-parallel size that divides it.")
    if full:
        if getattr(config, "q_lora_rank", None) is not None:
            raise ValueError(f"q_lora_rank={config.q_lora_rank}: the plugin's MLA supports only "
                             "q_lora_rank=null (Kimi-Linear projects q directly).")
        if not getattr(config, "mla_use_nope", False):
            raise ValueError("mla_use_nope is not true: the plugin's MLA implements NoPE attention "
                             "(Kimi-Linear's) only.")
        if config.num_attention_heads % tp_size:
            raise ValueError(f"num_attention_heads={config.num_attention_heads} cannot be split over "
                             f"tensor_parallel_size={tp_size}.")
    act = getattr(config, "hidden_act", None) or "silu"
    if act != "silu":
        raise ValueError(f"hidden_act={act!r} is not supported: the plugin's MLPs and experts are SiLU-gated "
                         "(Kimi-Linear's); allowed: 'silu'.")
    semantics = getattr(config, SEMANTICS_KEY, None) or "engine"
    if semantics not in SEMANTICS:
        raise ValueError(f"{SEMANTICS_KEY}={semantics!r} is not known; allowed: {list(SEMANTICS)} "
                         "('engine': vLLM/SGLang/llama.cpp behaviour, 'hf': the released remote code).")
    if semantics == "hf" and getattr(config, "num_expert_group", 1) not in (None, 1):
        raise ValueError(f"{SEMANTICS_KEY}='hf' supports num_expert_group=1 only "
                         f"(got {config.num_expert_group}).")
    scoring = getattr(config, "moe_router_activation_func", None) or "sigmoid"
    if semantics == "hf" and scoring != "sigmoid":
        raise ValueError(f"{SEMANTICS_KEY}='hf' routes with sigmoid scores, as the released remote code does; "
                         f"moe_router_activation_func={scoring!r} is not supported there (allowed: 'sigmoid').")
    return KimiLayout(frozenset(i - 1 for i in kda), frozenset(i - 1 for i in full), heads, head_dim,
                      conv, semantics)


def expected_checkpoint_names(config) -> list[str]:
    """Every tensor name a Kimi-Linear checkpoint for ``config`` must hold (the real release's names)."""
    lay = read_layout(config)
    names = ["model.embed_tokens.weight", "model.norm.weight"]
    if not getattr(config, "tie_word_embeddings", False):
        names.append("lm_head.weight")
    for i in range(config.num_hidden_layers):
        p = f"model.layers.{i}."
        names += [p + "input_layernorm.weight", p + "post_attention_layernorm.weight",
                  p + "self_attn.o_proj.weight"]
        if lay.is_kda(i):
            names += [p + f"self_attn.{n}" for n in (
                "q_proj.weight", "k_proj.weight", "v_proj.weight", "q_conv1d.weight", "k_conv1d.weight",
                "v_conv1d.weight", "f_a_proj.weight", "f_b_proj.weight", "dt_bias", "A_log",
                "b_proj.weight", "g_a_proj.weight", "g_b_proj.weight", "o_norm.weight")]
        else:
            names += [p + f"self_attn.{n}" for n in (
                "q_proj.weight", "kv_a_proj_with_mqa.weight", "kv_a_layernorm.weight", "kv_b_proj.weight")]
        if is_moe_layer(config, i):
            m = p + "block_sparse_moe."
            names += [m + "gate.weight", m + "gate.e_score_correction_bias"]
            for e in range(config.num_experts):
                names += [m + f"experts.{e}.w{j}.weight" for j in (1, 2, 3)]
            if getattr(config, "num_shared_experts", 0):
                names += [m + f"shared_experts.{n}.weight" for n in ("gate_proj", "up_proj", "down_proj")]
        else:
            names += [p + f"mlp.{n}.weight" for n in ("gate_proj", "up_proj", "down_proj")]
    return names


def is_moe_layer(config, layer_idx: int) -> bool:
    """Layer ``layer_idx`` (0-based) has routed experts: past the first dense layers, every moe_layer_freq-th."""
    if not getattr(config, "num_experts", None):
        return False
    return (layer_idx >= getattr(config, "first_k_dense_replace", 0)
            and layer_idx % getattr(config, "moe_layer_freq", 1) == 0)
