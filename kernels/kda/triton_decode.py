"""KDA decode in Triton: one token per sequence (and T draft tokens for speculative verification),
gate and q/k L2 norm fused, state read and written in place in its paged slot.

The state slot is [H, V, K] (V-major, as vLLM stores it), fp32 or bf16; arithmetic is fp32. Each
program owns BV value rows of one (sequence, head), so one pass streams the state once:

    S = S * exp(g)[None, :];  S += beta (v - S k) k^T;  o = scale * S q

The grid is one-dimensional (N * H * V/BV programs), so any batch size launches.
"""

import torch
import triton
import triton.language as tl

from kernels.kda.triton_chunk import as_heads


@triton.jit
def _token_inputs(q_ptr, k_ptr, g_ptr, v_ptr, beta_ptr, dtb_ptr, t, h, kc, vc,
                  s_qt, s_qh, s_kt, s_kh, s_gt, s_gh, s_vt, s_vh, s_bt, s_bh, neg_a, K: tl.constexpr):
    """Normalised q, k, the decay exp(g), v rows and beta of token t, head h (fp32)."""
    t = t.to(tl.int64)
    qv = tl.load(q_ptr + t * s_qt + h * s_qh + kc).to(tl.float32)
    kv = tl.load(k_ptr + t * s_kt + h * s_kh + kc).to(tl.float32)
    x = tl.load(g_ptr + t * s_gt + h * s_gh + kc).to(tl.float32) + tl.load(dtb_ptr + h * K + kc)
    sp = tl.where(x > 20.0, x, tl.log(1.0 + tl.exp(x)))
    decay = tl.exp(neg_a * sp)
    qv = qv * tl.rsqrt(tl.sum(qv * qv, axis=0) + 1e-6)
    kv = kv * tl.rsqrt(tl.sum(kv * kv, axis=0) + 1e-6)
    vv = tl.load(v_ptr + t * s_vt + h * s_vh + vc).to(tl.float32)
    b = tl.load(beta_ptr + t * s_bt + h * s_bh).to(tl.float32)
    return qv, kv, decay, vv, b


@triton.jit
def _program_tile(H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BV: tl.constexpr):
    """This program's sequence n, head h, value rows vc and key columns kc (1-D grid over N*H*(V/BV))."""
    pid = tl.program_id(0)
    NV: tl.constexpr = V // BV
    nh = pid // NV
    return nh // H, nh % H, (pid % NV) * BV + tl.arange(0, BV), tl.arange(0, K)


@triton.jit
def _delta_step(S, qv, kv, decay, vv, b, scale):
    """One KDA step on a [BV, K] value-major state tile: decay, delta-rule update, read out (fp32)."""
    S = S * decay[None, :]
    d = b * (vv - tl.sum(S * kv[None, :], axis=1))
    S = S + d[:, None] * kv[None, :]
    return S, tl.sum(S * qv[None, :], axis=1) * scale


@triton.jit
def _decode_kernel(
    q_ptr, k_ptr, v_ptr, g_ptr, beta_ptr, alog_ptr, dtb_ptr, state_ptr, slot_ptr, init_ptr, o_ptr,
    s_qt, s_qh, s_kt, s_kh, s_vt, s_vh, s_gt, s_gh, s_bt, s_bh, s_ot, s_oh, s_ss, s_sh, s_sv,
    scale, H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BV: tl.constexpr, HAS_INIT: tl.constexpr,
):
    n, h, vc, kc = _program_tile(H, K, V, BV)
    slot = tl.load(slot_ptr + n)
    o_off = n.to(tl.int64) * s_ot + h * s_oh + vc
    if slot <= 0:
        tl.store(o_ptr + o_off, tl.zeros([BV], dtype=o_ptr.dtype.element_ty))
        return
    s_off = slot.to(tl.int64) * s_ss + h * s_sh + vc[:, None] * s_sv + kc[None, :]
    if HAS_INIT:
        S = tl.zeros([BV, K], dtype=tl.float32)
        if tl.load(init_ptr + n) != 0:
            S = tl.load(state_ptr + s_off).to(tl.float32)
    else:
        S = tl.load(state_ptr + s_off).to(tl.float32)
    neg_a = -tl.exp(tl.load(alog_ptr + h).to(tl.float32))
    qv, kv, decay, vv, b = _token_inputs(q_ptr, k_ptr, g_ptr, v_ptr, beta_ptr, dtb_ptr, n, h, kc, vc,
                                         s_qt, s_qh, s_kt, s_kh, s_gt, s_gh, s_vt, s_vh, s_bt, s_bh,
                                         neg_a, K)
    S, o = _delta_step(S, qv, kv, decay, vv, b, scale)
    tl.store(state_ptr + s_off, S.to(state_ptr.dtype.element_ty))
    tl.store(o_ptr + o_off, o.to(o_ptr.dtype.element_ty))


@triton.jit(do_not_specialize=["s_in", "T"])
def _verify_kernel(
    q_ptr, k_ptr, v_ptr, g_ptr, beta_ptr, alog_ptr, dtb_ptr, state_ptr, init_slot_ptr, idx_ptr, o_ptr,
    s_qt, s_qh, s_kt, s_kh, s_vt, s_vh, s_gt, s_gh, s_bt, s_bh, s_ot, s_oh, s_ss, s_sh, s_sv,
    s_in, s_ij, T, scale, H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BV: tl.constexpr,
):
    n, h, vc, kc = _program_tile(H, K, V, BV)
    slot = tl.load(init_slot_ptr + n)
    if slot <= 0:
        for j in range(0, T):
            tl.store(o_ptr + (n * T + j).to(tl.int64) * s_ot + h * s_oh + vc,
                     tl.zeros([BV], dtype=o_ptr.dtype.element_ty))
        return
    tile = h * s_sh + vc[:, None] * s_sv + kc[None, :]
    S = tl.load(state_ptr + slot.to(tl.int64) * s_ss + tile).to(tl.float32)
    neg_a = -tl.exp(tl.load(alog_ptr + h).to(tl.float32))
    for j in range(0, T):
        t = n * T + j
        qv, kv, decay, vv, b = _token_inputs(q_ptr, k_ptr, g_ptr, v_ptr, beta_ptr, dtb_ptr, t, h, kc, vc,
                                             s_qt, s_qh, s_kt, s_kh, s_gt, s_gh, s_vt, s_vh, s_bt, s_bh,
                                             neg_a, K)
        S, o = _delta_step(S, qv, kv, decay, vv, b, scale)
        tl.store(o_ptr + t.to(tl.int64) * s_ot + h * s_oh + vc, o.to(o_ptr.dtype.element_ty))
        dst = tl.load(idx_ptr + n * s_in + j * s_ij)
        if dst > 0:
            tl.store(state_ptr + dst.to(tl.int64) * s_ss + tile, S.to(state_ptr.dtype.element_ty))


def _token_strides(q, k, v, g_raw, beta, o, state):
    """The row and head strides of the per-token tensors and the state strides, in both kernels' order."""
    return (q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1),
            g_raw.stride(0), g_raw.stride(1), beta.stride(0), beta.stride(1), o.stride(0), o.stride(1),
            state.stride(0), state.stride(1), state.stride(2))


def _pick_bv(V, state_dtype, bv, num_warps):
    if bv is None:
        bv = 8 if state_dtype == torch.float32 else 16
    bv = min(bv, V)
    return bv, (num_warps or 1)


def recurrent_kda_decode(q, k, v, g_raw, beta, A_log, dt_bias, scale, recurrent_state, state_indices,
                         has_initial_state=None, out=None, _bv=None, _num_warps=None):
    """One decode token per sequence. q, k, g_raw: [N, H, K] (raw q/k, gate pre-activation); v: [N, H, V];
    beta: [N, H] (sigmoid applied); A_log: H elements; dt_bias: [H*K]; recurrent_state:
    [num_slots, H, V, K] fp32 or bf16 (last dim contiguous), updated in place; state_indices: int32 [N]
    (slot <= 0: skipped, output zero, nothing written); has_initial_state: optional bool [N] (False: the
    sequence starts from a zero state, e.g. a new one-token prompt; None: every sequence has one).
    Returns o [N, H, V] in v's dtype (written into ``out`` when given)."""
    N, H, K = q.shape
    V = v.shape[-1]
    assert recurrent_state.stride(-1) == 1 and recurrent_state.shape[1:] == (H, V, K)
    q, k, g_raw, v = as_heads(q, H, K), as_heads(k, H, K), as_heads(g_raw, H, K), as_heads(v, H, V)
    o = torch.empty(N, H, V, dtype=v.dtype, device=q.device) if out is None else out
    assert o.shape == (N, H, V) and o.stride(-1) == 1
    if N == 0:
        return o
    bv, nw = _pick_bv(V, recurrent_state.dtype, _bv, _num_warps)
    st = recurrent_state
    _decode_kernel[(N * H * (V // bv),)](
        q, k, v, g_raw, beta, A_log.reshape(-1), dt_bias.reshape(-1), st, state_indices,
        state_indices if has_initial_state is None else has_initial_state, o,
        *_token_strides(q, k, v, g_raw, beta, o, st), float(scale), H=H, K=K, V=V, BV=bv,
        HAS_INIT=has_initial_state is not None, num_warps=nw)
    return o


def recurrent_kda_verify(q, k, v, g_raw, beta, A_log, dt_bias, scale, recurrent_state, initial_slots,
                         state_indices, out=None, _bv=None, _num_warps=None):
    """T tokens per sequence, one after another (speculative verification), keeping every state.

    q, k, g_raw: [N*T, H, K]; v: [N*T, H, V]; beta: [N*T, H]; token j of sequence n is row n*T + j.
    initial_slots: int32 [N], the slot holding each sequence's state before its first token (<= 0: the
    sequence is skipped, outputs zero); state_indices: int32 [N, T], the slot that receives the state
    after token j (<= 0: that state is not kept). Returns o [N*T, H, V] in v's dtype (or fills ``out``).
    """
    NT, H, K = q.shape
    V = v.shape[-1]
    N, T = state_indices.shape
    assert NT == N * T and initial_slots.shape[0] == N
    assert recurrent_state.stride(-1) == 1 and recurrent_state.shape[1:] == (H, V, K)
    q, k, g_raw, v = as_heads(q, H, K), as_heads(k, H, K), as_heads(g_raw, H, K), as_heads(v, H, V)
    o = torch.empty(NT, H, V, dtype=v.dtype, device=q.device) if out is None else out
    assert o.shape == (NT, H, V) and o.stride(-1) == 1
    if NT == 0:
        return o
    bv, nw = _pick_bv(V, recurrent_state.dtype, _bv, _num_warps)
    st = recurrent_state
    _verify_kernel[(N * H * (V // bv),)](
        q, k, v, g_raw, beta, A_log.reshape(-1), dt_bias.reshape(-1), st, initial_slots, state_indices, o,
        *_token_strides(q, k, v, g_raw, beta, o, st), state_indices.stride(0), state_indices.stride(1),
        T, float(scale), H=H, K=K, V=V, BV=bv, num_warps=nw)
    return o
