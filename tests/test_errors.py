"""Bad input gets one clear error at load time, naming the problem (checked by message)."""

import json
import os
import subprocess
import sys

import pytest

from vllm_kimilinear.config import read_layout
from vllm_kimilinear.tiny import build, tiny_config

LOAD = """
import os
import sys
import vllm
vllm.__version__ = os.environ.get("FAKE_VLLM_VERSION", vllm.__version__)    # before the plugin registers
from vllm import LLM
try:
    LLM(model=sys.argv[1], dtype="float32", enforce_eager=True, max_model_len=256, max_num_seqs=2,
        gpu_memory_utilization=0.2)
except Exception as e:
    print("LOAD-ERROR:", type(e).__name__, e)
    sys.exit(3)
print("LOADED")
"""


def load_in_subprocess(model_dir: str, **extra_env: str) -> str:
    env = dict(os.environ, VLLM_ENABLE_V1_MULTIPROCESSING="0", TORCH_COMPILE_DISABLE="1", **extra_env)
    r = subprocess.run([sys.executable, "-c", LOAD, model_dir], env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 3, f"expected a load error, got rc={r.returncode}\n{r.stdout[-3000:]}{r.stderr[-3000:]}"
    return r.stdout + r.stderr


def edited_model(tmp_path, edit, drop=()):
    d = build(str(tmp_path / "m"), drop=drop)
    with open(os.path.join(d, "config.json")) as f:
        cfg = json.load(f)
    edit(cfg)
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(cfg, f)
    return d


class Cfg:
    """A config object as vLLM hands it to the model (attributes)."""

    def __init__(self, d):
        self.__dict__.update(d)


def test_missing_linear_attn_config_unit():
    cfg = tiny_config()
    del cfg["linear_attn_config"]
    with pytest.raises(ValueError, match="has no `linear_attn_config`"):
        read_layout(Cfg(cfg))


def test_layer_in_both_lists_unit():
    cfg = tiny_config()
    cfg["linear_attn_config"]["kda_layers"] = [1, 2, 3, 4]
    with pytest.raises(ValueError, match=r"layers \[3\] are listed as both KDA"):
        read_layout(Cfg(cfg))


def test_uncovered_and_out_of_range_layers_unit():
    cfg = tiny_config()
    cfg["linear_attn_config"]["kda_layers"] = [1, 2]
    with pytest.raises(ValueError, match=r"layers \[4\] are in neither"):
        read_layout(Cfg(cfg))
    cfg["linear_attn_config"]["kda_layers"] = [0, 1, 2, 4]
    with pytest.raises(ValueError, match=r"numbers \[0\] are outside 1..4"):
        read_layout(Cfg(cfg))


def test_unsupported_head_size_and_semantics_unit():
    cfg = tiny_config()
    cfg["linear_attn_config"]["head_dim"] = 96
    with pytest.raises(ValueError, match=r"KDA head size 96 .* supported: \[64, 128\]"):
        read_layout(Cfg(cfg))
    cfg = tiny_config(semantics="transformers")
    with pytest.raises(ValueError, match=r"kimi_linear_semantics='transformers' is not known; allowed: \['engine', 'hf'\]"):
        read_layout(Cfg(cfg))


def test_activation_and_hf_router_scoring_unit():
    cfg = tiny_config()
    cfg["hidden_act"] = "gelu"
    with pytest.raises(ValueError, match=r"hidden_act='gelu' is not supported.*allowed: 'silu'"):
        read_layout(Cfg(cfg))
    cfg = tiny_config(semantics="hf")
    cfg["moe_router_activation_func"] = "softmax"
    with pytest.raises(ValueError, match=r"moe_router_activation_func='softmax' is not supported.*'sigmoid'"):
        read_layout(Cfg(cfg))
    cfg["kimi_linear_semantics"] = "engine"             # vLLM's FusedMoE takes either scoring function
    read_layout(Cfg(cfg))


def test_fp8_cache_needs_sm89_unit():
    from vllm_kimilinear.mla.backend import check_fp8_cache_support

    for dtype in ("fp8", "fp8_e4m3"):
        with pytest.raises(ValueError, match=rf"'{dtype}' needs a GPU of compute capability 8.9 .* is 8\.0"):
            check_fp8_cache_support(dtype, (8, 0))
        for cap in ((8, 9), (9, 0), (10, 0), None):
            check_fp8_cache_support(dtype, cap)
    check_fp8_cache_support("auto", (8, 0))
    check_fp8_cache_support("bfloat16", (7, 5))


def test_kda_chunk_setting_unit(monkeypatch):
    from vllm_kimilinear.kda.dispatch import CHUNK_ENV, prefill_chunk
    monkeypatch.delenv(CHUNK_ENV, raising=False)
    assert prefill_chunk() is None
    monkeypatch.setenv(CHUNK_ENV, "auto")
    assert prefill_chunk() is None
    monkeypatch.setenv(CHUNK_ENV, "16")
    assert prefill_chunk() == 16
    monkeypatch.setenv(CHUNK_ENV, "64")
    assert prefill_chunk() == 64
    monkeypatch.setenv(CHUNK_ENV, "32")
    with pytest.raises(ValueError, match=r"VLLM_KIMILINEAR_KDA_CHUNK='32': allowed values are auto \(the default"
                                         r".*\), 16 and 64"):
        prefill_chunk()


@pytest.mark.slow
@pytest.mark.parametrize("case", ["no_linear_attn_config", "both_kinds", "head_size", "missing_tensor", "kda_chunk"])
def test_bad_input_fails_at_load_with_clear_message(case, tmp_path):
    env = {}
    if case == "no_linear_attn_config":
        d, msg = edited_model(tmp_path, lambda c: c.pop("linear_attn_config")), "has no `linear_attn_config`"
    elif case == "both_kinds":
        d = edited_model(tmp_path, lambda c: c["linear_attn_config"].update(kda_layers=[1, 2, 3, 4]))
        msg = "are listed as both KDA"
    elif case == "head_size":
        d = edited_model(tmp_path, lambda c: c["linear_attn_config"].update(head_dim=96))
        msg = "KDA head size 96"
    elif case == "kda_chunk":
        d, msg = edited_model(tmp_path, lambda c: None), "VLLM_KIMILINEAR_KDA_CHUNK='32': allowed values"
        env = {"VLLM_KIMILINEAR_KDA_CHUNK": "32"}
    else:
        d = edited_model(tmp_path, lambda c: None, drop=("model.layers.1.self_attn.A_log",))
        msg = "model.layers.1.self_attn.A_log"
    out = load_in_subprocess(d, **env)
    assert msg in out, out[-4000:]
    assert "LOAD-ERROR:" in out


def test_other_vllm_version_fails_at_load_naming_both_versions(tiny_dir):
    """register() must not raise (vLLM runs it for every model); serving Kimi-Linear fails at load instead."""
    out = load_in_subprocess(tiny_dir, FAKE_VLLM_VERSION="0.27.0")
    assert "LOAD-ERROR: RuntimeError vllm-kimilinear cannot serve KimiLinearForCausalLM" in out
    assert "supports vLLM 0.26.x only, but vLLM 0.27.0 is installed" in out
