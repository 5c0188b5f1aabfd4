"""fp8 (e4m3) latent cache: quantise rows on write, dequantise on read, with one scale per tensor.

A stored value is ``q = saturate(x / k_scale)`` in float8_e4m3fn (finite range +-448, no inf), read
back as ``x' = float(q) * k_scale``; this is vLLM's convention for ``layer._k_scale``.

Round-trip error (round to nearest even, 3 mantissa bits): for |x| / k_scale in the normal range
[2^-6, 448], |x' - x| <= 2^-4 |x|; below it (subnormals) |x' - x| <= 2^-10 k_scale; above 448 the value
saturates to +-448 k_scale. So ``|x' - x| <= max(2^-4 |x|, 2^-10 k_scale)`` whenever |x| <= 448 k_scale.

Choosing the scale (one per MLA layer, shared by c and k_pe, which live in one row):
* the checkpoint's k_scale for the layer when it ships one;
* otherwise 1.0 (``DEFAULT_K_SCALE``), as vLLM does: the latent is RMS-normalised, so its values are
  O(1) and sit well inside [2^-6, 448];
* or calibrate: ``scale_from_amax(rows)`` = amax(|rows|) / 448 over sample rows (with headroom if the
  sample may miss the largest values, e.g. ``margin=2``).
"""

import torch

FP8_DTYPE = torch.float8_e4m3fn
FP8_MAX = 448.0
DEFAULT_K_SCALE = 1.0
REL_ERR_NORMAL = 2.0 ** -4        # relative bound in the normal range
ABS_ERR_SUBNORMAL = 2.0 ** -10    # absolute bound below it, in units of k_scale
MIN_NORMAL = 2.0 ** -6


def _as_scale(k_scale, device) -> torch.Tensor:
    if isinstance(k_scale, torch.Tensor):
        return k_scale.to(device=device, dtype=torch.float32).reshape(-1)[0]
    return torch.tensor(float(k_scale), dtype=torch.float32, device=device)


def quantize_latent(rows: torch.Tensor, k_scale=DEFAULT_K_SCALE) -> torch.Tensor:
    """rows (any float dtype, any shape) -> float8_e4m3fn holding rows / k_scale, saturated to +-448."""
    s = _as_scale(k_scale, rows.device)
    return (rows.float() / s).clamp(-FP8_MAX, FP8_MAX).to(FP8_DTYPE)


def dequantize_latent(q: torch.Tensor, k_scale=DEFAULT_K_SCALE, dtype=torch.float32) -> torch.Tensor:
    """float8_e4m3fn (or its uint8 view) -> ``dtype`` values q * k_scale."""
    if q.dtype == torch.uint8:
        q = q.view(FP8_DTYPE)
    return (q.float() * _as_scale(k_scale, q.device)).to(dtype)


def scale_from_amax(rows: torch.Tensor, margin: float = 1.0) -> torch.Tensor:
    """Per-tensor scale margin * amax(|rows|) / 448 as a 1-element fp32 tensor (no host sync)."""
    amax = rows.detach().abs().amax().float().clamp(min=1e-12)
    return (amax * margin / FP8_MAX).reshape(1)


def roundtrip_bound(x: torch.Tensor, k_scale=DEFAULT_K_SCALE) -> torch.Tensor:
    """Elementwise bound on |dequantize(quantize(x)) - x| for |x| <= 448 k_scale (see module doc)."""
    s = _as_scale(k_scale, x.device)
    return torch.maximum(x.float().abs() * REL_ERR_NORMAL, ABS_ERR_SUBNORMAL * s)


def round_queries_e4m3(q_lat: torch.Tensor, q_pe: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The queries as the fp8 register kernel's score product takes them (``wgmma_decode``'s fp8 queries): each
    head (the last dim of [..., H, L] / [..., H, R] together) times the power of two 2^e that brings its largest
    |value| into (224, 448] (a head whose largest |value| is below 2^-100 takes 2^-100's scale), rounded to e4m3,
    divided by 2^e again; float32. Relative error at most 2^-4 in e4m3's normal range, which reaches down to about
    2^-14 of the head's largest value; a head of zeros stays zeros."""
    q, qp = q_lat.float(), q_pe.float()
    amax = torch.maximum(q.abs().amax(dim=-1), qp.abs().amax(dim=-1))
    amax = torch.where(amax > 0, amax.clamp(min=2.0 ** -100), torch.full_like(amax, FP8_MAX))
    e = torch.floor(torch.log2(FP8_MAX / amax))
    s = torch.exp2(e)[..., None]
    return (q * s).to(FP8_DTYPE).float() / s, (qp * s).to(FP8_DTYPE).float() / s
