"""The switches of the MLA decode on CUDA: VLLM_KIMILINEAR_MLA_WGMMA (unset picks the Gluon wgmma kernel on Hopper
where it applies, 0 the Triton kernel, 1 requires the wgmma kernel) and VLLM_KIMILINEAR_MLA_FP8_QUERIES (unset or
1: e4m3 queries with the fp8 cache, 0: 16-bit ones); any other value fails when the attention layer is built
(model load), naming the value and what is allowed."""

import pytest

from vllm_kimilinear.mla.backend import (FP8_QUERIES_ENV, WGMMA_ENV, KimiMLAImpl, fp8_queries_choice,
                                         wgmma_decode_choice)

# variable, its parser, the attribute the attention layer keeps, (value, parsed) pairs (None: unset), a bad value
SWITCHES = {"wgmma": (WGMMA_ENV, wgmma_decode_choice, "_wgmma", [(None, None), ("0", False), ("1", True)], "triton"),
            "fp8_queries": (FP8_QUERIES_ENV, fp8_queries_choice, "_fp8_queries",
                            [(None, True), ("1", True), ("0", False)], "fp8")}


def _impl():
    return KimiMLAImpl(num_heads=2, qk_nope_head_dim=4, kv_lora_rank=8, scale=0.1)


@pytest.mark.parametrize("switch,case", [(k, c) for k, v in SWITCHES.items() for c in v[3]])
def test_values(monkeypatch, switch, case):
    env, parse, attr, _, _ = SWITCHES[switch]
    value, want = case
    if value is None:
        monkeypatch.delenv(env, raising=False)
    else:
        monkeypatch.setenv(env, value)
    assert parse() is want
    assert getattr(_impl(), attr) is want


@pytest.mark.parametrize("switch", list(SWITCHES))
def test_bad_value_fails_at_load(monkeypatch, switch):
    env, _, _, _, bad = SWITCHES[switch]
    monkeypatch.setenv(env, bad)
    with pytest.raises(ValueError, match=rf"{env}='{bad}'.*allowed values are 0"):
        _impl()
