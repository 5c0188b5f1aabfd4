"""Which implementation each token mixer uses on the current platform (logged once per process)."""

import os


def kda_path() -> str:
    from vllm.platforms import current_platform

    if current_platform.is_cuda_alike():
        from vllm_kimilinear.kda.dispatch import triton_kda_available

        if triton_kda_available():
            return "Triton chunked prefill + in-place decode"
    return "torch chunked prefill + decode"


def mla_path() -> str:
    from vllm.platforms import current_platform

    if current_platform.is_cuda_alike():
        # the rule of mla/backend.py's wgmma_decode_choice and kernels/mla/wgmma_decode.supported, in words
        if os.environ.get("VLLM_KIMILINEAR_MLA_WGMMA", "") == "0":
            decode = "Triton split-K decode"
        else:
            decode = "Gluon wgmma decode on sm_90 where it applies, else Triton split-K"
            if os.environ.get("VLLM_KIMILINEAR_MLA_FP8_QUERIES", "") != "0":
                decode += " (with --kv-cache-dtype fp8 its queries are rounded to e4m3)"
        return f"paged latent cache, {decode}, FlashAttention expanded prefill (torch in float32)"
    return "paged latent cache, torch absorbed decode + expanded prefill"


def describe_paths() -> str:
    return f"KDA: {kda_path()}; MLA: {mla_path()}"
