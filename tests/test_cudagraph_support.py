"""What the MLA backend tells vLLM about CUDA graphs: piecewise only unless full decode graphs are opted into,
and a captured decode sized for the longest context it may replay."""

from types import SimpleNamespace

from vllm.v1.attention.backend import AttentionCGSupport

from vllm_kimilinear.mla.backend import FULL_CUDAGRAPH_ENV, KimiMLAMetadata, KimiMLAMetadataBuilder


def test_full_decode_graphs_are_opt_in(monkeypatch):
    monkeypatch.delenv(FULL_CUDAGRAPH_ENV, raising=False)
    assert KimiMLAMetadataBuilder.get_cudagraph_support(None, None) == AttentionCGSupport.NEVER
    monkeypatch.setenv(FULL_CUDAGRAPH_ENV, "1")
    assert (KimiMLAMetadataBuilder.get_cudagraph_support(None, None)
            == AttentionCGSupport.UNIFORM_SINGLE_TOKEN_DECODE)


def test_capture_metadata_covers_the_longest_context(monkeypatch):
    builder = KimiMLAMetadataBuilder.__new__(KimiMLAMetadataBuilder)
    builder.vllm_config = SimpleNamespace(model_config=SimpleNamespace(max_model_len=131072))
    built = KimiMLAMetadata(num_actual_tokens=4, num_decodes=4, num_decode_tokens=4, num_prefills=0,
                            max_seq_len=1, seq_lens=None, block_table=None, slot_mapping=None, query_lens=[1] * 4)
    monkeypatch.setattr(builder, "build", lambda common_prefix_len, cm, fast_build=False: built)
    md = builder.build_for_cudagraph_capture(object())
    assert md.max_seq_len == 131072 and md.num_decodes == 4
