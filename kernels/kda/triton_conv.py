"""The KDA short convolution as Triton kernels: the one-token decode step, and the varlen prefill (the torch
paths in ``kernels/kda/paged.py`` take about seven launches per decode step, and for a prefill a padded copy,
a transposed conv and gathers that cost more GPU time than the KDA kernels themselves).

For each sequence n and channel d: y = silu(sum_j w[d, j] * xx[j]) over the window xx = (state[slot, d, :],
x[n, d]) of width W, and the state shifts by one (its oldest column drops out, x comes in). A sequence without
an initial state starts from zeros; a sequence on a slot <= 0 (null) gets y = 0 and writes no state. Each
program owns its (sequence, channel block) and reads the whole old window before writing, so no other program
sees a half-updated state. CUDA-graph safe: no host sync, shapes independent of the data.

Prefill, over varlen sequences (``cu_seqlens``) continuing from their slots' states: one program per (block of
tokens, block of channels) finds each token's sequence by a binary search over cu_seqlens and reads the W taps
of its window from x, or, before the sequence's first token, from the slot's state (zeros without an initial
state). A second kernel then writes each sequence's last W-1 inputs into its slot, in place (new column j takes
old column L + j >= j when the sequence has fewer than W-1 tokens, so columns are written in increasing order).
"""

import torch
import triton
import triton.language as tl


@triton.jit
def _short_conv_decode_kernel(x_ptr, w_ptr, state_ptr, slot_ptr, init_ptr, y_ptr, D,
                              s_xn, s_wd, s_sn, s_sd, s_sw, s_yn,
                              W: tl.constexpr, BD: tl.constexpr, HAS_INIT: tl.constexpr):
    n = tl.program_id(0)
    d = tl.program_id(1) * BD + tl.arange(0, BD)
    dm = d < D
    slot = tl.load(slot_ptr + n)
    valid = slot > 0
    has = valid
    if HAS_INIT:
        has = valid & (tl.load(init_ptr + n) != 0)
    row = state_ptr + tl.maximum(slot, 0).to(tl.int64) * s_sn + d * s_sd
    x = tl.load(x_ptr + n.to(tl.int64) * s_xn + d, mask=dm, other=0.0).to(tl.float32)
    acc = x * tl.load(w_ptr + d * s_wd + (W - 1), mask=dm, other=0.0).to(tl.float32)
    for j in tl.static_range(W - 1):               # the old window, all read before anything is written
        prev = tl.load(row + j * s_sw, mask=dm & has, other=0.0).to(tl.float32)
        acc += prev * tl.load(w_ptr + d * s_wd + j, mask=dm, other=0.0).to(tl.float32)
    for j in tl.static_range(W - 2):               # shift: new column j = old column j + 1
        nxt = tl.load(row + (j + 1) * s_sw, mask=dm & has, other=0.0)
        tl.store(row + j * s_sw, nxt.to(state_ptr.dtype.element_ty), mask=dm & valid)
    tl.store(row + (W - 2) * s_sw, x.to(state_ptr.dtype.element_ty), mask=dm & valid)
    y = acc / (1.0 + tl.exp(-acc))
    y = tl.where(valid, y, 0.0)
    tl.store(y_ptr + n.to(tl.int64) * s_yn + d, y.to(y_ptr.dtype.element_ty), mask=dm)


@triton.jit(do_not_specialize=["T", "N", "n_bits"])
def _short_conv_prefill_kernel(x_ptr, w_ptr, state_ptr, slot_ptr, init_ptr, cu_ptr, y_ptr, T, D, N, n_bits,
                               s_xt, s_wd, s_sn, s_sd, s_sw, s_yt,
                               W: tl.constexpr, BT: tl.constexpr, BD: tl.constexpr):
    t = tl.program_id(0) * BT + tl.arange(0, BT)
    d = tl.program_id(1) * BD + tl.arange(0, BD)
    tm = t < T
    dm = d < D
    # each token's sequence: the largest n with cu[n] <= t (cu[0] = 0 <= t < cu[N] = T)
    lo = tl.zeros([BT], tl.int32)
    hi = tl.full([BT], N, tl.int32)
    for _ in range(n_bits):
        mid = (lo + hi) // 2
        below = tl.load(cu_ptr + mid, mask=tm, other=0) <= t
        lo = tl.where(below, mid, lo)
        hi = tl.where(below, hi, mid)
    start = tl.load(cu_ptr + lo, mask=tm, other=0)
    slot = tl.load(slot_ptr + lo, mask=tm, other=0)
    valid = slot > 0
    has = valid & (tl.load(init_ptr + lo, mask=tm, other=0) != 0)
    srow = state_ptr + tl.maximum(slot, 0).to(tl.int64)[:, None] * s_sn + d[None, :] * s_sd
    acc = tl.zeros([BT, BD], tl.float32)
    for j in tl.static_range(W):                  # tap j reads position t - (W - 1) + j
        src = t - (W - 1) + j
        in_x = src >= start
        xv = tl.load(x_ptr + src.to(tl.int64)[:, None] * s_xt + d[None, :],
                     mask=(tm & in_x)[:, None] & dm[None, :], other=0.0).to(tl.float32)
        sv = tl.load(srow + ((W - 1) + src - start)[:, None] * s_sw,
                     mask=(tm & has & (src < start))[:, None] & dm[None, :], other=0.0).to(tl.float32)
        acc += (xv + sv) * tl.load(w_ptr + d * s_wd + j, mask=dm, other=0.0).to(tl.float32)[None, :]
    y = acc / (1.0 + tl.exp(-acc))
    y = tl.where(valid[:, None], y, 0.0)
    tl.store(y_ptr + t.to(tl.int64)[:, None] * s_yt + d[None, :], y.to(y_ptr.dtype.element_ty),
             mask=tm[:, None] & dm[None, :])


@triton.jit
def _short_conv_prefill_state_kernel(x_ptr, state_ptr, slot_ptr, init_ptr, cu_ptr, D, s_xt, s_sn, s_sd, s_sw,
                                     W: tl.constexpr, BD: tl.constexpr):
    n = tl.program_id(0)
    d = tl.program_id(1) * BD + tl.arange(0, BD)
    dm = d < D
    slot = tl.load(slot_ptr + n)
    if slot <= 0:                                 # null slot: nothing to keep
        return
    start = tl.load(cu_ptr + n)
    L = tl.load(cu_ptr + n + 1) - start
    has = tl.load(init_ptr + n) != 0
    row = state_ptr + slot.to(tl.int64) * s_sn + d * s_sd
    for j in tl.static_range(W - 1):              # new column j = input L - (W - 1) + j of (state, x)
        p = L - (W - 1) + j
        xv = tl.load(x_ptr + (start + p).to(tl.int64) * s_xt + d, mask=dm & (p >= 0), other=0.0).to(tl.float32)
        sv = tl.load(row + ((W - 1) + p) * s_sw, mask=dm & (p < 0) & has, other=0.0).to(tl.float32)
        tl.store(row + j * s_sw, (xv + sv).to(state_ptr.dtype.element_ty), mask=dm)


def short_conv_prefill(x, weight, conv_state, state_indices, has_initial_state, cu_seqlens, block_t: int = 32,
                       block_d: int = 128):
    """Causal depthwise conv + SiLU over varlen sequences: x [T, D] (unit last stride) -> y [T, D] in x's dtype;
    weight [D, W]; conv_state [num_slots, D, W-1] (any strides) read as each sequence's left context and
    updated in place with its last W-1 inputs; state_indices int [N] (<= 0: null, y = 0, no write);
    has_initial_state bool [N] (False: the context is zeros); cu_seqlens int [N + 1] on the device. No host
    sync (N comes from the shape)."""
    T, D = x.shape
    W = weight.shape[-1]
    N = state_indices.shape[0]
    assert W >= 2 and conv_state.shape[1:] == (D, W - 1), "conv_state must be [num_slots, D, W-1]"
    assert x.stride(-1) == 1 and weight.stride(-1) == 1
    assert cu_seqlens.shape[0] == N + 1 and has_initial_state.shape[0] == N
    y = torch.empty_like(x)
    if T == 0 or N == 0:
        return y.zero_()
    cu = cu_seqlens.to(torch.int32)
    bd = min(block_d, triton.next_power_of_2(D))
    _short_conv_prefill_kernel[(triton.cdiv(T, block_t), triton.cdiv(D, bd))](
        x, weight, conv_state, state_indices, has_initial_state, cu, y, T, D, N, max(1, N.bit_length()),
        x.stride(0), weight.stride(0), conv_state.stride(0), conv_state.stride(1), conv_state.stride(2),
        y.stride(0), W=W, BT=block_t, BD=bd, num_warps=4)
    _short_conv_prefill_state_kernel[(N, triton.cdiv(D, bd))](
        x, conv_state, state_indices, has_initial_state, cu, D, x.stride(0),
        conv_state.stride(0), conv_state.stride(1), conv_state.stride(2), W=W, BD=bd, num_warps=4)
    return y


def short_conv_decode(x, weight, conv_state, state_indices, has_initial_state=None, block_d: int = 256):
    """One new token per sequence: x [N, D] -> y [N, D] (x's dtype); conv_state [num_slots, D, W-1] (any
    strides, e.g. vLLM's transposed view) is shifted in place; weight [D, W]; state_indices int [N] (<= 0:
    null, y = 0, no write); has_initial_state bool [N] or None (every sequence has one)."""
    N, D = x.shape
    W = weight.shape[-1]
    assert W >= 2 and conv_state.shape[1:] == (D, W - 1), "conv_state must be [num_slots, D, W-1]"
    assert x.stride(-1) == 1 and weight.stride(-1) == 1
    y = torch.empty_like(x)
    if N == 0:
        return y
    bd = min(block_d, triton.next_power_of_2(D))
    _short_conv_decode_kernel[(N, triton.cdiv(D, bd))](
        x, weight, conv_state, state_indices,
        state_indices if has_initial_state is None else has_initial_state, y, D,
        x.stride(0), weight.stride(0), conv_state.stride(0), conv_state.stride(1), conv_state.stride(2),
        y.stride(0), W=W, BD=bd, HAS_INIT=has_initial_state is not None, num_warps=4)
    return y
