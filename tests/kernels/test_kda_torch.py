"""The torch KDA paths against the token-by-token recurrence, in float64.

The chunked path must equal the recurrence to 1e-10 for lengths 1..1000 across chunk boundaries, with and
without initial states, in varlen batches through paged state slots (slot 0 null), and stay finite for gates
that drive the decay to zero.
"""

import pytest
import torch

from kernels.kda import paged
from kernels.kda.chunk import chunk_kda
from kernels.kda.reference import kda_gate, l2_normalize, recurrent_kda

D64 = torch.float64


def rel(a, b):
    return ((a - b).norm() / b.norm().clamp_min(1e-300)).item()


def inputs(T, H=2, K=32, V=16, gate_scale=1.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    q, k = torch.randn(T, H, K, generator=g, dtype=D64), torch.randn(T, H, K, generator=g, dtype=D64)
    v = torch.randn(T, H, V, generator=g, dtype=D64)
    raw = torch.randn(T, H, K, generator=g, dtype=D64) * gate_scale
    A_log = torch.rand(H, generator=g, dtype=D64) * 2
    dt_bias = torch.randn(H * K, generator=g, dtype=D64)
    beta = torch.rand(T, H, generator=g, dtype=D64)
    return q, k, v, raw, A_log, dt_bias, beta


@pytest.mark.parametrize("T", [1, 2, 63, 64, 65, 127, 128, 129, 300, 1000])
@pytest.mark.parametrize("with_state", [False, True])
def test_chunk_equals_recurrence_fp64(T, with_state):
    q, k, v, raw, A_log, dt_bias, beta = inputs(T, seed=T)
    g = kda_gate(raw, A_log, dt_bias)
    q, k = l2_normalize(q), l2_normalize(k)
    S0 = torch.randn(2, 32, 16, dtype=D64) if with_state else None
    o_ref, S_ref = recurrent_kda(q, k, v, g, beta, 32 ** -0.5, S0)
    o, S = chunk_kda(q, k, v, g, beta, 32 ** -0.5, S0)
    assert rel(o, o_ref) < 1e-10 and rel(S, S_ref) < 1e-10


@pytest.mark.parametrize("gate_scale", [1e-3, 1.0, 30.0, 1e4])
def test_extreme_gates_stay_finite_and_exact(gate_scale):
    """Raw gates of +-1e4: log-decays down to about -1e4 per step (alpha underflows to exactly 0)."""
    T = 150
    q, k, v, raw, A_log, dt_bias, beta = inputs(T, gate_scale=gate_scale, seed=7)
    g = kda_gate(raw, A_log, dt_bias)
    if gate_scale == 1e4:
        assert g.min() < -1e3
    q, k = l2_normalize(q), l2_normalize(k)
    S0 = torch.randn(2, 32, 16, dtype=D64)
    o_ref, S_ref = recurrent_kda(q, k, v, g, beta, 32 ** -0.5, S0)
    o, S = chunk_kda(q, k, v, g, beta, 32 ** -0.5, S0)
    assert torch.isfinite(o).all() and torch.isfinite(S).all()
    assert rel(o, o_ref) < 1e-10 and rel(S, S_ref) < 1e-10


def test_raw_gate_of_minus_1e4_in_chunk_path():
    """A log-gate of -1e4 everywhere: every step forgets everything before it."""
    T, H, K, V = 70, 2, 32, 16
    q, k, v, _, _, _, beta = inputs(T)
    q, k = l2_normalize(q), l2_normalize(k)
    g = torch.full((T, H, K), -1e4, dtype=D64)
    o, S = chunk_kda(q, k, v, g, beta, 1.0, torch.randn(H, K, V, dtype=D64))
    o_ref, S_ref = recurrent_kda(q, k, v, g, beta, 1.0, None)   # the initial state is fully forgotten
    assert torch.isfinite(o).all() and rel(o, o_ref) < 1e-10 and rel(S, S_ref) < 1e-10


def test_paged_varlen_prefill_then_decode_matches_per_sequence_recurrence():
    """Five sequences in one varlen batch through state slots; slot 0 is null; then one decode step."""
    H, K, V = 2, 32, 16
    lens = [5, 64, 1, 131, 1000]
    slots = torch.tensor([3, 1, 0, 5, 4])           # sequence 2 maps to the null slot
    has_init = torch.tensor([True, False, False, True, True])
    T = sum(lens)
    q, k, v, raw, A_log, dt_bias, beta = inputs(T, H, K, V, seed=3)
    g = kda_gate(raw, A_log, dt_bias)
    state = torch.randn(6, H, V, K, dtype=D64)     # [slots, H, V, K] value-major
    before = state.clone()
    cu = torch.tensor([0] + torch.tensor(lens).cumsum(0).tolist())
    out = torch.full((T, H, V), float("nan"), dtype=D64)
    out[:] = paged.kda_prefill(q, k, v, g, beta, K ** -0.5, state, slots, has_init, cu)
    for i, (s, e) in enumerate(zip(cu[:-1].tolist(), cu[1:].tolist())):
        slot = int(slots[i])
        if slot == 0:
            assert (out[s:e] == 0).all()
            continue
        S0 = before[slot].transpose(-1, -2) if has_init[i] else None
        o_ref, S_ref = recurrent_kda(l2_normalize(q[s:e]), l2_normalize(k[s:e]), v[s:e], g[s:e], beta[s:e],
                                     K ** -0.5, S0)
        assert rel(out[s:e], o_ref) < 1e-10
        assert rel(state[slot].transpose(-1, -2), S_ref) < 1e-10
    assert torch.equal(state[0], before[0]) and torch.equal(state[2], before[2])

    # one decode step for sequences 0 and 3 equals one more recurrence step
    dq, dk, dv, draw, _, _, dbeta = inputs(2, H, K, V, seed=9)
    dg = kda_gate(draw, A_log, dt_bias)
    after_prefill = state.clone()
    o = paged.kda_decode(dq, dk, dv, dg, dbeta, K ** -0.5, state, torch.tensor([3, 5]), torch.tensor([True, True]))
    for j, slot in enumerate([3, 5]):
        o_ref, S_ref = recurrent_kda(l2_normalize(dq[j:j + 1]), l2_normalize(dk[j:j + 1]), dv[j:j + 1], dg[j:j + 1],
                                     dbeta[j:j + 1], K ** -0.5, after_prefill[slot].transpose(-1, -2))
        assert rel(o[j], o_ref[0]) < 1e-12 and rel(state[slot].transpose(-1, -2), S_ref) < 1e-12


def test_short_conv_prefill_then_decode_equals_one_long_conv():
    D, W, T = 12, 4, 9
    g = torch.Generator().manual_seed(0)
    x = torch.randn(T + 1, D, generator=g, dtype=D64)
    w = torch.randn(D, W, generator=g, dtype=D64)
    state = torch.zeros(3, D, W - 1, dtype=D64)
    y = paged.short_conv_prefill(x[:T], w, state, torch.tensor([2]), torch.tensor([False]), torch.tensor([0, T]))
    y_last = paged.short_conv_decode(x[T:], w, state, torch.tensor([2]), torch.tensor([True]))
    full = torch.nn.functional.conv1d(torch.nn.functional.pad(x.t()[None], (W - 1, 0)), w[:, None, :], groups=D)
    expect = torch.nn.functional.silu(full[0].t())
    assert torch.allclose(torch.cat([y, y_last]), expect, rtol=1e-12, atol=1e-12)
    assert torch.equal(state[0], torch.zeros(D, W - 1, dtype=D64))


def test_decode_without_initial_state_ignores_stale_slot():
    """A new 1-token prompt runs as a decode; its reused slot's old content must not leak in, even when its
    bits read as NaN or inf (vLLM's pages are shared by layers of other dtypes)."""
    H, K, V = 2, 32, 16
    q, k, v, raw, A_log, dt_bias, beta = inputs(1, H, K, V, seed=11)
    g = kda_gate(raw, A_log, dt_bias)
    stale = torch.randn(2, H, V, K, dtype=D64)
    stale[1, 0, :3] = float("nan")
    stale[1, 1, 5] = float("inf")
    o = paged.kda_decode(q, k, v, g, beta, K ** -0.5, stale, torch.tensor([1]), torch.tensor([False]))
    o_ref, S_ref = recurrent_kda(l2_normalize(q), l2_normalize(k), v, g, beta, K ** -0.5, None)
    assert rel(o, o_ref) < 1e-12 and rel(stale[1].transpose(-1, -2), S_ref) < 1e-12
    conv = torch.randn(2, 6, 3, dtype=D64)
    conv[1, :2] = float("nan")
    conv[1, 4, 1] = float("-inf")
    x, w = torch.randn(1, 6, dtype=D64), torch.randn(6, 4, dtype=D64)
    y = paged.short_conv_decode(x, w, conv, torch.tensor([1]), torch.tensor([False]))
    assert torch.allclose(y, torch.nn.functional.silu(x * w[:, -1]), rtol=1e-12, atol=0)


def test_short_conv_prefill_varlen_with_states_and_null_slot():
    """Several sequences in one call: each continues from its own state (or zeros), null slots untouched."""
    D, W = 10, 4
    g = torch.Generator().manual_seed(5)
    lens, slots = [1, 7, 2, 30, 3], [4, 2, 0, 1, 3]
    has_init = [True, False, True, True, False]
    x = torch.randn(sum(lens), D, generator=g, dtype=D64)
    w = torch.randn(D, W, generator=g, dtype=D64)
    state = torch.randn(5, D, W - 1, generator=g, dtype=D64)
    state[2, :, 0] = float("nan")               # slots of sequences without a state: any bits, NaN included
    state[3, 1] = float("inf")
    before = state.clone()
    cu = torch.tensor([0] + torch.tensor(lens).cumsum(0).tolist())
    y = paged.short_conv_prefill(x, w, state, torch.tensor(slots), torch.tensor(has_init), cu)
    for i, (s, e) in enumerate(zip(cu[:-1].tolist(), cu[1:].tolist())):
        if slots[i] == 0:
            assert (y[s:e] == 0).all()
            continue
        prev = before[slots[i]] if has_init[i] else torch.zeros(D, W - 1, dtype=D64)
        xx = torch.cat([prev, x[s:e].t()], dim=1)
        want = torch.nn.functional.silu(torch.nn.functional.conv1d(xx[None], w[:, None, :], groups=D)[0].t())
        assert torch.allclose(y[s:e], want, rtol=1e-12, atol=1e-12)
        assert torch.equal(state[slots[i]], xx[:, -(W - 1):])
