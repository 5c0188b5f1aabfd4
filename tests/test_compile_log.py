"""bench_e2e.py's count of Triton kernel variants built inside a timed run: the start-up hook that every worker
process loads is installed in a fresh interpreter, accepts the keyword arguments Triton 3.6's JIT passes it, and
the benchmark reads back exactly the variants logged inside a time window."""

import os
import subprocess
import sys
import time

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
HOOK_DIR = os.path.join(ROOT, "benchmarks", "compile_log")

_CHILD = r"""
import time, types
from triton import knobs
hook = knobs.runtime.jit_post_compile_hook
assert hook is not None and hook.__module__ == "sitecustomize", hook
fn = types.SimpleNamespace(module="kernels.mla.triton_decode", name="_mla_decode_split")
for i in range(3):
    # the keywords triton/runtime/jit.py passes (JITFunction._call_hook)
    hook(key=("k", i), repr=f"_mla_decode_split[num_warps=8](N: i32, DIRECT: {bool(i)})", fn=fn,
         compile={"key": i}, is_manual_warmup=False, already_compiled=False)
    time.sleep(0.05)
"""


def test_compile_log_counts_variants_inside_a_window(tmp_path, monkeypatch):
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    from bench_e2e import variants_built

    log = tmp_path / "variants.log"
    env = dict(os.environ, KIMI_COMPILE_LOG=str(log), PYTHONPATH=HOOK_DIR)
    t0 = time.time()
    subprocess.run([sys.executable, "-c", _CHILD], env=env, check=True, timeout=120)
    t1 = time.time()
    lines = log.read_text().splitlines()
    assert len(lines) == 3
    monkeypatch.setenv("KIMI_COMPILE_LOG", str(log))
    built = variants_built(t0, t1)
    assert len(built) == 3 and all(b.startswith("kernels.mla.triton_decode._mla_decode_split: ") for b in built)
    assert "DIRECT: True" in built[1]
    assert variants_built(t1 + 1, t1 + 2) == []              # nothing logged after the window
    first = float(lines[0].split("\t")[0])
    assert len(variants_built(first + 0.01, t1)) == 2         # the window's start is honoured


def test_compile_log_is_inert_without_the_variable():
    env = {k: v for k, v in os.environ.items() if k != "KIMI_COMPILE_LOG"}
    env["PYTHONPATH"] = HOOK_DIR
    out = subprocess.run([sys.executable, "-c", "from triton import knobs; print(knobs.runtime.jit_post_compile_hook)"],
                         env=env, check=True, capture_output=True, text=True, timeout=120).stdout
    assert out.strip() == "None"
