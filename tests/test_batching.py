"""Batch invariance through vLLM's scheduler: alone, batched, and batched under preemption."""

import pytest

from tests.vllm_helpers import counter, greedy, make_llm, random_prompts


@pytest.mark.slow
def test_same_tokens_alone_batched_and_preempted(tiny_dir, in_process):
    # Lengths just under the 128-token CPU block: while decoding, every request wants a new block at once.
    prompts = random_prompts(lengths=(1, 100, 110, 120, 124, 126, 127, 250))
    llm = make_llm(tiny_dir)
    alone = [greedy(llm, [p])[0] for p in prompts]
    assert greedy(llm, prompts) == alone
    del llm
    # 20 blocks shared by the MLA and KDA groups: all 8 prompts are admitted, but their decodes outgrow the
    # cache, so the scheduler preempts requests and recomputes them later.
    llm = make_llm(tiny_dir, num_gpu_blocks_override=20, disable_log_stats=False)
    assert greedy(llm, prompts) == alone
    preemptions = counter(llm, "vllm:num_preemptions")
    assert preemptions > 0, "the small KV cache did not force any preemption"


@pytest.mark.slow
def test_new_one_token_prompts_ignore_a_reused_slots_old_bits(tiny_dir, in_process):
    """A one-token prompt runs as a decode from a fresh state; the slot it gets may have held anything (vLLM's
    pages are shared by the state tensors of every KDA layer, here in bf16 under an fp32 model), so its tokens
    must be the same before and after long prompts have used (and left) the slots."""
    llm = make_llm(tiny_dir, mamba_ssm_cache_dtype="bfloat16", max_num_seqs=2)
    ones = [[40], [41]]
    first = greedy(llm, ones, max_tokens=6)
    for long in random_prompts(lengths=(300, 257, 301)):
        greedy(llm, [long], max_tokens=2)
        assert greedy(llm, ones, max_tokens=6) == first
