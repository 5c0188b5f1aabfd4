"""The Triton one-token short-conv step (kernels/kda/triton_conv.py) against the torch path it replaces on
CUDA (kernels/kda/paged.py), in fp64 on the torch side: outputs, the shifted states, null slots, sequences
without an initial state, vLLM's transposed conv-state view. Run under TRITON_INTERPRET=1 without CUDA."""

import os

import pytest
import torch

if not torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1":
    pytest.skip("no CUDA device and TRITON_INTERPRET=1 not set", allow_module_level=True)

from kernels.kda import paged                                  # noqa: E402
from kernels.kda.triton_conv import short_conv_decode          # noqa: E402

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
