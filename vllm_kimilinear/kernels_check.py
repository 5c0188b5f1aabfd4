"""Make sure ``import kernels`` gives this project's package, not PyPI's unrelated ``kernels``."""

import importlib


def check_kernels_package() -> None:
    mod = importlib.import_module("kernels")
    if not getattr(mod, "KIMILINEAR_KERNELS", False):
        raise ImportError(
            f"`import kernels` resolved to {getattr(mod, '__file__', mod)!r}, which is not vllm-kimilinear's "
            "kernels package (PyPI's unrelated `kernels` may be installed). Uninstall it "
            "(pip uninstall kernels) or reinstall vllm-kimilinear.")
