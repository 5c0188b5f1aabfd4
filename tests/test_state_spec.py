"""The model's get_mamba_state_*_from_config class methods describe exactly the KDA states vLLM allocated."""

import pytest

from tests.vllm_helpers import greedy, make_llm


def _allocated(model):
    from vllm_kimilinear.kda.layer import KimiDeltaAttention

    return [([tuple(t.shape[1:]) for t in m.kv_cache], [str(t.dtype) for t in m.kv_cache])
            for m in model.modules() if isinstance(m, KimiDeltaAttention)]


@pytest.mark.slow
@pytest.mark.parametrize("ssm_dtype", ["auto", "bfloat16"])
def test_classmethods_match_allocated_states(tiny_dir, in_process, ssm_dtype):
    from vllm_kimilinear.model import KimiLinearForCausalLM

    llm = make_llm(tiny_dir, mamba_ssm_cache_dtype=ssm_dtype)
    assert greedy(llm, [[20, 21, 22]], 4)[0]                          # the states are really used
    cfg = llm.llm_engine.vllm_config
    shapes = [tuple(s) for s in KimiLinearForCausalLM.get_mamba_state_shape_from_config(cfg)]
    dtypes = [str(d) for d in KimiLinearForCausalLM.get_mamba_state_dtype_from_config(cfg)]
    (layers,) = llm.apply_model(_allocated)
    assert len(layers) == 3
    for got_shapes, got_dtypes in layers:
        assert got_shapes == shapes and got_dtypes == dtypes
    # vLLM's CPU platform resets the SSM state to float32 on AMX CPUs; elsewhere bfloat16 is kept.
    expect = {"bfloat16": "torch.bfloat16"}.get(cfg.cache_config.mamba_ssm_cache_dtype, "torch.float32")
    assert dtypes[1] == expect
    assert shapes == [(3, 3 * 2 * 128), (2, 128, 128)]                 # SD conv layout; [H, V, K] state


class _Cfg:
    def __init__(self, ssm, conv="auto"):
        from types import SimpleNamespace

        import torch

        self.cache_config = SimpleNamespace(mamba_cache_dtype=conv, mamba_ssm_cache_dtype=ssm)
        self.model_config = SimpleNamespace(dtype=torch.bfloat16)


@pytest.mark.parametrize("ssm,expect", [("auto", "float32"), ("float32", "float32"), ("bfloat16", "bfloat16")])
def test_recurrent_state_dtype_choice(ssm, expect):
    import torch

    from vllm_kimilinear.kda.state import kda_state_dtypes

    assert kda_state_dtypes(_Cfg(ssm)) == (torch.bfloat16, getattr(torch, expect))


@pytest.mark.parametrize("conv,ssm,expect", [("bfloat16", "auto", ("bfloat16", "bfloat16")),
                                             ("float32", "auto", ("float32", "float32")),
                                             ("bfloat16", "float32", ("bfloat16", "float32"))])
def test_mamba_cache_dtype_sets_both_states_when_ssm_is_auto(conv, ssm, expect):
    """vLLM's rule: --mamba-cache-dtype applies to the recurrent state too unless --mamba-ssm-cache-dtype says
    otherwise."""
    import torch

    from vllm_kimilinear.kda.state import kda_state_dtypes

    assert kda_state_dtypes(_Cfg(ssm, conv)) == tuple(getattr(torch, e) for e in expect)


def test_unsupported_recurrent_state_dtype_is_refused():
    from vllm_kimilinear.kda.state import kda_state_dtypes

    with pytest.raises(ValueError, match=r"--mamba-ssm-cache-dtype 'float16' is not supported .* allowed"):
        kda_state_dtypes(_Cfg("float16"))
    with pytest.raises(ValueError, match=r"--mamba-cache-dtype \(with --mamba-ssm-cache-dtype auto\) 'float16'"):
        kda_state_dtypes(_Cfg("auto", "float16"))
