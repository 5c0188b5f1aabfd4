"""Build a tiny random Kimi-Linear checkpoint (config, safetensors in the real tensor names, tokenizer).

For smoke tests, the quickstart and the test suite: nothing is downloaded. The per-head sizes are the
real model's (KDA head 128, MLA latent 512 + 64, nope 128, v 128); heads, width, layers and experts are
few. ``python -m vllm_kimilinear.tiny OUT_DIR [--semantics hf]``
"""

import argparse
import json
import math
import os

from types import SimpleNamespace

import torch

from vllm_kimilinear.config import is_moe_layer

CORPUS = [
    "Kimi Linear mixes delta attention layers with latent attention layers.",
    "The quick brown fox jumps over the lazy dog while the cat sleeps in the sun.",
    "Hello, my name is Kimi and I like long contexts, linear attention and experts.",
    "A language model predicts the next token from the tokens before it.",
    "What is the capital of France? Paris is the capital of France.",
    "One two three four five six seven eight nine ten eleven twelve.",
]
SPECIAL = ["<|bos|>", "<|eos|>", "<|pad|>", "<|im_start|>", "<|im_end|>"]
CHAT_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
                 "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def tiny_config(vocab_size: int = 512, semantics: str = "engine") -> dict:
    return {
        "architectures": ["KimiLinearForCausalLM"], "model_type": "kimi_linear",
        "vocab_size": vocab_size, "hidden_size": 256, "intermediate_size": 384, "num_hidden_layers": 4,
        "num_attention_heads": 2, "num_key_value_heads": 2, "head_dim": 128,
        "kv_lora_rank": 512, "q_lora_rank": None, "qk_nope_head_dim": 128, "qk_rope_head_dim": 64,
        "v_head_dim": 128, "mla_use_nope": True,
        "num_experts": 8, "num_experts_per_token": 2, "num_shared_experts": 1, "moe_intermediate_size": 128,
        "first_k_dense_replace": 1, "moe_layer_freq": 1, "routed_scaling_factor": 2.446,
        "moe_router_activation_func": "sigmoid", "moe_renormalize": True, "use_grouped_topk": True,
        "num_expert_group": 1, "topk_group": 1,
        "linear_attn_config": {"kda_layers": [1, 2, 4], "full_attn_layers": [3], "num_heads": 2, "head_dim": 128,
                               "short_conv_kernel_size": 4},
        "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "rope_scaling": None, "tie_word_embeddings": False,
        "model_max_length": 4096, "max_position_embeddings": 4096, "torch_dtype": "float32",
        "bos_token_id": 0, "eos_token_id": 1, "pad_token_id": 2, "kimi_linear_semantics": semantics,
    }


LATENT_GAIN = 1.7e-3


def random_weights(cfg: dict, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors in the real checkpoint's names and shapes, scaled to keep activations O(1)."""

    g = torch.Generator().manual_seed(seed)

    def lin(out_f, in_f, gain=1.0):
        return torch.randn(out_f, in_f, generator=g) * (gain / math.sqrt(in_f))

    h, L = cfg["hidden_size"], cfg["num_hidden_layers"]
    lac = cfg["linear_attn_config"]
    H, D = lac["num_heads"], lac["head_dim"]
    W = lac["short_conv_kernel_size"]
    Hm, P, R, V, C = (cfg["num_attention_heads"], cfg["qk_nope_head_dim"], cfg["qk_rope_head_dim"],
                      cfg["v_head_dim"], cfg["kv_lora_rank"])
    t = {"model.embed_tokens.weight": torch.randn(cfg["vocab_size"], h, generator=g),
         "model.norm.weight": 1 + 0.1 * torch.randn(h, generator=g),
         "lm_head.weight": lin(cfg["vocab_size"], h, 4.0)}
    for i in range(L):
        p = f"model.layers.{i}."
        t[p + "input_layernorm.weight"] = 1 + 0.1 * torch.randn(h, generator=g)
        t[p + "post_attention_layernorm.weight"] = 1 + 0.1 * torch.randn(h, generator=g)
        a = p + "self_attn."
        if (i + 1) in lac["kda_layers"]:
            for n in ("q", "k", "v"):
                t[a + f"{n}_proj.weight"] = lin(H * D, h)
                t[a + f"{n}_conv1d.weight"] = torch.randn(H * D, 1, W, generator=g) * 0.5
            t[a + "f_a_proj.weight"] = lin(D, h)
            t[a + "f_b_proj.weight"] = lin(H * D, D, 2.0)
            t[a + "dt_bias"] = torch.randn(H * D, generator=g) * 0.5
            t[a + "A_log"] = torch.log(torch.empty(1, 1, H, 1).uniform_(1, 16, generator=g))
            t[a + "b_proj.weight"] = lin(H, h)
            t[a + "g_a_proj.weight"] = lin(D, h)
            t[a + "g_b_proj.weight"] = lin(H * D, D)
            t[a + "o_norm.weight"] = 1 + 0.1 * torch.randn(D, generator=g)
            t[a + "o_proj.weight"] = lin(h, H * D)
        else:
            t[a + "q_proj.weight"] = lin(Hm * (P + R), h, 2.0)
            # the latent rows small (mean square ~3e-6, between the two semantics' norm eps, 1e-6 and 1e-5),
            # so that the latent norm's eps changes the model and a test can tell which eps a layer uses
            t[a + "kv_a_proj_with_mqa.weight"] = torch.cat([lin(C, h, LATENT_GAIN), lin(R, h, 2.0)])
            t[a + "kv_a_layernorm.weight"] = 1 + 0.1 * torch.randn(C, generator=g)
            t[a + "kv_b_proj.weight"] = lin(Hm * (P + V), C)
            t[a + "o_proj.weight"] = lin(h, Hm * V)
        if is_moe_layer(SimpleNamespace(**cfg), i):
            m = p + "block_sparse_moe."
            t[m + "gate.weight"] = lin(cfg["num_experts"], h, 2.0)
            t[m + "gate.e_score_correction_bias"] = 0.3 * torch.randn(cfg["num_experts"], generator=g)
            f = cfg["moe_intermediate_size"]
            for e in range(cfg["num_experts"]):
                t[m + f"experts.{e}.w1.weight"] = lin(f, h)
                t[m + f"experts.{e}.w3.weight"] = lin(f, h)
                t[m + f"experts.{e}.w2.weight"] = lin(h, f)
            fs = f * cfg["num_shared_experts"]
            t[m + "shared_experts.gate_proj.weight"] = lin(fs, h)
            t[m + "shared_experts.up_proj.weight"] = lin(fs, h)
            t[m + "shared_experts.down_proj.weight"] = lin(h, fs)
        else:
            f = cfg["intermediate_size"]
            t[p + "mlp.gate_proj.weight"] = lin(f, h)
            t[p + "mlp.up_proj.weight"] = lin(f, h)
            t[p + "mlp.down_proj.weight"] = lin(h, f)
    return {k: v.contiguous() for k, v in t.items()}


def build_tokenizer(out_dir: str, vocab_size: int) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size - 16, special_tokens=SPECIAL,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS * 4, trainer)
    tok.save(os.path.join(out_dir, "tokenizer.json"))
    with open(os.path.join(out_dir, "tokenizer_config.json"), "w") as f:
        json.dump({"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<|bos|>", "eos_token": "<|eos|>",
                   "pad_token": "<|pad|>", "model_max_length": 4096, "chat_template": CHAT_TEMPLATE,
                   "add_bos_token": False}, f, indent=1)


def build(out_dir: str, semantics: str = "engine", seed: int = 0, drop: tuple[str, ...] = ()) -> str:
    """Write config.json, model.safetensors and the tokenizer to ``out_dir``; ``drop`` omits tensors."""
    from safetensors.torch import save_file

    os.makedirs(out_dir, exist_ok=True)
    cfg = tiny_config(semantics=semantics)
    build_tokenizer(out_dir, cfg["vocab_size"])
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(cfg, f, indent=1)
    weights = {k: v for k, v in random_weights(cfg, seed).items() if k not in drop}
    save_file(weights, os.path.join(out_dir, "model.safetensors"))
    return out_dir


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out_dir")
    ap.add_argument("--semantics", default="engine", choices=["engine", "hf"])
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    print(build(args.out_dir, args.semantics, args.seed))
