"""The Triton short-conv kernels (kernels/kda/triton_conv.py: one-token step and varlen prefill) against the
torch paths they replace on CUDA (kernels/kda/paged.py), in fp64 on the torch side: outputs, the updated states,
null slots, sequences without an initial state, sequences shorter than the window, vLLM's transposed conv-state
view. Run under TRITON_INTERPRET=1 without CUDA."""

import os

import pytest
import torch

if not torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1":
    pytest.skip("no CUDA device and TRITON_INTERPRET=1 not set", allow_module_level=True)

from kernels.kda import paged                                  # noqa: E402
from kernels.kda.triton_conv import short_conv_decode, short_conv_prefill  # noqa: E402

DEV = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.mark.parametrize("D,W,transposed,block_d", [(96, 4, True, 32), (70, 4, False, 64), (16, 2, True, 256),
                                                     (40, 3, False, 16)])
def test_short_conv_decode_matches_torch(D, W, transposed, block_d):
    g = torch.Generator().manual_seed(D * 10 + W)
    N, slots_n = 6, 9
    x = torch.randn(N, D, generator=g)
    weight = torch.randn(D, W, generator=g)
    store = torch.randn(slots_n, W - 1, D, generator=g) if transposed else torch.randn(slots_n, D, W - 1, generator=g)
    state0 = store.transpose(1, 2) if transposed else store            # [slots, D, W-1], maybe a strided view
    slots = torch.tensor([3, 0, 5, 1, -1, 7], dtype=torch.int32)
    has = torch.tensor([True, True, False, True, True, False])
    store[5] = float("nan")                 # slot 5's sequence has no state: its old bits (any) must not count

    want_state = state0.double().clone()
    want = paged.short_conv_decode(x.double(), weight.double(), want_state, slots, has)

    st_store = store.clone().to(DEV)
    st = st_store.transpose(1, 2) if transposed else st_store
    y = short_conv_decode(x.to(DEV), weight.to(DEV), st, slots.to(DEV), has.to(DEV), block_d=block_d).cpu()
    got_state = (st_store.transpose(1, 2) if transposed else st_store).cpu()

    assert torch.allclose(y.double(), want, rtol=1e-5, atol=1e-6)
    assert (y[1] == 0).all() and (y[4] == 0).all()                     # null slots: zero outputs
    for s in (1, 3, 5, 7):                                             # live slots: shifted exactly
        assert torch.allclose(got_state[s].double(), want_state[s], rtol=1e-6, atol=1e-7)
    for s in (0, 2, 4, 6, 8):                                          # null and unused slots: untouched
        assert torch.equal(got_state[s], state0[s])


def test_short_conv_decode_without_init_flags():
    """has_initial_state None: every live sequence continues from its slot."""
    g = torch.Generator().manual_seed(5)
    D, W = 32, 4
    x, weight = torch.randn(3, D, generator=g), torch.randn(D, W, generator=g)
    state = torch.randn(4, D, W - 1, generator=g)
    slots = torch.tensor([2, 1, 3], dtype=torch.int32)
    want_state = state.double().clone()
    want = paged.short_conv_decode(x.double(), weight.double(), want_state, slots, torch.ones(3, dtype=torch.bool))
    st = state.clone().to(DEV)
    y = short_conv_decode(x.to(DEV), weight.to(DEV), st, slots.to(DEV), None).cpu()
    assert torch.allclose(y.double(), want, rtol=1e-5, atol=1e-6)
    assert torch.allclose(st.cpu().double(), want_state, rtol=1e-6, atol=1e-7)


def _prefill_case(lens, D, W, transposed, seed, slots_n=9):
    g = torch.Generator().manual_seed(seed)
    N = len(lens)
    cu = torch.tensor([0] + list(lens)).cumsum(0).to(torch.int32)
    x = torch.randn(int(cu[-1]), D, generator=g)
    weight = torch.randn(D, W, generator=g)
    store = torch.randn(slots_n, W - 1, D, generator=g) if transposed else torch.randn(slots_n, D, W - 1, generator=g)
    slots = torch.tensor([3, 0, 5, 1, -1, 7, 2, 8][:N], dtype=torch.int32)
    has = torch.tensor([True, True, False, True, True, True, False, True][:N])
    return x, weight, store, slots, has, cu


def _view(store, transposed):
    return store.transpose(1, 2) if transposed else store              # [slots, D, W-1], maybe a strided view


@pytest.mark.parametrize("lens,D,W,transposed,block_t,block_d", [
    ([1, 2, 5, 17, 3, 40], 96, 4, True, 16, 32),        # lengths below, at and above the window, two null slots
    ([7, 1, 33], 70, 4, False, 8, 64),                  # D not a multiple of the channel block
    ([2, 9, 4, 1, 6, 3, 12, 5], 16, 2, True, 32, 128),  # W = 2, eight sequences (a deeper binary search)
    ([3, 3, 1, 20], 40, 3, False, 4, 16)])
def test_short_conv_prefill_matches_torch(lens, D, W, transposed, block_t, block_d):
    x, weight, store, slots, has, cu = _prefill_case(lens, D, W, transposed, seed=len(lens) * 100 + D)
    for s, h in zip(slots.tolist(), has.tolist()):
        if s > 0 and not h:
            store[s] = float("nan")         # sequences without a state: their slots' old bits must not count
    state0 = _view(store, transposed)
    want_state = state0.double().clone()
    want = paged.short_conv_prefill(x.double(), weight.double(), want_state, slots, has, cu)

    st_store = store.clone().to(DEV)
    y = short_conv_prefill(x.to(DEV), weight.to(DEV), _view(st_store, transposed), slots.to(DEV), has.to(DEV),
                           cu.to(DEV), block_t=block_t, block_d=block_d).cpu()
    got_state = _view(st_store, transposed).cpu()

    assert torch.allclose(y.double(), want, rtol=1e-5, atol=1e-6)
    null = [i for i, s in enumerate(slots.tolist()) if s <= 0]
    seq = torch.searchsorted(cu[1:], torch.arange(int(cu[-1])), right=True)
    for i in null:
        assert (y[seq == i] == 0).all()                                # null slots: zero outputs
    live = [s for s in slots.tolist() if s > 0]
    for s in live:                                                     # live slots: the last W-1 inputs
        assert torch.allclose(got_state[s].double(), want_state[s], rtol=1e-6, atol=1e-7)
    for s in set(range(store.shape[0])) - set(live):                  # null and unused slots: untouched
        assert torch.equal(got_state[s], state0[s])


def test_short_conv_prefill_in_two_pieces_equals_one():
    """A prefill split into two calls (the second continuing from the state the first wrote) gives the outputs and
    state of one call over the whole sequences: what a chunked prefill relies on."""
    lens, cut = [9, 2, 14], [4, 1, 7]
    x, weight, store, slots, has, cu = _prefill_case(lens, 48, 4, True, seed=7)
    slots, has = torch.tensor([2, 5, 1], dtype=torch.int32), torch.tensor([False, True, True])
    one = store.clone().to(DEV)
    y_one = short_conv_prefill(x.to(DEV), weight.to(DEV), _view(one, True), slots.to(DEV), has.to(DEV),
                               cu.to(DEV)).cpu()
    two = store.clone().to(DEV)
    rows_a = torch.cat([torch.arange(int(cu[i]), int(cu[i]) + c) for i, c in enumerate(cut)])
    rows_b = torch.cat([torch.arange(int(cu[i]) + c, int(cu[i + 1])) for i, c in enumerate(cut)])
    cu_a = torch.tensor([0] + cut).cumsum(0).to(torch.int32)
    cu_b = torch.tensor([0] + [n - c for n, c in zip(lens, cut)]).cumsum(0).to(torch.int32)
    y_a = short_conv_prefill(x[rows_a].to(DEV), weight.to(DEV), _view(two, True), slots.to(DEV), has.to(DEV),
                             cu_a.to(DEV)).cpu()
    y_b = short_conv_prefill(x[rows_b].to(DEV), weight.to(DEV), _view(two, True), slots.to(DEV),
                             torch.ones(3, dtype=torch.bool, device=DEV), cu_b.to(DEV)).cpu()
    y_two = torch.empty_like(y_one)
    y_two[rows_a], y_two[rows_b] = y_a, y_b
    assert torch.allclose(y_two, y_one, rtol=1e-5, atol=1e-6)
    assert torch.allclose(two.cpu(), one.cpu(), rtol=1e-6, atol=1e-7)


def test_short_conv_prefill_bf16_inputs():
    """bf16 x (the GPU's case): fp32 accumulation, so the output is the fp64 result up to bf16 rounding."""
    x, weight, store, slots, has, cu = _prefill_case([5, 30, 2], 64, 4, True, seed=11)
    xb = x.bfloat16()
    want_state = _view(store, True).double().clone()
    want = paged.short_conv_prefill(xb.double(), weight.double(), want_state, slots, has, cu)
    st = store.clone().to(DEV)
    y = short_conv_prefill(xb.to(DEV), weight.to(DEV), _view(st, True), slots.to(DEV), has.to(DEV), cu.to(DEV))
    assert y.dtype == torch.bfloat16
    err = (y.cpu().double() - want).norm() / want.norm()
    assert err < 8e-3, err                                             # bf16 output rounding: ~2e-3
