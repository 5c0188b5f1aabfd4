"""What the MLA backend tells vLLM about CUDA graphs: full graphs for decode-only batches on CUDA unless switched
off (piecewise elsewhere), a bad switch value refused by name, and a captured decode sized for the longest
context it may replay."""

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
