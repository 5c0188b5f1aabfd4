"""An independent plain-PyTorch Kimi-Linear, float64, token by token: the oracle for the plugin.

Written from the equations (the Kimi Linear report, the checkpoint's tensor list); it imports neither vLLM
nor the project. It reads a safetensors checkpoint in the real tensor names and supports both semantics:
  "engine": router bias picks experts only; MLA latent norm eps = rms_norm_eps (vLLM, SGLang, llama.cpp)
  "hf":     router bias also enters the weights (renormalised with +1e-20); latent norm eps = 1e-6
"""

import json
import math
import os

import torch
import torch.nn.functional as F
from safetensors.torch import load_file

DT = torch.float64


def rms_norm(x, w, eps):
    return x * torch.rsqrt((x * x).mean(-1, keepdim=True) + eps) * w


def l2norm(x, eps=1e-6):
    return x * torch.rsqrt((x * x).sum(-1, keepdim=True) + eps)


class ReferenceKimiLinear:
    def __init__(self, path: str, semantics: str | None = None, latent_cache_dtype: torch.dtype | None = None):
        """``latent_cache_dtype=torch.float8_e4m3fn`` stores MLA latents as an fp8 cache would (scale 1)."""
        self.latent_cache_dtype = latent_cache_dtype
        with open(os.path.join(path, "config.json")) as f:
            self.cfg = json.load(f)
        self.semantics = semantics or self.cfg.get("kimi_linear_semantics", "engine")
        self.w = {k: v.to(DT) for k, v in load_file(os.path.join(path, "model.safetensors")).items()}
        lac = self.cfg["linear_attn_config"]
        self.kda = {i - 1 for i in lac["kda_layers"]}
        self.H, self.D, self.W = lac["num_heads"], lac["head_dim"], lac["short_conv_kernel_size"]
        self.eps = self.cfg["rms_norm_eps"]

    # --- per-sequence state: conv buffers + S for KDA layers, latent rows for MLA layers ---
    def new_state(self):
        st = {}
        for i in range(self.cfg["num_hidden_layers"]):
            if i in self.kda:
                st[i] = {"conv": {n: torch.zeros(self.W - 1, self.H * self.D, dtype=DT) for n in "qkv"},
                         "S": torch.zeros(self.H, self.D, self.D, dtype=DT)}
            else:
                st[i] = {"c": [], "kpe": []}
        return st

    def kda_step(self, i, x, st):
        p = f"model.layers.{i}.self_attn."
        w = self.w
        H, D = self.H, self.D
        qkv = {}
        for n in "qkv":
            u = w[p + f"{n}_proj.weight"] @ x                                   # [H*D]
            buf = torch.cat([st["conv"][n], u[None]], 0)                        # [W, H*D], oldest first
            st["conv"][n] = buf[1:]
            qkv[n] = F.silu((buf.T * w[p + f"{n}_conv1d.weight"][:, 0, :]).sum(-1)).view(H, D)
        q, k, v = l2norm(qkv["q"]), l2norm(qkv["k"]), qkv["v"]
        f = w[p + "f_b_proj.weight"] @ (w[p + "f_a_proj.weight"] @ x) + w[p + "dt_bias"]
        g = -torch.exp(w[p + "A_log"].reshape(H, 1)) * F.softplus(f.view(H, D), threshold=20.0)
        beta = torch.sigmoid(w[p + "b_proj.weight"] @ x)                        # [H]
        S = st["S"] * torch.exp(g)[:, :, None]                                  # rows: key dims
        S = S + beta[:, None, None] * k[:, :, None] * (v - torch.einsum("hkv,hk->hv", S, k))[:, None, :]
        st["S"] = S
        o = torch.einsum("hkv,hk->hv", S, q) * D ** -0.5                        # [H, D]
        gate = torch.sigmoid((w[p + "g_b_proj.weight"] @ (w[p + "g_a_proj.weight"] @ x)).view(H, D))
        o = rms_norm(o, w[p + "o_norm.weight"], self.eps) * gate
        return w[p + "o_proj.weight"] @ o.reshape(-1)

    def mla_step(self, i, x, st):
        c = self.cfg
        p = f"model.layers.{i}.self_attn."
        w = self.w
        Hm, P, R, V, L = (c["num_attention_heads"], c["qk_nope_head_dim"], c["qk_rope_head_dim"],
                          c["v_head_dim"], c["kv_lora_rank"])
        q = (w[p + "q_proj.weight"] @ x).view(Hm, P + R)
        lat = w[p + "kv_a_proj_with_mqa.weight"] @ x
        eps = 1e-6 if self.semantics == "hf" else self.eps
        c_new, kpe_new = rms_norm(lat[:L], w[p + "kv_a_layernorm.weight"], eps), lat[L:]
        if self.latent_cache_dtype is not None:
            c_new, kpe_new = (x.to(self.latent_cache_dtype).to(DT) for x in (c_new, kpe_new))
        st["c"].append(c_new)
        st["kpe"].append(kpe_new)
        C, KPE = torch.stack(st["c"]), torch.stack(st["kpe"])                   # [S, L], [S, R]
        kv = (C @ w[p + "kv_b_proj.weight"].T).view(-1, Hm, P + V)              # NoPE: no rotation
        k = torch.cat([kv[..., :P], KPE[:, None, :].expand(-1, Hm, R)], -1)     # [S, H, P+R]
        s = torch.einsum("hd,shd->hs", q, k) / math.sqrt(P + R)
        o = torch.einsum("hs,shv->hv", torch.softmax(s, -1), kv[..., P:])
        return w[p + "o_proj.weight"] @ o.reshape(-1)

    def swiglu(self, prefix, x, gate="gate_proj", up="up_proj", down="down_proj"):
        w = self.w
        return w[f"{prefix}{down}.weight"] @ (F.silu(w[f"{prefix}{gate}.weight"] @ x) * (w[f"{prefix}{up}.weight"] @ x))

    def moe(self, i, x):
        c, w = self.cfg, self.w
        m = f"model.layers.{i}.block_sparse_moe."
        scores = torch.sigmoid(w[m + "gate.weight"] @ x)
        biased = scores + w[m + "gate.e_score_correction_bias"]
        idx = torch.topk(biased, c["num_experts_per_token"]).indices
        weights = (biased if self.semantics == "hf" else scores)[idx]
        if c["moe_renormalize"] and len(idx) > 1:
            weights = weights / (weights.sum() + (1e-20 if self.semantics == "hf" else 0.0))
        weights = weights * c["routed_scaling_factor"]
        out = sum(wt * self.swiglu(m + f"experts.{int(e)}.", x, "w1", "w3", "w2") for wt, e in zip(weights, idx))
        if c.get("num_shared_experts"):
            out = out + self.swiglu(m + "shared_experts.", x)
        return out

    def step(self, token: int, st) -> torch.Tensor:
        """Feed one token; returns the next-token logits [vocab]."""
        c, w = self.cfg, self.w
        x = w["model.embed_tokens.weight"][token]
        for i in range(c["num_hidden_layers"]):
            p = f"model.layers.{i}."
            h = rms_norm(x, w[p + "input_layernorm.weight"], self.eps)
            x = x + (self.kda_step(i, h, st[i]) if i in self.kda else self.mla_step(i, h, st[i]))
            h = rms_norm(x, w[p + "post_attention_layernorm.weight"], self.eps)
            moe = c.get("num_experts") and i >= c["first_k_dense_replace"] and i % c["moe_layer_freq"] == 0
            x = x + (self.moe(i, h) if moe else self.swiglu(p + "mlp.", h))
        return w["lm_head.weight"] @ rms_norm(x, w["model.norm.weight"], self.eps)

    def greedy(self, prompt: list[int], max_new: int):
        """Greedy continuation: (new token ids, logits after the prompt)."""
        st = self.new_state()
        for t in prompt:
            logits = self.step(t, st)
        first = logits.clone()
        out = []
        for _ in range(max_new):
            nxt = int(torch.argmax(logits))
            out.append(nxt)
            logits = self.step(nxt, st)
        return out, first
