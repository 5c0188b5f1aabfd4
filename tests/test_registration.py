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


@pytest.mark.parametrize("broken", ["vllm_version", "kernels_package"])
def test_unusable_installation_fails_kimi_linear_only(broken, monkeypatch):
    """Another vLLM version, or PyPI's `kernels` in place of ours: register() must not raise (vLLM runs it for
    every model), and building Kimi-Linear must fail with the reason."""
    import sys
    import types

    import vllm
    from vllm import ModelRegistry

    import vllm_kimilinear.plugin as plugin

    arch = plugin.ARCHITECTURE
    monkeypatch.setitem(ModelRegistry.models, arch, ModelRegistry.models[arch])     # restored after the test
    monkeypatch.setattr(plugin, "_registered_pid", None)
    if broken == "vllm_version":
        monkeypatch.setattr(vllm, "__version__", "0.33.0")
        reason = "vLLM 0.33.0 is installed"
    else:
        monkeypatch.setitem(sys.modules, "kernels", types.ModuleType("kernels"))
        reason = r"pip uninstall kernels"
    plugin.register()
    cls = ModelRegistry._try_load_model_cls(arch)
    assert cls is not None and cls.__module__ == plugin.__name__
    with pytest.raises(RuntimeError, match=reason):
        cls(vllm_config=None, prefix="")
    assert ModelRegistry._try_load_model_cls("LlamaForCausalLM") is not None     # other models untouched


def test_plugin_environment_variables_are_known_to_vllm(monkeypatch):
    """vLLM warns about (or, with --fail-on-environ-validation, refuses) VLLM_* variables it does not know; every
    VLLM_KIMILINEAR_* name the plugin reads is declared to it."""
    import os
    import pathlib
    import re

    import vllm.envs as envs

    import vllm_kimilinear
    from vllm_kimilinear.plugin import ENV_VARS, declare_env_vars

    root = pathlib.Path(vllm_kimilinear.__file__).parent
    used = {m for f in root.rglob("*.py") for m in re.findall(r"VLLM_KIMILINEAR_[A-Z0-9_]*[A-Z0-9]", f.read_text())}
    assert used and used <= set(ENV_VARS), used - set(ENV_VARS)
    declare_env_vars()
    for name in [n for n in os.environ if n.startswith("VLLM_") and n not in envs.environment_variables]:
        monkeypatch.delenv(name)                # whatever else this shell sets is not the question here
    for name in ENV_VARS:
        monkeypatch.setenv(name, "0")
    envs.validate_environ(hard_fail=True)
    monkeypatch.setenv("VLLM_KIMILINEAR_NOT_A_SETTING", "1")
    with pytest.raises(ValueError, match="VLLM_KIMILINEAR_NOT_A_SETTING"):
        envs.validate_environ(hard_fail=True)


def test_foreign_kernels_package_is_refused(monkeypatch):
    """PyPI's unrelated `kernels` shadowing ours must fail loudly, naming the fix."""
    import sys
    import types

    from vllm_kimilinear.kernels_check import check_kernels_package

    monkeypatch.setitem(sys.modules, "kernels", types.ModuleType("kernels"))
    with pytest.raises(ImportError, match=r"not vllm-kimilinear.s kernels package .*\(pip uninstall kernels\)"):
        check_kernels_package()
