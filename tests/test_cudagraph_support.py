"""What the MLA backend tells vLLM about CUDA graphs: full graphs for decode-only batches on CUDA unless switched
off (piecewise elsewhere), a bad switch value refused by name, a captured decode sized for the longest
context it may replay, and every decode kernel variant built on the first decode (vLLM's warm-up), not while
serving."""

from types import SimpleNamespace

import pytest
from vllm.config import CUDAGraphMode
from vllm.platforms import current_platform
from vllm.v1.attention.backend import AttentionCGSupport

from vllm_kimilinear.mla.backend import FULL_CUDAGRAPH_ENV, KimiMLAMetadataBuilder


def support():
    return KimiMLAMetadataBuilder.get_cudagraph_support(None, None)


def test_full_decode_graphs_on_cuda_by_default_and_switchable(monkeypatch):
    monkeypatch.delenv(FULL_CUDAGRAPH_ENV, raising=False)
    monkeypatch.setattr(type(current_platform), "is_cuda", lambda self=None: True, raising=False)
    assert support() == AttentionCGSupport.UNIFORM_SINGLE_TOKEN_DECODE
    monkeypatch.setenv(FULL_CUDAGRAPH_ENV, "0")
    assert support() == AttentionCGSupport.NEVER
    monkeypatch.setattr(type(current_platform), "is_cuda", lambda self=None: False, raising=False)
    monkeypatch.delenv(FULL_CUDAGRAPH_ENV)
    assert support() == AttentionCGSupport.NEVER              # a CPU has no CUDA graphs to capture
    monkeypatch.setenv(FULL_CUDAGRAPH_ENV, "1")
    assert support() == AttentionCGSupport.UNIFORM_SINGLE_TOKEN_DECODE


def test_bad_switch_value_is_named(monkeypatch):
    monkeypatch.setenv(FULL_CUDAGRAPH_ENV, "yes")
    with pytest.raises(ValueError, match=r"VLLM_KIMILINEAR_MLA_FULL_CUDAGRAPH='yes'.*allowed values are 0"):
        support()


def test_decode_batches_sized_for_the_longest_context_when_graphs_are_on(monkeypatch):
    """With full decode graphs on and captured, every decode-only batch gets max_model_len as its split bound, so
    the warm-up before a capture (dummy length 1) loads the same kernel variant the capture launches; eager
    engines keep each batch's own bound."""
    import torch
    from vllm.v1.attention.backends.utils import CommonAttentionMetadata

    builder = KimiMLAMetadataBuilder.__new__(KimiMLAMetadataBuilder)
    graphs = SimpleNamespace(cudagraph_mode=CUDAGraphMode.FULL_AND_PIECEWISE)
    builder.vllm_config = SimpleNamespace(model_config=SimpleNamespace(max_model_len=131072), compilation_config=graphs)
    builder.reorder_batch_threshold = 1

    def common(query_lens, seq_lens):
        qsl = torch.tensor([0] + query_lens).cumsum(0).to(torch.int32)
        n = len(query_lens)
        return CommonAttentionMetadata(
            query_start_loc=qsl, query_start_loc_cpu=qsl, seq_lens=torch.tensor(seq_lens, dtype=torch.int32),
            num_reqs=n, num_actual_tokens=int(qsl[-1]), max_query_len=max(query_lens), max_seq_len=max(seq_lens),
            block_table_tensor=torch.zeros(n, 4, dtype=torch.int32),
            slot_mapping=torch.zeros(int(qsl[-1]), dtype=torch.int64))

    decode, mixed = common([1, 1, 1], [1, 1, 1]), common([1, 5], [9, 5])
    monkeypatch.setenv(FULL_CUDAGRAPH_ENV, "0")
    assert builder.build(0, decode).max_seq_len == 1
    monkeypatch.setenv(FULL_CUDAGRAPH_ENV, "1")
    assert builder.build(0, decode).max_seq_len == 131072
    graphs.cudagraph_mode = CUDAGraphMode.NONE            # --enforce-eager: nothing is captured
    assert builder.build(0, decode).max_seq_len == 1
    graphs.cudagraph_mode = CUDAGraphMode.FULL_AND_PIECEWISE
    md = builder.build(0, mixed)                          # a batch with a prefill is never captured
    assert md.max_seq_len == 9 and md.num_decodes == 1 and md.num_prefills == 1


def test_first_decode_builds_every_kernel_variant(monkeypatch):
    """The first decode outside a capture decodes one sequence with each split count that compiles another variant
    of the decode kernels (direct, and each merge width), with the batch's own tables."""
    import torch

    import kernels.mla.triton_decode as td
    from vllm_kimilinear.mla.backend import KimiMLAImpl, KimiMLAMetadata

    calls = []
    monkeypatch.setattr(td, "mla_decode", lambda q_lat, q_pe, kv, bt, sl, scale, num_splits=None, k_scale=None, **kw:
                        calls.append((q_lat.shape[0], bt.shape[0], sl.tolist(), num_splits, k_scale)))
    impl = KimiMLAImpl(num_heads=2, qk_nope_head_dim=4, kv_lora_rank=8, scale=0.1)
    md = KimiMLAMetadata(num_actual_tokens=3, num_decodes=3, num_decode_tokens=3, num_prefills=0, max_seq_len=40,
                         seq_lens=torch.tensor([40, 7, 9], dtype=torch.int32),
                         block_table=torch.arange(6, dtype=torch.int32).view(3, 2), slot_mapping=torch.zeros(3),
                         query_lens=[1, 1, 1], seq_lens_host=[])
    impl._build_decode_variants(torch.zeros(3, 2, 8), torch.zeros(3, 2, 4), torch.zeros(4, 16, 12), md, None)
    assert [c[3] for c in calls] == td.variant_num_splits()
    assert all(c[:3] == (1, 1, [40]) and c[4] is None for c in calls)
    assert impl._variants_built
