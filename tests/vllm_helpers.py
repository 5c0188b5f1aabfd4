"""Small helpers the end-to-end tests share: building an LLM on the tiny model, greedy generation."""

import random

VOCAB = 512


def make_llm(model_dir: str, **overrides):
    from vllm import LLM

    # On a CPU, gpu_memory_utilization is the share of host RAM that must be free at start-up.
    kw = dict(model=model_dir, dtype="float32", enforce_eager=True, max_model_len=512, max_num_seqs=8,
              gpu_memory_utilization=0.2,
              seed=0, logprobs_mode="raw_logits", max_logprobs=VOCAB)
    kw.update(overrides)
    return LLM(**kw)


def greedy(llm, prompts, max_tokens=32, logits=False):
    """Greedy token ids per prompt (and the first step's raw logits over the vocabulary if asked)."""
    from vllm import SamplingParams

    sp = SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True, detokenize=False,
                        logprobs=VOCAB if logits else None)
    outs = llm.generate([{"prompt_token_ids": p} for p in prompts], sp, use_tqdm=False)
    ids = [list(o.outputs[0].token_ids) for o in outs]
    if not logits:
        return ids
    firsts = []
    for o in outs:
        step = o.outputs[0].logprobs[0]
        firsts.append([step[t].logprob for t in range(VOCAB)])
    return ids, firsts


def counter(llm, name: str) -> float:
    """A vLLM counter's total (the engine needs ``disable_log_stats=False``), e.g. "vllm:prefix_cache_hits"."""
    return sum(m.value for m in llm.get_metrics() if m.name == name)


def random_prompts(n=8, lengths=(1, 7, 33, 64, 65, 129, 200, 300), seed=1234):
    rng = random.Random(seed)
    return [[rng.randrange(16, VOCAB - 80) for _ in range(L)] for L in lengths[:n]]
