"""The released remote code's expert routing ("hf" semantics), as a FusedMoE custom routing function.

scores = sigmoid(logits) + e_score_correction_bias (the bias enters the weights, not only the choice);
top-k by those scores; weights renormalised (sum + 1e-20) and scaled by routed_scaling_factor. The expert ids are
int32, as vLLM's own routing returns them (its CPU fused-MoE kernel accepts nothing else).
"""

import torch


class HFRouter:
    def __init__(self, bias: torch.Tensor, routed_scaling_factor: float):
        self.bias = bias
        self.scale = routed_scaling_factor

    def __call__(self, hidden_states, gating_output, topk: int, renormalize: bool):
        scores = gating_output.float().sigmoid() + self.bias.float()
        weights, ids = scores.topk(topk, dim=-1)
        if renormalize and topk > 1:
            weights = weights / (weights.sum(-1, keepdim=True) + 1e-20)
        return weights * self.scale, ids.to(torch.int32)
