"""Shared fixtures: tiny random Kimi-Linear checkpoints and a hermetic vLLM CPU environment."""

import os

import pytest

# vLLM on a CPU: stay on loopback, keep caches and sockets in a scratch area, small KV space.
os.environ.setdefault("VLLM_HOST_IP", "127.0.0.1")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("VLLM_NO_USAGE_STATS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    from vllm_kimilinear.tiny import build

    return build(str(tmp_path_factory.mktemp("tiny-engine")), semantics="engine")


@pytest.fixture(scope="session")
def tiny_hf_dir(tmp_path_factory):
    from vllm_kimilinear.tiny import build

    return build(str(tmp_path_factory.mktemp("tiny-hf")), semantics="hf")


@pytest.fixture
def in_process(monkeypatch):
    """Run vLLM's engine core in this process (fast) without torch.compile (seconds, not minutes)."""
    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    monkeypatch.setenv("TORCH_COMPILE_DISABLE", "1")


@pytest.fixture(autouse=True)
def fresh_vllm_env():
    """vLLM caches its environment variables once an engine has started; each test reads them anew."""
    import vllm.envs

    vllm.envs.disable_envs_cache()
    yield
