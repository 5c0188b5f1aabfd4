"""vLLM's own TP=2 on the CPU: the engine's workers build the plugin's model, each rank holds its shard of
the checkpoint, and the greedy tokens equal the reference's (so the sharded math is right too)."""

import pytest
import torch
from safetensors.torch import load_file

from tests.reference_model import ReferenceKimiLinear
from tests.vllm_helpers import counter, greedy, make_llm, random_prompts


def _rank_view(model):
    """Runs inside each worker: the model's class and a few shards, as plain lists."""
    from vllm.distributed import get_tensor_model_parallel_rank

    layers = model.model.layers
    kda, mla = layers[0].self_attn, layers[2].self_attn
    return {
        "rank": get_tensor_model_parallel_rank(),
        "class": f"{type(model).__module__}.{type(model).__qualname__}",
        "A_log": kda.A_log.detach().flatten().tolist(),
        "dt_bias": kda.dt_bias.detach().tolist(),
        "q_conv1d": kda.q_conv1d.weight.detach().tolist(),
        "kv_b_proj": mla.kv_b_proj.weight.detach().tolist(),
        "b_proj_rows": kda.b_proj.output_size_per_partition,
        "kda_heads": kda.local_heads, "mla_heads": mla.local_heads,
    }


@pytest.mark.slow
def test_tp2_builds_plugin_model_with_sharded_weights(tiny_dir, monkeypatch):
    monkeypatch.setenv("VLLM_CPU_OMP_THREADS_BIND", "0|1")      # one core per rank on this 1-NUMA-node machine
    monkeypatch.setenv("VLLM_ALLOW_INSECURE_SERIALIZATION", "1")  # apply_model ships a function to the workers
    monkeypatch.setenv("TORCH_COMPILE_DISABLE", "1")
    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "1")
    llm = make_llm(tiny_dir, tensor_parallel_size=2, distributed_executor_backend="mp")
    views = sorted(llm.apply_model(_rank_view), key=lambda v: v["rank"])
    assert [v["rank"] for v in views] == [0, 1]
    ckpt = load_file(f"{tiny_dir}/model.safetensors")
    p0, p2 = "model.layers.0.self_attn.", "model.layers.2.self_attn."
    for r, v in enumerate(views):
        assert v["class"] == "vllm_kimilinear.model.KimiLinearForCausalLM"
        assert v["kda_heads"] == 1 and v["mla_heads"] == 1 and v["b_proj_rows"] == 1
        half = lambda t, dim: t.chunk(2, dim=dim)[r]  # noqa: E731
        assert torch.equal(torch.tensor(v["A_log"]), half(ckpt[p0 + "A_log"], 2).flatten())
        assert torch.equal(torch.tensor(v["dt_bias"]), half(ckpt[p0 + "dt_bias"], 0))
        assert torch.equal(torch.tensor(v["q_conv1d"]), half(ckpt[p0 + "q_conv1d.weight"], 0))
        assert torch.equal(torch.tensor(v["kv_b_proj"]), half(ckpt[p2 + "kv_b_proj.weight"], 0))
    prompts = random_prompts()[:3]
    ref = ReferenceKimiLinear(tiny_dir)
    assert greedy(llm, prompts, 16) == [ref.greedy(p, 16)[0] for p in prompts]


@pytest.mark.slow
def test_tp2_prefix_cache_hits_match_the_reference(tiny_dir, monkeypatch):
    """Prefix caching under TP=2: each rank keeps and restores its shard of the KDA states at block boundaries;
    requests that hit a cached 300-token prefix give the reference's tokens and first-step logits (within test_parity's
    1e-4 relative)."""
    from tests.test_prefix_caching import shared_prefix_prompts

    monkeypatch.setenv("VLLM_CPU_OMP_THREADS_BIND", "0|1")
    monkeypatch.setenv("TORCH_COMPILE_DISABLE", "1")
    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "1")
    llm = make_llm(tiny_dir, tensor_parallel_size=2, distributed_executor_backend="mp", enable_prefix_caching=True,
                   disable_log_stats=False)
    prompts = shared_prefix_prompts()
    got = [greedy(llm, [p], 12, logits=True) for p in prompts]    # the first fills the cache, the others hit it
    hits = counter(llm, "vllm:prefix_cache_hits")
    assert hits >= 256 * (len(prompts) - 1), hits     # two whole 128-token CPU blocks of the prefix a request
    ref = ReferenceKimiLinear(tiny_dir)
    for p, (ids, logits) in zip(prompts, got):
        want, want_logits = ref.greedy(p, 12)
        assert ids[0] == want
        rel = (torch.tensor(logits[0], dtype=torch.float64) - want_logits).norm() / want_logits.norm()
        assert rel < 1e-4, f"prompt of {len(p)} tokens: first-step logits differ by {rel:.2e} relative"
