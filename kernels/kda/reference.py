"""The KDA math written as it reads in the paper: a token-by-token loop, any dtype (tests use float64).

Shapes: ``q, k: [T, H, K]``, ``v: [T, H, V]``, ``g: [T, H, K]`` (natural-log decay, <= 0),
``beta: [T, H]``; state ``S: [H, K, V]`` (key-major, the paper's orientation).

    S'_t = Diag(exp g_t) S_{t-1}
    S_t  = S'_t + beta_t k_t (v_t - S'_t^T k_t)^T
    o_t  = scale * S_t^T q_t
"""

import torch
import torch.nn.functional as F

L2_EPS = 1e-6
SOFTPLUS_THRESHOLD = 20.0


def l2_normalize(x: torch.Tensor, eps: float = L2_EPS) -> torch.Tensor:
    """x / sqrt(sum(x^2) + eps) over the last dim (KDA's q/k normalisation)."""
    return x * torch.rsqrt((x * x).sum(-1, keepdim=True) + eps)


def kda_gate(raw: torch.Tensor, A_log: torch.Tensor, dt_bias: torch.Tensor) -> torch.Tensor:
    """Kimi-Linear's unbounded gate: g = -exp(A_log[h]) * softplus(raw + dt_bias), in float32 or wider.

    raw: [T, H, K]; A_log: any shape with H elements; dt_bias: [H*K] or [H, K]. Returns [T, H, K].
    """
    T, H, K = raw.shape
    dtype = torch.promote_types(raw.dtype, torch.float32)
    x = raw.to(dtype) + dt_bias.reshape(H, K).to(dtype)
    return -torch.exp(A_log.reshape(H, 1).to(dtype)) * F.softplus(x, beta=1.0, threshold=SOFTPLUS_THRESHOLD)


def recurrent_kda(q, k, v, g, beta, scale: float, initial_state=None):
    """Token-by-token KDA for one sequence. Returns (o [T, H, V], final state [H, K, V])."""
    T, H, K = q.shape
    V = v.shape[-1]
    S = q.new_zeros(H, K, V) if initial_state is None else initial_state.clone()
    o = q.new_empty(T, H, V)
    for t in range(T):
        S = S * torch.exp(g[t])[:, :, None]
        pred = torch.einsum("hkv,hk->hv", S, k[t])
        S = S + beta[t][:, None, None] * k[t][:, :, None] * (v[t] - pred)[:, None, :]
        o[t] = scale * torch.einsum("hkv,hk->hv", S, q[t])
    return o, S
