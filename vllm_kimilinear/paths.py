"""Which implementation each token mixer uses on the current platform (logged once per process)."""


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
        return "paged latent cache, Triton split-K decode, torch expanded prefill"
    return "paged latent cache, torch absorbed decode + expanded prefill"


def describe_paths() -> str:
    return f"KDA: {kda_path()}; MLA: {mla_path()}"
