"""The KDA state that vLLM's allocator holds per sequence and layer: shapes and dtypes.

One function for both the layers and the model's ``get_mamba_state_*_from_config`` class methods, so the
cache spec vLLM sizes pages with is exactly what the layers allocate.
    conv state:      vLLM's layout of (W-1) x 3*H*D/tp values (q|k|v channels), the model dtype
    recurrent state: (H/tp, V, K), float32, or bfloat16 with --mamba-ssm-cache-dtype bfloat16 (or with
                     --mamba-cache-dtype bfloat16 and the ssm dtype left at auto: vLLM's rule, one flag for both)
Unlike vLLM's in-tree model, "auto" with "auto" keeps the recurrent state in float32, not the model dtype.
"""

import torch

RECURRENT_DTYPES = {"auto": torch.float32, "float32": torch.float32, "bfloat16": torch.bfloat16}


def kda_state_shapes(vllm_config) -> tuple[tuple[int, ...], tuple[int, ...]]:
    from vllm.model_executor.layers.mamba.mamba_utils import MambaStateShapeCalculator

    from vllm_kimilinear.config import read_layout

    tp = vllm_config.parallel_config.tensor_parallel_size
    read_layout(vllm_config.model_config.hf_config, tp)   # a bad config fails here, with its message
    lac = vllm_config.model_config.hf_config.linear_attn_config
    return MambaStateShapeCalculator.kda_state_shape(
        vllm_config.parallel_config.tensor_parallel_size, lac["num_heads"], lac["head_dim"],
        conv_kernel_size=lac["short_conv_kernel_size"])


def kda_state_dtypes(vllm_config) -> tuple[torch.dtype, torch.dtype]:
    from vllm.utils.torch_utils import get_kv_cache_torch_dtype

    cache = vllm_config.cache_config
    conv = get_kv_cache_torch_dtype(cache.mamba_cache_dtype, vllm_config.model_config.dtype)
    ssm, flag = cache.mamba_ssm_cache_dtype or "auto", "--mamba-ssm-cache-dtype"
    if ssm == "auto" and (cache.mamba_cache_dtype or "auto") != "auto":     # vLLM: one flag sets both states
        ssm, flag = cache.mamba_cache_dtype, "--mamba-cache-dtype (with --mamba-ssm-cache-dtype auto)"
    if ssm not in RECURRENT_DTYPES:
        raise ValueError(f"{flag} {ssm!r} is not supported for the KDA recurrent state; "
                         f"allowed: {list(RECURRENT_DTYPES)} (auto = float32).")
    return conv, RECURRENT_DTYPES[ssm]
