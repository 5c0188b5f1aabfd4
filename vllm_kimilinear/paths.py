"""Which implementation each token mixer uses on the current platform (logged once per process)."""


def kda_path() -> str:
    from vllm.platforms import current_platform

    if current_platform.is_cpu():
        return "torch (CPU)"
    return f"torch ({current_platform.device_name})"


def mla_path() -> str:
    from vllm.platforms import current_platform

    if current_platform.is_cpu():
        return "torch paged latent cache (CPU)"
    return f"torch paged latent cache ({current_platform.device_name})"


def describe_paths() -> str:
    return f"KDA: {kda_path()}; MLA: {mla_path()}"
