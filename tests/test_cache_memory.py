"""How much MLA latent cache one 1,048,576-token sequence needs with the real 27-layer config, as the
plugin's own cache spec and vLLM's hybrid block sizing count it: <= 4.1 GiB in fp8, <= 8.0 GiB in bf16."""

import os

import pytest
import torch

REAL_CONFIG = os.path.join(os.path.dirname(__file__), "data", "kimi-linear-48b-a3b-instruct")
ONE_M = 1_048_576
GiB = 1 << 30


def mla_cache_bytes_for_one_sequence(kv_cache_dtype: str):
    from vllm.config import set_current_vllm_config
    from vllm.engine.arg_utils import EngineArgs
    from vllm.platforms import current_platform
    from vllm.utils.math_utils import cdiv

    from vllm_kimilinear.config import read_layout
    from vllm_kimilinear.mla.backend import KimiMLABackend
    from vllm_kimilinear.mla.layer import LatentAttention

    args = EngineArgs(model=REAL_CONFIG, skip_tokenizer_init=True, dtype="bfloat16", max_model_len=ONE_M,
                      kv_cache_dtype=kv_cache_dtype, enforce_eager=True)
    vllm_config = args.create_engine_config()
    with set_current_vllm_config(vllm_config):
        current_platform._align_hybrid_block_size(vllm_config, KimiMLABackend)   # what the worker does
        hf = vllm_config.model_config.hf_config
        layer = LatentAttention(hf.num_attention_heads, hf.qk_nope_head_dim, hf.qk_rope_head_dim, hf.v_head_dim,
                                hf.kv_lora_rank, torch.nn.Module(), vllm_config, prefix="model.layers.3.self_attn.attn")
        spec = layer.get_kv_cache_spec(vllm_config)
    n_mla = len(read_layout(hf).mla_layers)
    return n_mla, spec, n_mla * cdiv(ONE_M, spec.block_size) * spec.page_size_bytes


@pytest.mark.parametrize("kv_cache_dtype,bytes_per_token,limit_gib", [("fp8", 576, 4.1), ("auto", 1152, 8.0)])
def test_one_million_token_sequence_fits(kv_cache_dtype, bytes_per_token, limit_gib):
    n_mla, spec, total = mla_cache_bytes_for_one_sequence(kv_cache_dtype)
    assert n_mla == 7
    assert spec.head_size == 576 and spec.page_size_bytes == spec.block_size * bytes_per_token
    assert spec.block_size >= 1000, "the hybrid allocator makes one MLA page hold one KDA state page"
    assert total <= limit_gib * GiB, f"{total / GiB:.3f} GiB"
    print(f"{kv_cache_dtype}: block {spec.block_size} tokens, {total / GiB:.3f} GiB for 1M tokens")
