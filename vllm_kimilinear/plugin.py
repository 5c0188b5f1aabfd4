"""The entry point: check the vLLM version, register the model class and the plugin's splitting ops."""

import os


SUPPORTED_VLLM = "0.26"
ARCHITECTURE = "KimiLinearForCausalLM"
MODEL_CLASS = "vllm_kimilinear.model:KimiLinearForCausalLM"
# Custom ops that hold each layer's attention core; CUDA graphs are split around them.
SPLITTING_OPS = ("vllm::kimilinear_kda_core", "vllm::kimilinear_mla_attention")

_registered_pid: int | None = None


def check_vllm_version(version: str) -> None:
    """Raise if ``version`` is not a vLLM 0.26.x release (local tags such as +cpu are fine)."""
    parts = version.split("+")[0].split(".")
    if parts[:2] != SUPPORTED_VLLM.split("."):
        raise RuntimeError(
            f"vllm-kimilinear supports vLLM {SUPPORTED_VLLM}.x only, but vLLM {version} is installed. "
            f"Install a matching vLLM (pip install 'vllm=={SUPPORTED_VLLM}.*'), or switch the plugin off "
            f"with VLLM_PLUGINS= (empty) to use vLLM's own Kimi-Linear.")


def register() -> None:
    """Register the plugin's Kimi-Linear with vLLM. Idempotent; safe in every vLLM process."""
    global _registered_pid
    if _registered_pid == os.getpid():
        return
    import vllm

    check_vllm_version(vllm.__version__)
    from vllm_kimilinear.kernels_check import check_kernels_package

    check_kernels_package()

    from vllm import ModelRegistry
    from vllm.config.compilation import CompilationConfig

    ModelRegistry.register_model(ARCHITECTURE, MODEL_CLASS)
    for op in SPLITTING_OPS:
        if op not in CompilationConfig._attention_ops:
            CompilationConfig._attention_ops.append(op)
    _registered_pid = os.getpid()

    from vllm.logger import init_logger
    from vllm_kimilinear.paths import describe_paths

    init_logger("vllm.plugins.kimilinear").info("vllm-kimilinear %s is active for %s (%s)",
                               _plugin_version(), ARCHITECTURE, describe_paths())


def _plugin_version() -> str:
    try:
        from importlib.metadata import version

        return version("vllm-kimilinear")
    except Exception:  # running from a source tree that was never installed
        return "(source tree)"
