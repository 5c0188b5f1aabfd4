"""Prefix caching (`--enable-prefix-caching`): for a hybrid model vLLM runs the "align" mode, which keeps each
request's KDA states at block boundaries and moves them with the model's state copy functions; a request that
hits the cache must decode exactly as it does without the cache."""

import random

import pytest
import torch

from tests.vllm_helpers import counter, greedy, make_llm


def shared_prefix_prompts(prefix_len=300, suffixes=(1, 5, 80), seed=3):
    rng = random.Random(seed)
    prefix = [rng.randrange(16, 400) for _ in range(prefix_len)]
    return [prefix + [rng.randrange(16, 400) for _ in range(k)] for k in suffixes]


@pytest.mark.slow
@pytest.mark.parametrize("caches", [{}, {"mamba_ssm_cache_dtype": "bfloat16"}, {"kv_cache_dtype": "fp8"}],
                         ids=["fp32-states", "bf16-recurrent-state", "fp8-latent-cache"])
def test_prefix_cache_hits_decode_as_without_the_cache(tiny_dir, in_process, caches):
    """Same greedy tokens, and first-step logits within 1e-5 of the largest (float32 model; the cached run computes
    the prefix in block-aligned pieces, which moves them by up to ~1e-5 absolute at a largest logit of ~13, ~2.5e-5
    with the recurrent state stored in bf16 at the pieces' ends; a prefill that ignored a restored state, or state
    copies that copied nothing, moved them by 0.02-0.3)."""
    prompts = shared_prefix_prompts()
    llm = make_llm(tiny_dir, **caches)
    want = [greedy(llm, [p], max_tokens=12, logits=True) for p in prompts]
    del llm

    llm = make_llm(tiny_dir, enable_prefix_caching=True, disable_log_stats=False, **caches)
    cache = llm.llm_engine.vllm_config.cache_config
    assert cache.mamba_cache_mode == "align", cache.mamba_cache_mode
    # the first prompt fills the cache with the shared prefix's blocks; the others start from them (states included)
    got = [greedy(llm, [p], max_tokens=12, logits=True) for p in prompts]
    hits = counter(llm, "vllm:prefix_cache_hits")
    whole_blocks = 300 // cache.block_size * cache.block_size
    assert hits >= whole_blocks * (len(prompts) - 1), (hits, cache.block_size)
    for (want_ids, want_logits), (ids, logits) in zip(want, got):
        assert ids == want_ids
        a, b = torch.tensor(want_logits[0]), torch.tensor(logits[0])
        assert (a - b).abs().max() <= 1e-5 * a.abs().max(), ((a - b).abs().max(), a.abs().max())
