"""The entry point: vLLM's plugin loading makes KimiLinearForCausalLM resolve to the plugin's class."""

import importlib.metadata

import pytest


def test_entry_point_is_declared():
    eps = importlib.metadata.entry_points(group="vllm.general_plugins")
    assert "vllm_kimilinear:register" in {ep.value for ep in eps}


def test_registry_resolves_to_plugin_after_vllm_loads_plugins():
    from vllm import ModelRegistry
    from vllm.plugins import load_general_plugins

    load_general_plugins()
    cls = ModelRegistry._try_load_model_cls("KimiLinearForCausalLM")
    assert cls is not None and cls.__module__ == "vllm_kimilinear.model"
    from vllm.config.compilation import CompilationConfig

    assert "vllm::kimilinear_kda_core" in CompilationConfig._attention_ops


def test_register_is_idempotent():
    from vllm.config.compilation import CompilationConfig

    from vllm_kimilinear import register

    register()
    register()
    assert CompilationConfig._attention_ops.count("vllm::kimilinear_mla_attention") == 1


def test_our_kernels_package_is_imported():
    import kernels

    assert kernels.KIMILINEAR_KERNELS is True


@pytest.mark.parametrize("version", ["0.25.1", "0.27.0", "1.0.0", "0.2.6"])
def test_refuses_other_vllm_versions(version):
    from vllm_kimilinear.plugin import check_vllm_version

    with pytest.raises(RuntimeError, match=rf"supports vLLM 0\.26\.x only, but vLLM {version} is installed"):
        check_vllm_version(version)


@pytest.mark.parametrize("version", ["0.26.0", "0.26.0+cpu", "0.26.3"])
def test_accepts_026(version):
    from vllm_kimilinear.plugin import check_vllm_version

    check_vllm_version(version)


def test_register_refuses_wrong_installed_vllm(monkeypatch):
    import vllm

    import vllm_kimilinear.plugin as plugin

    monkeypatch.setattr(vllm, "__version__", "0.33.0")
    monkeypatch.setattr(plugin, "_registered_pid", None)
    with pytest.raises(RuntimeError, match="vLLM 0.33.0 is installed"):
        plugin.register()


def test_foreign_kernels_package_is_refused(monkeypatch):
    """PyPI's unrelated `kernels` shadowing ours must fail loudly, naming the fix."""
    import sys
    import types

    from vllm_kimilinear.kernels_check import check_kernels_package

    monkeypatch.setitem(sys.modules, "kernels", types.ModuleType("kernels"))
    with pytest.raises(ImportError, match=r"not vllm-kimilinear.s kernels package .*\(pip uninstall kernels\)"):
        check_kernels_package()
