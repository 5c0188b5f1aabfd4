"""Picks the KDA core for a tensor's device: the project's Triton kernels on CUDA, the torch paths elsewhere.

Both take the same inputs: q, k raw (normalised inside), g_raw the gate pre-activation (the gate
-exp(A_log) * softplus(g_raw + dt_bias) is applied inside), beta after its sigmoid, states in paged slots.
Set VLLM_KIMILINEAR_KDA=torch to force the torch path on a GPU (for checks), and VLLM_KIMILINEAR_KDA_CHUNK=16 or 64
to fix the Triton prefill's chunk length (default "auto": the kernels' default, 16-token chunks).
"""

import functools
import os

import torch

from kernels.kda import paged
from kernels.kda.reference import kda_gate


@functools.cache
def triton_kda_available() -> bool:
    """Whether the Triton KDA kernels may be used (callers check the tensors are on CUDA; this asks no
    CUDA question, so vLLM's front-end process can call it before it forks)."""
    if os.environ.get("VLLM_KIMILINEAR_KDA", "").lower() == "torch":
        return False
    try:
        import kernels.kda.triton_chunk  # noqa: F401
        import kernels.kda.triton_conv  # noqa: F401
        import kernels.kda.triton_decode  # noqa: F401
    except ImportError:
        return False
    return True


CHUNK_ENV = "VLLM_KIMILINEAR_KDA_CHUNK"


def prefill_chunk() -> int | None:
    """Tokens per chunk of the Triton prefill asked for through VLLM_KIMILINEAR_KDA_CHUNK (None: "auto", the
    kernels' default, 16-token chunks). The KDA layer reads it at load, so that a bad value fails there."""
    raw = os.environ.get(CHUNK_ENV, "")
    value = raw.strip().lower()
    if value not in ("", "auto", "16", "64"):
        raise ValueError(f"{CHUNK_ENV}={raw!r}: allowed values are auto (the default: the kernels' choice, 16-token "
                         "chunks), 16 and 64")
    return None if value in ("", "auto") else int(value)


def short_conv_prefill(x, weight, conv_state, slots, has_init, cu_seqlens):
    if x.is_cuda and triton_kda_available():
        from kernels.kda.triton_conv import short_conv_prefill as triton_short_conv_prefill

        return triton_short_conv_prefill(x, weight, conv_state, slots, has_init, cu_seqlens)
    return paged.short_conv_prefill(x, weight, conv_state, slots, has_init, cu_seqlens)


def short_conv_decode(x, weight, conv_state, slots, has_init):
    if x.is_cuda and triton_kda_available():
        from kernels.kda.triton_conv import short_conv_decode as triton_short_conv_decode

        return triton_short_conv_decode(x, weight, conv_state, slots, has_init)
    return paged.short_conv_decode(x, weight, conv_state, slots, has_init)


def kda_decode(q, k, v, g_raw, beta, A_log, dt_bias, scale, rec_state, slots, has_init):
    if q.is_cuda and triton_kda_available():
        from kernels.kda.triton_decode import recurrent_kda_decode

        return recurrent_kda_decode(q, k, v, g_raw, beta, A_log, dt_bias, scale, rec_state, slots, has_init)
    g = kda_gate(g_raw, A_log, dt_bias)
    return paged.kda_decode(q, k, v, g, beta, scale, rec_state, slots, has_init)


def prefill_warmups(num_heads: int, head_dim: int, device, chunk=None) -> list[tuple[int, dict]]:
    """(sequences, kernel settings) of the short prefills that launch every compiled kernel variant the fast path
    can pick with ``chunk``-token chunks (CUDA; ``prefill_chunk()``, None: the default length): one per launch of
    the sequential kernel, plus the walk in segments that one long sequence takes; the layer's profile run warms
    each, so that serving compiles nothing. An empty list elsewhere."""
    if device.type == "cuda" and triton_kda_available():
        from kernels.kda.triton_chunk import prefill_warmups as warmups

        return warmups(num_heads, head_dim, device, chunk)
    return []


def kda_prefill(q, k, v, g_raw, beta, A_log, dt_bias, scale, rec_state, slots, has_init, cu_seqlens, chunk=None,
                settings=None):
    """chunk: the Triton prefill's tokens per chunk (``prefill_chunk()``, read by the layer at load; None: auto);
    settings: more Triton prefill settings (a ``prefill_warmups`` entry's), ignored by the torch path."""
    if q.is_cuda and triton_kda_available():
        from kernels.kda.triton_chunk import chunk_kda_prefill

        cfg = dict(settings or {})
        if chunk is not None:
            cfg["chunk"] = chunk
        return chunk_kda_prefill(q, k, v, g_raw, beta, A_log, dt_bias, scale, rec_state, slots, has_init,
                                 cu_seqlens.to(torch.int32), _config=cfg or None)
    g = kda_gate(g_raw, A_log, dt_bias)
    return paged.kda_prefill(q, k, v, g, beta, scale, rec_state, slots, has_init, cu_seqlens)
