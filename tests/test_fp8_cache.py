"""The MLA latent cache in fp8 (e4m3), chosen with vLLM's --kv-cache-dtype fp8, through LLM() on the CPU."""

import statistics

import pytest
import torch

from tests.reference_model import ReferenceKimiLinear
from tests.vllm_helpers import greedy, make_llm, random_prompts


@pytest.mark.slow
def test_fp8_latent_cache_matches_fp8_storage_reference(tiny_dir, in_process):
    prompts = random_prompts()
    llm = make_llm(tiny_dir, kv_cache_dtype="fp8")
    assert llm.apply_model(lambda m: str(m.model.layers[2].self_attn.attn.kv_cache.dtype)) == ["torch.uint8"]
    _, logits = greedy(llm, prompts, 1, logits=True)
    ref = ReferenceKimiLinear(tiny_dir, latent_cache_dtype=torch.float8_e4m3fn)
    errs = []
    for p, got in zip(prompts, logits):
        want = ref.greedy(p, 1)[1]
        errs.append(((torch.tensor(got, dtype=torch.float64) - want).norm() / want.norm()).item())
    # The plugin rounds float32 latents to fp8, the reference float64 ones: a value on an fp8 rounding
    # boundary can land one fp8 step apart, which the random tiny model amplifies to ~1e-3 at most.
    assert statistics.median(errs) < 1e-4, errs
    assert all(e < 5e-3 for e in errs), errs
