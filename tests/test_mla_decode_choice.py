"""The switches of the MLA decode on CUDA: VLLM_KIMILINEAR_MLA_WGMMA (unset picks the Gluon wgmma kernel on Hopper
where it applies, 0 the Triton kernel, 1 requires the wgmma kernel) and VLLM_KIMILINEAR_MLA_FP8_QUERIES (unset or
1: e4m3 queries with the fp8 cache, 0: 16-bit ones); any other value fails when the attention layer is built
(model load), naming the value and what is allowed."""

import pytest

from vllm_kimilinear.mla.backend import (FP8_QUERIES_ENV, WGMMA_ENV, KimiMLAImpl, fp8_queries_choice,
                                         wgmma_decode_choice)


@pytest.mark.parametrize("value,want", [(None, None), ("0", False), ("1", True)])
def test_values(monkeypatch, value, want):
    if value is None:
        monkeypatch.delenv(WGMMA_ENV, raising=False)
    else:
        monkeypatch.setenv(WGMMA_ENV, value)
    assert wgmma_decode_choice() is want
    assert KimiMLAImpl(num_heads=2, qk_nope_head_dim=4, kv_lora_rank=8, scale=0.1)._wgmma is want


def test_bad_value_fails_at_load(monkeypatch):
    monkeypatch.setenv(WGMMA_ENV, "triton")
    with pytest.raises(ValueError, match=r"VLLM_KIMILINEAR_MLA_WGMMA='triton'.*allowed values are 0"):
        KimiMLAImpl(num_heads=2, qk_nope_head_dim=4, kv_lora_rank=8, scale=0.1)


@pytest.mark.parametrize("value,want", [(None, True), ("1", True), ("0", False)])
def test_fp8_queries_values(monkeypatch, value, want):
    if value is None:
        monkeypatch.delenv(FP8_QUERIES_ENV, raising=False)
    else:
        monkeypatch.setenv(FP8_QUERIES_ENV, value)
    assert fp8_queries_choice() is want
    assert KimiMLAImpl(num_heads=2, qk_nope_head_dim=4, kv_lora_rank=8, scale=0.1)._fp8_queries is want


def test_fp8_queries_bad_value_fails_at_load(monkeypatch):
    monkeypatch.setenv(FP8_QUERIES_ENV, "fp8")
    with pytest.raises(ValueError, match=r"VLLM_KIMILINEAR_MLA_FP8_QUERIES='fp8'.*allowed values are 0"):
        KimiMLAImpl(num_heads=2, qk_nope_head_dim=4, kv_lora_rank=8, scale=0.1)
