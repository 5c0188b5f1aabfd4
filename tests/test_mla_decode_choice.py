"""The switch between the MLA decode kernels on CUDA (VLLM_KIMILINEAR_MLA_WGMMA): unset picks the Gluon wgmma
kernel on Hopper where it applies, 0 the Triton kernel, 1 requires the wgmma kernel; any other value fails when
the attention layer is built (model load), naming the value and what is allowed."""

import pytest

from vllm_kimilinear.mla.backend import WGMMA_ENV, KimiMLAImpl, wgmma_decode_choice


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
