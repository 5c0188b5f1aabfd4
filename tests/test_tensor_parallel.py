"""vLLM's own TP=2 on the CPU: the engine's workers build the plugin's model, each rank holds its shard of
the checkpoint, and the greedy tokens equal the reference's (so the sharded math is right too)."""

import pytest
import torch
from safetensors.torch import load_file

from tests.reference_model import ReferenceKimiLinear
from tests.vllm_helpers import greedy, make_llm, random_prompts


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
