"""The KDA short convolution's one-token decode step as a single Triton kernel (the torch path in
``kernels/kda/paged.py`` takes about seven launches per layer and step).

For each sequence n and channel d: y = silu(sum_j w[d, j] * xx[j]) over the window xx = (state[slot, d, :],
x[n, d]) of width W, and the state shifts by one (its oldest column drops out, x comes in). A sequence without
an initial state starts from zeros; a sequence on a slot <= 0 (null) gets y = 0 and writes no state. Each
program owns its (sequence, channel block) and reads the whole old window before writing, so no other program
sees a half-updated state. CUDA-graph safe: no host sync, shapes independent of the data.
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
