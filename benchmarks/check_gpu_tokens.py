"""On a GPU: the plugin's greedy tokens for the tiny checkpoint (float32) equal the fp64 reference's,
which the CPU path reproduces exactly in CI, with whole prefills and with prefills split over many steps
(max_num_batched_tokens=64), and with the fp8 latent cache against the fp8-storage reference; with prefix caching
(vLLM's "align" mode) each prompt runs twice, the second time from its cached blocks, KDA states included.

    python benchmarks/check_gpu_tokens.py [--cases 0,1]      (or CASES=0,1 in the environment)
"""

import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
# The fp64 reference runs first on CPU threads; a forked engine core then hangs in its first parallel fill
# (seen on the H100: stuck in a pinned torch.zeros). Spawned engine processes start clean.
os.environ.setdefault("VLLM_WORKER_MULTIPROC_METHOD", "spawn")
# greedy tokens need no FlashInfer sampler, whose JIT build took over 4 minutes on a fresh H200 (2026-11-30)
os.environ.setdefault("VLLM_USE_FLASHINFER_SAMPLER", "0")


def first_difference(a, b) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


def main() -> int:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", default=os.environ.get("CASES"),
                    help="comma-separated case numbers to run (default: all; the CASES variable also sets it)")
    args = ap.parse_args()
    import torch
    if not torch.cuda.is_available():
        sys.exit("check_gpu_tokens.py needs a CUDA GPU (none is visible here)")
    from vllm import LLM

    from tests.reference_model import ReferenceKimiLinear
    from tests.vllm_helpers import counter, greedy, random_prompts
    from vllm_kimilinear.tiny import build

    d = build(tempfile.mkdtemp())
    prompts = random_prompts()
    t = time.time()
    ref = ReferenceKimiLinear(d)
    want = [ref.greedy(p, 32)[0] for p in prompts]
    print(f"RESULT reference tokens computed in {time.time() - t:.0f} s", flush=True)
    failures = 0
    chunked = dict(max_num_batched_tokens=64, enable_chunked_prefill=True)
    # Eager first: a correctness answer even if compilation or graph capture is slow.
    cases = [("eager, whole prefills", dict(enforce_eager=True)),
             ("eager, chunked prefill 64 tokens/step", dict(enforce_eager=True, **chunked)),
             ("torch.compile + CUDA graphs (full for decodes), whole prefills", {}),
             ("torch.compile + CUDA graphs (full for decodes), chunked prefill 64 tokens/step", chunked),
             ("piecewise CUDA graphs only (VLLM_KIMILINEAR_MLA_FULL_CUDAGRAPH=0)", dict(piecewise_only=True)),
             ("eager, prefix caching, chunked prefill 64 tokens/step, each prompt twice",
              dict(enforce_eager=True, enable_prefix_caching=True, twice=True, **chunked)),
             ("torch.compile + CUDA graphs, prefix caching, chunked prefill 64 tokens/step, each prompt twice",
              dict(enable_prefix_caching=True, twice=True, **chunked))]
    only = args.cases          # e.g. CASES=0,1 to run the eager cases only
    for i, (label, kw) in enumerate(cases):
        if only and str(i) not in only.split(","):
            continue
        t0 = time.time()
        # vLLM's default cudagraph mode is FULL_AND_PIECEWISE; the plugin's MLA backend allows the full graphs
        # for decode-only batches on CUDA unless VLLM_KIMILINEAR_MLA_FULL_CUDAGRAPH=0
        if kw.pop("piecewise_only", False):
            os.environ["VLLM_KIMILINEAR_MLA_FULL_CUDAGRAPH"] = "0"
        else:
            os.environ.pop("VLLM_KIMILINEAR_MLA_FULL_CUDAGRAPH", None)
        twice = kw.pop("twice", False)
        llm = LLM(model=d, dtype="float32", max_model_len=512, max_num_seqs=8, seed=0, gpu_memory_utilization=0.3,
                  disable_log_stats=not twice, **kw)
        t1 = time.time()
        runs = [greedy(llm, prompts, 32) for _ in range(2 if twice else 1)]
        ok = [g == w for run in runs for g, w in zip(run, want)]
        bad = [f"run {r} prompt {i} ({len(prompts[i])} tokens) from token {first_difference(g[i], want[i])}"
               for r, g in enumerate(runs) for i in range(len(prompts)) if g[i] != want[i]]
        note = ""
        if twice:
            hits = counter(llm, "vllm:prefix_cache_hits")
            cache = llm.llm_engine.vllm_config.cache_config
            note = f", prefix-cache hits {hits:.0f} tokens, mamba cache mode {cache.mamba_cache_mode}"
            failures += hits == 0                   # no hit: the case checked nothing
        print(f"RESULT tokens {label}: {sum(ok)}/{len(ok)} prompts equal the reference "
              f"(engine start {t1 - t0:.0f} s, generate {time.time() - t1:.1f} s{note})"
              + (f"; differ: {', '.join(bad)}" if bad else ""), flush=True)
        failures += ok.count(False)
        del llm
        torch.cuda.empty_cache()
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
