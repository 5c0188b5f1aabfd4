"""The KDA layer hands its prefill kernels 16-byte-aligned slot, flag and beta tensors in a mixed batch (decodes
first, then prefills): Triton specialises kernels on pointer alignment, and an odd offset into the batch's slot list
compiled a second variant of every prefill kernel in the middle of serving (seen on the H100: five compiles, ~3 s,
in the first mixed step)."""

from types import SimpleNamespace

import torch

from vllm_kimilinear.kda import dispatch
from vllm_kimilinear.kda import layer as kda_layer


def test_mixed_batch_prefill_gets_aligned_slots(monkeypatch):
    H, D, W = 2, 4, 4
    nd, lens = 3, [5, 2]                                  # three decodes, then two prefills
    T = nd + sum(lens)
    seen = {}

    def fake_conv_prefill(x, weight, conv_state, slots, has_init, cu):
        seen.update(slots=slots, has_init=has_init, cu=cu)
        return torch.zeros_like(x)

    monkeypatch.setattr(dispatch, "short_conv_prefill", fake_conv_prefill)
    monkeypatch.setattr(dispatch, "short_conv_decode", lambda x, *a: torch.zeros_like(x))
    monkeypatch.setattr(dispatch, "kda_decode", lambda q, *a: torch.zeros_like(q))
    def fake_prefill(q, k, v, g_raw, beta, *a, **kw):
        seen.update(beta=beta)
        return torch.zeros_like(q)

    monkeypatch.setattr(dispatch, "kda_prefill", fake_prefill)

    slots = torch.arange(1, nd + len(lens) + 1, dtype=torch.int32)
    has_init = torch.tensor([True, True, True, False, True])
    md = SimpleNamespace(num_actual_tokens=T, num_decodes=nd, num_decode_tokens=nd, num_prefills=len(lens),
                         non_spec_state_indices_tensor=slots, has_initial_state=has_init,
                         non_spec_query_start_loc=torch.tensor([0, 1, 2, 3, 8, 10], dtype=torch.int32))
    monkeypatch.setattr(kda_layer, "get_forward_context", lambda: SimpleNamespace(attn_metadata={"kda": md}))

    lay = kda_layer.KimiDeltaAttention.__new__(kda_layer.KimiDeltaAttention)
    lay.prefix, lay.local_heads, lay.head_dim, lay.scale = "kda", H, D, D ** -0.5
    lay._prefill_chunk = None                             # VLLM_KIMILINEAR_KDA_CHUNK unset: the kernels' choice
    lay.kv_cache = (torch.zeros(8, W - 1, 3 * H * D), torch.zeros(8, H, D, D))
    lay.A_log, lay.dt_bias = torch.zeros(H), torch.zeros(H * D)
    lay.conv_weight = lambda: torch.zeros(3 * H * D, W)
    x = torch.randn(T, H * D)
    beta = torch.rand(T, H)                               # 8 bytes a token: the prefills' rows start 24 bytes in
    lay.core(x, x, x, x, beta, torch.empty(T, H, D))

    assert seen["slots"].tolist() == [4, 5] and seen["has_init"].tolist() == [False, True]
    assert seen["cu"].tolist() == [0, 5, 7]
    assert torch.equal(seen["beta"], beta[nd:])
    for name in ("slots", "has_init", "beta"):
        assert seen[name].data_ptr() % 16 == 0, name
