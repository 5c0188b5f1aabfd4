"""KDA over paged state slots, in plain PyTorch: the CPU product path and the GPU kernels' oracle.

vLLM's allocator hands each sequence one state slot per KDA layer (slot 0 is the null slot: sequences
mapped to it are skipped, their outputs left zero). The caches these functions read and write in place:

    conv_state:      [num_slots, D, W-1]   the last W-1 inputs of each channel (dim-first view)
    recurrent_state: [num_slots, H, V, K]  fp32 (or bf16), value-major as vLLM's kernels store it

Token tensors are varlen-packed: ``x[cu_seqlens[i]:cu_seqlens[i+1]]`` belongs to sequence i.
"""

import torch
import torch.nn.functional as F

from kernels.kda.chunk import chunk_kda
from kernels.kda.reference import l2_normalize


def short_conv_prefill(x, weight, conv_state, state_indices, has_initial_state, cu_seqlens):
    """Causal depthwise conv + SiLU over varlen sequences, continuing from and updating conv_state.

    x: [T, D]; weight: [D, W]. Returns [T, D] in x's dtype. One conv over an extended buffer in which each
    sequence's W-1 state rows stand in front of its tokens; no loop over sequences, no host sync. Rows of
    null-slot sequences come out zero; their "new state" lands in the null slot 0, which is never read.
    Computes in float32 or wider on a CPU, in x's dtype (fp32 accumulation) on a GPU.
    """
    T, D = x.shape
    W = weight.shape[-1]
    P = W - 1
    N = state_indices.shape[0]
    dev = x.device
    low = x.is_cuda and x.dtype in (torch.float16, torch.bfloat16)
    dtype = x.dtype if low else torch.promote_types(x.dtype, torch.float32)
    valid = state_indices > 0
    slots = state_indices.clamp(min=0).long()
    cu = cu_seqlens.long()
    seq = torch.searchsorted(cu[1:], torch.arange(T, device=dev), right=True)   # sequence of each token
    shift = torch.arange(N, device=dev) * P
    # where, not a product: a reused slot may hold any bits (NaN * 0 is NaN)
    prev = torch.where((has_initial_state & valid)[:, None, None], conv_state.index_select(0, slots).to(dtype), 0.0)
    ext = torch.empty(T + N * P, D, dtype=dtype, device=dev)
    lanes = torch.arange(P, device=dev)
    ext[((cu[:-1] + shift)[:, None] + lanes).reshape(-1)] = prev.transpose(1, 2).reshape(-1, D)
    pos = torch.arange(T, device=dev) + (seq + 1) * P                              # each token's row in ext
    ext[pos] = x.to(dtype)
    full = F.conv1d(ext.t()[None], weight.to(dtype)[:, None, :], groups=D)[0]     # full[:, j] = sum_w w * ext[j+w]
    y = F.silu(full[:, pos - P].t())
    y = y * valid[seq].to(dtype)[:, None]
    tail = ((cu[1:] + shift + P)[:, None] - P + lanes).reshape(-1)                 # last W-1 rows per sequence
    conv_state.index_copy_(0, slots, ext[tail].view(N, P, D).transpose(1, 2).to(conv_state.dtype))
    return y.to(x.dtype)


def short_conv_decode(x, weight, conv_state, state_indices, has_initial_state):
    """One new token per sequence: x [N, D] -> [N, D]; conv_state rows shift by one in place.

    Sequences without an initial state (a new 1-token prompt) start from zeros, not from their slot.
    """
    dtype = torch.promote_types(x.dtype, torch.float32)
    valid = state_indices > 0
    slots = state_indices.clamp(min=0).long()
    prev = conv_state.index_select(0, slots).to(dtype)                           # [N, D, W-1]
    prev = torch.where(has_initial_state[:, None, None], prev, 0.0)                # old bits may be NaN
    xx = torch.cat([prev, x.to(dtype)[:, :, None]], dim=2)                       # [N, D, W]
    y = F.silu((xx * weight.to(dtype)[None]).sum(-1))
    # Rows mapped to the null slot write there too (its content is never read): no data-dependent
    # shapes, so the decode step can be captured in a CUDA graph.
    conv_state.index_copy_(0, slots, xx[:, :, 1:].to(conv_state.dtype))
    return torch.where(valid[:, None], y, torch.zeros_like(y)).to(x.dtype)


def kda_prefill(q, k, v, g, beta, scale, recurrent_state, state_indices, has_initial_state, cu_seqlens):
    """Chunked KDA over varlen sequences; each sequence's final state lands in its slot.

    q, k: [T, H, K] (not yet normalised); v: [T, H, V]; g: [T, H, K] log gate; beta: [T, H].
    Computes in float32 (float64 if the inputs are float64). Returns o [T, H, V] in v's dtype.
    """
    dtype = torch.promote_types(q.dtype, torch.float32)
    q, k = l2_normalize(q.to(dtype)), l2_normalize(k.to(dtype))
    v, g, beta = v.to(dtype), g.to(dtype), beta.to(dtype)
    out = torch.zeros(v.shape, dtype=dtype, device=v.device)
    bounds = cu_seqlens.tolist()
    for i, slot in enumerate(state_indices.tolist()):
        if slot <= 0:
            continue
        s, e = bounds[i], bounds[i + 1]
        S0 = recurrent_state[slot].transpose(-1, -2).to(dtype) if bool(has_initial_state[i]) else None
        o, S = chunk_kda(q[s:e], k[s:e], v[s:e], g[s:e], beta[s:e], scale, S0)
        out[s:e] = o
        recurrent_state[slot] = S.transpose(-1, -2).to(recurrent_state.dtype)
    return out


def kda_decode(q, k, v, g, beta, scale, recurrent_state, state_indices, has_initial_state):
    """One token per sequence (q, k, g: [N, H, K]; v: [N, H, V]; beta: [N, H]), state updated in place.

    Sequences without an initial state start from a zero state.
    """
    dtype = torch.promote_types(q.dtype, torch.float32)
    valid = state_indices > 0
    slots = state_indices.clamp(min=0).long()
    q, k = l2_normalize(q.to(dtype)), l2_normalize(k.to(dtype))
    S = recurrent_state.index_select(0, slots).to(dtype).transpose(-1, -2)        # [N, H, K, V]
    S = torch.where(has_initial_state[:, None, None, None], S, 0.0)              # old bits may be NaN
    S = S * torch.exp(g.to(dtype))[..., None]
    pred = torch.einsum("nhkv,nhk->nhv", S, k)
    S = S + beta.to(dtype)[..., None, None] * k[..., None] * (v.to(dtype) - pred)[..., None, :]
    o = scale * torch.einsum("nhkv,nhk->nhv", S, q)
    recurrent_state.index_copy_(0, slots, S.transpose(-1, -2).to(recurrent_state.dtype))
    return torch.where(valid[:, None, None], o, torch.zeros_like(o))
