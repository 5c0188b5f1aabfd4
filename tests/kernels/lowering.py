"""Runs a script that compiles Triton kernels for an H100 (sm_90a, Triton's bundled ptxas; no GPU needed)
in a fresh Python without the interpreter, for the lowering tests."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run_lowering_script(script: str, cache_dir, timeout: int) -> str:
    """Runs ``script`` from the repository root with its own Triton cache; returns its stdout. Skips the test
    when this Triton install has no ptxas; fails it, with the script's stderr, when the script fails."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}   # the interpreter patches tl
    env["TRITON_CACHE_DIR"] = str(cache_dir)
    r = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=timeout)
    if r.returncode != 0 and "ptxas" in r.stderr and "not found" in r.stderr.lower():
        pytest.skip("no ptxas in this triton install")
    assert r.returncode == 0, r.stderr[-4000:]
    return r.stdout
