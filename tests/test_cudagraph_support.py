"""What the MLA backend tells vLLM about CUDA graphs: piecewise only unless full decode graphs are opted into,
and a captured decode sized for the longest context it may replay."""

from types import SimpleNamespace

from vllm.v1.attention.backend import AttentionCGSupport

from vllm_kimilinear.mla.backend import FULL_CUDAGRAPH_ENV, KimiMLAMetadataBuilder


def test_full_decode_graphs_are_opt_in(monkeypatch):
    monkeypatch.delenv(FULL_CUDAGRAPH_ENV, raising=False)
    assert KimiMLAMetadataBuilder.get_cudagraph_support(None, None) == AttentionCGSupport.NEVER
    monkeypatch.setenv(FULL_CUDAGRAPH_ENV, "1")
    assert (KimiMLAMetadataBuilder.get_cudagraph_support(None, None)
            == AttentionCGSupport.UNIFORM_SINGLE_TOKEN_DECODE)


def test_decode_batches_sized_for_the_longest_context_when_graphs_are_on(monkeypatch):
    """With full decode graphs on, every decode-only batch gets max_model_len as its split bound, so the
    warm-up before a capture (dummy length 1) loads the same kernel variant the capture launches."""
    import torch
    from vllm.v1.attention.backends.utils import CommonAttentionMetadata

    builder = KimiMLAMetadataBuilder.__new__(KimiMLAMetadataBuilder)
    builder.vllm_config = SimpleNamespace(model_config=SimpleNamespace(max_model_len=131072))
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
    monkeypatch.delenv(FULL_CUDAGRAPH_ENV, raising=False)
    assert builder.build(0, decode).max_seq_len == 1
    monkeypatch.setenv(FULL_CUDAGRAPH_ENV, "1")
    assert builder.build(0, decode).max_seq_len == 131072
    md = builder.build(0, mixed)                          # a batch with a prefill is never captured
    assert md.max_seq_len == 9 and md.num_decodes == 1 and md.num_prefills == 1
