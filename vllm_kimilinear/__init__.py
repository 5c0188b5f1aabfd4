"""vllm-kimilinear: a vLLM 0.26 model plugin that serves Kimi-Linear-48B-A3B with its own KDA and MLA paths.

vLLM calls ``register`` (the ``vllm.general_plugins`` entry point) in every process; it puts the plugin's
``KimiLinearForCausalLM`` in place of vLLM's own. Importing this package is cheap: nothing here touches
torch kernels or CUDA until vLLM builds the model.
"""

from vllm_kimilinear.plugin import register

__all__ = ["register"]
