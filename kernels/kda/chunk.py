"""Chunked KDA in plain PyTorch: the same result as the recurrence, a chunk of tokens at a time.

Within a chunk of C tokens, with G the in-chunk cumulative sum of the log gate (G_r = sum_{i<=r} g_i)
and S0 the state at the chunk start (key-major [K, V]):

    A[i, j]   = sum_d k_i[d] k_j[d] exp(G_i[d] - G_j[d])           (j < i)
    T         = (I + Diag(beta) A)^-1 Diag(beta)                    (unit lower triangular solve)
    U         = T (V - (exp(G) * K) S0)                             (the pseudo-values)
    Aqk[r, i] = sum_d q_r[d] k_i[d] exp(G_r[d] - G_i[d])           (i <= r)
    O         = scale * ((exp(G) * Q) S0 + Aqk U)
    S_C       = Diag(exp(G_C)) S0 + (exp(G_C - G) * K)^T U

Every exponent above is <= 0 (g <= 0 and G only falls), so gates that drive the decay to zero
underflow to 0 instead of overflowing: the path stays finite for raw gates of -1e4 and below.
"""

import torch

CHUNK_SIZE = 64


def chunk_kda(q, k, v, g, beta, scale: float, initial_state=None, chunk_size: int = CHUNK_SIZE):
    """One sequence. q, k, g: [T, H, K]; v: [T, H, V]; beta: [T, H]; state [H, K, V].

    Computes in the inputs' dtype (pass float32 or float64). Returns (o [T, H, V], S [H, K, V]).
    """
    T, H, K = q.shape
    V = v.shape[-1]
    S = q.new_zeros(H, K, V) if initial_state is None else initial_state.to(q.dtype)
    o = q.new_empty(T, H, V)
    for start in range(0, T, chunk_size):
        end = min(start + chunk_size, T)
        C = end - start
        # [H, C, *] views of this chunk
        qc, kc, vc = (x[start:end].transpose(0, 1) for x in (q, k, v))
        bc = beta[start:end].transpose(0, 1)                        # [H, C]
        G = torch.cumsum(g[start:end].transpose(0, 1), dim=1)        # [H, C, K]
        diff = G[:, :, None, :] - G[:, None, :, :]                   # [H, C(i), C(j), K], G_i - G_j
        causal = torch.ones(C, C, dtype=torch.bool, device=q.device).tril()
        decay = torch.exp(diff.masked_fill(~causal[None, :, :, None], float("-inf")))
        A = torch.einsum("hid,hjd,hijd->hij", kc, kc, decay).tril(-1)
        Aqk = torch.einsum("hid,hjd,hijd->hij", qc, kc, decay)
        eye = torch.eye(C, dtype=q.dtype, device=q.device)
        L = eye + bc[:, :, None] * A
        rhs = bc[:, :, None] * (vc - torch.einsum("hck,hkv->hcv", torch.exp(G) * kc, S))
        U = torch.linalg.solve_triangular(L, rhs, upper=False, unitriangular=True)
        o[start:end] = (scale * (torch.einsum("hck,hkv->hcv", torch.exp(G) * qc, S)
                                 + torch.einsum("hci,hiv->hcv", Aqk, U))).transpose(0, 1)
        G_last = G[:, -1:, :]                                        # [H, 1, K]
        S = torch.exp(G_last[:, 0, :])[:, :, None] * S + torch.einsum(
            "hck,hcv->hkv", torch.exp(G_last - G) * kc, U)
    return o, S
