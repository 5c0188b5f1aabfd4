"""The entry point: check the vLLM version, register the model class and the plugin's splitting ops.

An installation the plugin cannot run in (another vLLM version, PyPI's unrelated ``kernels`` package in place of
ours) must not break vLLM for other models: ``register`` then logs the reason and registers a stand-in that raises
it when a Kimi-Linear model is built, so serving Kimi-Linear fails at load time with the fix named."""

import os


SUPPORTED_VLLM = "0.26"
ARCHITECTURE = "KimiLinearForCausalLM"
MODEL_CLASS = "vllm_kimilinear.model:KimiLinearForCausalLM"
# Custom ops that hold each layer's attention core; CUDA graphs are split around them.
SPLITTING_OPS = ("vllm::kimilinear_kda_core", "vllm::kimilinear_mla_attention")
# The plugin's environment variables (README), declared to vLLM so that its check of VLLM_* variables
# knows them (it warns about, or with --fail-on-environ-validation refuses, any it does not know).
ENV_VARS = ("VLLM_KIMILINEAR_KDA", "VLLM_KIMILINEAR_KDA_CHUNK", "VLLM_KIMILINEAR_MLA_FULL_CUDAGRAPH",
            "VLLM_KIMILINEAR_MLA_WGMMA", "VLLM_KIMILINEAR_MLA_FP8_QUERIES")

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
    from vllm import ModelRegistry
    from vllm.logger import init_logger

    logger = init_logger("vllm.plugins.kimilinear")
    declare_env_vars()
    try:
        check_vllm_version(vllm.__version__)
        from vllm_kimilinear.kernels_check import check_kernels_package

        check_kernels_package()
    except (RuntimeError, ImportError) as e:
        logger.error("vllm-kimilinear is not active: %s", e)
        ModelRegistry.register_model(ARCHITECTURE, unavailable_model(str(e)))
        _registered_pid = os.getpid()
        return

    from vllm.config.compilation import CompilationConfig

    ModelRegistry.register_model(ARCHITECTURE, MODEL_CLASS)
    for op in SPLITTING_OPS:
        if op not in CompilationConfig._attention_ops:
            CompilationConfig._attention_ops.append(op)
    _registered_pid = os.getpid()

    from vllm_kimilinear.paths import describe_paths

    logger.info("vllm-kimilinear %s is active for %s (%s)", _plugin_version(), ARCHITECTURE, describe_paths())


def declare_env_vars() -> None:
    """Add the plugin's variables to vLLM's table of known ones (read as plain strings; the plugin parses them)."""
    import vllm.envs as envs

    for name in ENV_VARS:
        envs.environment_variables.setdefault(name, lambda name=name: os.environ.get(name))


def unavailable_model(reason: str) -> type:
    """A stand-in for KimiLinearForCausalLM that raises ``reason`` wherever vLLM first uses it (see the module
    docstring). It has the shape vLLM 0.26 checks a hybrid text-generation model for (duck-typed: the vLLM at hand
    may be another version), so that vLLM's first call into it, the state shapes at config time, is what fails."""
    from torch import nn

    message = f"vllm-kimilinear cannot serve {ARCHITECTURE} in this installation: {reason}"

    class KimiLinearForCausalLM(nn.Module):
        is_hybrid = True
        has_inner_state = True

        def __init__(self, *, vllm_config=None, prefix: str = ""):
            raise RuntimeError(message)

        def embed_input_ids(self, input_ids):
            raise RuntimeError(message)

        def forward(self, input_ids, positions, intermediate_tensors=None, inputs_embeds=None):
            raise RuntimeError(message)

        def compute_logits(self, hidden_states):
            raise RuntimeError(message)

        @classmethod
        def get_mamba_state_shape_from_config(cls, vllm_config):
            raise RuntimeError(message)

        @classmethod
        def get_mamba_state_dtype_from_config(cls, vllm_config):
            raise RuntimeError(message)

        @classmethod
        def get_mamba_state_copy_func(cls):
            raise RuntimeError(message)

    return KimiLinearForCausalLM


def _plugin_version() -> str:
    try:
        from importlib.metadata import version

        return version("vllm-kimilinear")
    except Exception:  # running from a source tree that was never installed
        return "(source tree)"
