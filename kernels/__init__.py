"""vllm-kimilinear's own kernels: KDA and MLA, each a plain-PyTorch path beside its Triton kernels.

This package imports torch (and Triton, lazily) only; it never imports vLLM. PyPI has an unrelated
package also named ``kernels``; ``KIMILINEAR_KERNELS`` marks this one so that the plugin can check it
imported the right package (see ``vllm_kimilinear.kernels_check``).
"""

KIMILINEAR_KERNELS = True
