"""The KDA token mixer as a vLLM layer: the checkpoint's weights, projections, and the attention core.

    q, k, v = SiLU(conv4(W_{q,k,v} x))           (depthwise causal, state kept per sequence)
    g       = -exp(A_log) * softplus(f_b(f_a x) + dt_bias)
    beta    = sigmoid(b_proj x)
    o       = KDA(q/|q|, k/|k|, v, g, beta)      (chunked for prefills, one step for decodes)
    out     = o_proj(RMSNorm(o) * o_norm.weight * sigmoid(g_b(g_a x)))

The core runs inside the custom op ``vllm::kimilinear_kda_core`` so that vLLM's torch.compile and CUDA
graphs treat it as one opaque, splitting step; it reads the layer's state slots from the forward context.
"""

import torch
from torch import nn

from vllm.config import VllmConfig, get_current_vllm_config
from vllm.distributed import get_tensor_model_parallel_world_size
from vllm.forward_context import get_forward_context
from vllm.model_executor.layers.linear import ColumnParallelLinear, ReplicatedLinear, RowParallelLinear
from vllm.model_executor.layers.mamba.abstract import MambaBase
from vllm.model_executor.layers.mamba.mamba_utils import is_conv_state_dim_first
from vllm.model_executor.model_loader.weight_utils import sharded_weight_loader
from vllm.model_executor.models.utils import extract_layer_index
from vllm.model_executor.utils import set_weight_attrs
from vllm.utils.torch_utils import (LayerNameType, _encode_layer_name, _resolve_layer_name,
                                    direct_register_custom_op)
from vllm.v1.attention.backends.registry import MambaAttentionBackendEnum

from vllm_kimilinear.kda import dispatch
from vllm_kimilinear.kda.backend import KimiKDABackend
from vllm_kimilinear.kda.state import kda_state_dtypes, kda_state_shapes


class GatedRMSNorm(nn.Module):
    """Per-head RMSNorm of the KDA output, times a sigmoid output gate (``o_norm`` in the checkpoint)."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight.float()
        return (y * torch.sigmoid(gate.float())).to(x.dtype)


class KimiDeltaAttention(nn.Module, MambaBase):
    def __init__(self, config, vllm_config: VllmConfig, prefix: str):
        super().__init__()
        lac = config.linear_attn_config
        self.prefix = prefix
        self.layer_idx = extract_layer_index(prefix)
        self.tp_size = get_tensor_model_parallel_world_size()
        self.num_heads = lac["num_heads"]
        self.head_dim = lac["head_dim"]
        self.conv_size = lac["short_conv_kernel_size"]
        self.local_heads = self.num_heads // self.tp_size
        self.scale = self.head_dim ** -0.5
        if vllm_config.speculative_config is not None:
            raise ValueError("vllm-kimilinear's KDA layers do not support speculative decoding yet; "
                             "run without --speculative-config.")
        self._prefill_chunk = dispatch.prefill_chunk()   # read once: a bad value fails here, not in a prefill
        self._state_shapes = kda_state_shapes(vllm_config)
        self._state_dtypes = kda_state_dtypes(vllm_config)
        self._max_seqs = vllm_config.scheduler_config.max_num_seqs
        self._profiled = False

        hidden, proj = config.hidden_size, self.num_heads * self.head_dim
        quant = vllm_config.quant_config
        for name in ("q_proj", "k_proj", "v_proj"):
            setattr(self, name, ColumnParallelLinear(hidden, proj, bias=False, quant_config=quant,
                                                     prefix=f"{prefix}.{name}"))
        for name in ("q_conv1d", "k_conv1d", "v_conv1d"):   # checkpoint layout [H*D, 1, W]
            w = nn.Parameter(torch.empty(proj // self.tp_size, 1, self.conv_size, dtype=torch.float32),
                             requires_grad=False)
            set_weight_attrs(w, {"weight_loader": sharded_weight_loader(0)})
            setattr(self, name, nn.Module())
            getattr(self, name).register_parameter("weight", w)
        self.f_a_proj = ReplicatedLinear(hidden, self.head_dim, bias=False, quant_config=quant,
                                         prefix=f"{prefix}.f_a_proj")
        self.f_b_proj = ColumnParallelLinear(self.head_dim, proj, bias=False, quant_config=quant,
                                             prefix=f"{prefix}.f_b_proj")
        self.dt_bias = nn.Parameter(torch.empty(proj // self.tp_size, dtype=torch.float32),
                                    requires_grad=False)
        set_weight_attrs(self.dt_bias, {"weight_loader": sharded_weight_loader(0)})
        self.A_log = nn.Parameter(torch.empty(1, 1, self.local_heads, 1, dtype=torch.float32),
                                  requires_grad=False)
        set_weight_attrs(self.A_log, {"weight_loader": sharded_weight_loader(2)})
        self.b_proj = ColumnParallelLinear(hidden, self.num_heads, bias=False, quant_config=quant,
                                           prefix=f"{prefix}.b_proj")
        self.g_a_proj = ReplicatedLinear(hidden, self.head_dim, bias=False, quant_config=quant,
                                         prefix=f"{prefix}.g_a_proj")
        self.g_b_proj = ColumnParallelLinear(self.head_dim, proj, bias=False, quant_config=quant,
                                             prefix=f"{prefix}.g_b_proj")
        self.o_norm = GatedRMSNorm(self.head_dim, config.rms_norm_eps)
        self.o_proj = RowParallelLinear(proj, hidden, bias=False, quant_config=quant,
                                        prefix=f"{prefix}.o_proj")

        ctx = get_current_vllm_config().compilation_config.static_forward_context
        if prefix in ctx:
            raise ValueError(f"Duplicate layer name: {prefix}")
        ctx[prefix] = self

    # --- MambaBase: the state spec and backend vLLM allocates and builds metadata with ---
    def get_state_shape(self):
        return self._state_shapes

    def get_state_dtype(self):
        return self._state_dtypes

    @property
    def mamba_type(self) -> MambaAttentionBackendEnum:
        return MambaAttentionBackendEnum.GDN_ATTN

    def get_attn_backend(self):
        return KimiKDABackend

    # --- forward ---
    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        T = hidden_states.shape[0]
        q = self.q_proj(hidden_states)[0]
        k = self.k_proj(hidden_states)[0]
        v = self.v_proj(hidden_states)[0]
        g_raw = self.f_b_proj(self.f_a_proj(hidden_states)[0])[0]
        beta = self.b_proj(hidden_states)[0].float().sigmoid()
        gate = self.g_b_proj(self.g_a_proj(hidden_states)[0])[0]
        core = torch.zeros(T, self.local_heads, self.head_dim, dtype=hidden_states.dtype,
                           device=hidden_states.device)
        torch.ops.vllm.kimilinear_kda_core(q, k, v, g_raw, beta, core, _encode_layer_name(self.prefix))
        o = self.o_norm(core, gate.view(T, self.local_heads, self.head_dim))
        return self.o_proj(o.reshape(T, -1))[0]

    def conv_weight(self) -> torch.Tensor:
        """The q|k|v conv weights as one [3*H*D/tp, W] matrix, the channel order of the conv state."""
        return torch.cat([m.weight[:, 0, :] for m in (self.q_conv1d, self.k_conv1d, self.v_conv1d)])

    def core(self, q, k, v, g_raw, beta, out) -> None:
        """The attention core, run inside the custom op: short convs, gate, KDA; writes ``out``."""
        md = get_forward_context().attn_metadata
        if md is None:          # vLLM's profile run: no states yet
            self._profile_prefill(q, k, v, g_raw, beta, out)
            return
        md = md[self.prefix]
        conv_state, rec_state = self.kv_cache
        if not is_conv_state_dim_first():
            conv_state = conv_state.transpose(-1, -2)         # [slots, 3*H*D, W-1] view
        H, D = self.local_heads, self.head_dim
        n_tok = md.num_actual_tokens
        nd, nd_tok = md.num_decodes, md.num_decode_tokens
        slots = md.non_spec_state_indices_tensor
        qkv = torch.cat([q[:n_tok], k[:n_tok], v[:n_tok]], dim=-1)
        weight = self.conv_weight()
        if nd > 0:
            has_init = md.has_initial_state[:nd]
            x = dispatch.short_conv_decode(qkv[:nd_tok], weight, conv_state, slots[:nd], has_init)
            qq, kk, vv = self._split_heads(x)
            out[:nd_tok] = dispatch.kda_decode(qq, kk, vv, g_raw[:nd_tok].view(-1, H, D), beta[:nd_tok], self.A_log,
                                               self.dt_bias, self.scale, rec_state, slots[:nd], has_init).to(out.dtype)
        if md.num_prefills > 0:
            cu = md.non_spec_query_start_loc[nd:] - nd_tok
            # The prefills' slots and flags start nd entries in: copies, so that the kernels always see 16-byte
            # aligned pointers (Triton specialises on alignment; a view at an odd offset would compile a second
            # variant of every prefill kernel in the middle of serving). The same for beta when its rows (4 bytes a
            # head) leave it misaligned (fewer than 4 local heads); the other tensors' rows are multiples of 16 bytes.
            pf = slice(nd, nd + md.num_prefills)
            beta_pf = beta[nd_tok:n_tok]
            if beta_pf.data_ptr() % 16:
                beta_pf = beta_pf.clone()
            self._prefill(qkv[nd_tok:], g_raw[nd_tok:n_tok], beta_pf, weight, conv_state, rec_state,
                          slots[pf].clone(), md.has_initial_state[pf].clone(), cu, out[nd_tok:n_tok])

    def _split_heads(self, x):
        H, D = self.local_heads, self.head_dim
        qq, kk, vv = x.split(H * D, dim=-1)
        return qq.view(-1, H, D), kk.view(-1, H, D), vv.view(-1, H, D)

    def _prefill(self, qkv, g_raw, beta, weight, conv_state, rec_state, slots, has_init, cu, out,
                 settings=None) -> None:
        x = dispatch.short_conv_prefill(qkv, weight, conv_state, slots, has_init, cu)
        qq, kk, vv = self._split_heads(x)
        out[:] = dispatch.kda_prefill(qq, kk, vv, g_raw.view(-1, self.local_heads, self.head_dim), beta, self.A_log,
                                      self.dt_bias, self.scale, rec_state, slots, has_init, cu,
                                      chunk=self._prefill_chunk, settings=settings).to(out.dtype)

    def _profile_prefill(self, q, k, v, g_raw, beta, out) -> None:
        """On CUDA, vLLM sizes the KV cache from the peak memory of its profile run (the first forward without
        attention metadata), so the prefill's workspace must be allocated in it: run the real prefill path on
        the profile batch split into as many sequences as the scheduler allows (the workspace grows with
        their number), over two throw-away state slots (slot 0 is the null slot). Later forwards without
        metadata (graph-capture warm-ups, idle data-parallel steps) skip it. First, prefills of one token a sequence
        for each sequence count and setting that launches another kernel variant (one long sequence takes a narrower
        block of the sequential kernel, and its walk in segments), so that none is compiled mid-serving."""
        if self._profiled or not q.is_cuda or q.shape[0] == 0 or torch.cuda.is_current_stream_capturing():
            return
        self._profiled = True
        T, dev = q.shape[0], q.device
        S = min(self._max_seqs, T)
        conv_shape, rec_shape = self._state_shapes
        conv_dtype, rec_dtype = self._state_dtypes
        conv_state = torch.zeros(2, *conv_shape, dtype=conv_dtype, device=dev)
        if not is_conv_state_dim_first():
            conv_state = conv_state.transpose(-1, -2)
        rec_state = torch.zeros(2, *rec_shape, dtype=rec_dtype, device=dev)
        slots = torch.ones(S, dtype=torch.int32, device=dev)
        has_init = torch.zeros(S, dtype=torch.bool, device=dev)
        for n, settings in dispatch.prefill_warmups(self.local_heads, self.head_dim, dev, self._prefill_chunk):
            if n <= T:
                self._prefill(torch.cat([q[:n], k[:n], v[:n]], dim=-1), g_raw[:n], beta[:n], self.conv_weight(),
                              conv_state, rec_state, torch.ones(n, dtype=torch.int32, device=dev),
                              torch.zeros(n, dtype=torch.bool, device=dev),
                              torch.arange(n + 1, device=dev, dtype=torch.int32), out[:n], settings)
        cu = (torch.arange(S + 1, device=dev) * T // S).to(torch.int32)          # S near-equal sequences
        self._prefill(torch.cat([q, k, v], dim=-1), g_raw, beta, self.conv_weight(), conv_state, rec_state, slots,
                      has_init, cu, out)


def _kda_core(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, g_raw: torch.Tensor, beta: torch.Tensor,
              out: torch.Tensor, layer_name: LayerNameType) -> None:
    layer = get_forward_context().no_compile_layers[_resolve_layer_name(layer_name)]
    layer.core(q, k, v, g_raw, beta, out)


def _kda_core_fake(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, g_raw: torch.Tensor,
                   beta: torch.Tensor, out: torch.Tensor, layer_name: LayerNameType) -> None:
    return None


direct_register_custom_op("kimilinear_kda_core", _kda_core, mutates_args=["out"], fake_impl=_kda_core_fake)
