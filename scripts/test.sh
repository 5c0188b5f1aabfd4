#!/usr/bin/env bash
# Installs everything (scripts/setup-cpu.sh) and runs the whole test suite on a CPU:
#   1. the Triton kernels under Triton's interpreter (TRITON_INTERPRET=1), in their own process, because
#      the interpreter must be on before Triton compiles anything and vLLM must not see it;
#   2. everything else: torch kernels, the plugin inside vLLM (LLM(), vllm serve, TP=2), references.
# Exit status is non-zero if either part fails.
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/setup-cpu.sh || exit 1
py="${KIMI_VENV:-$HOME/.cache/vllm-kimilinear/venv}/bin/python"
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
export TMPDIR="$scratch" VLLM_RPC_BASE_PATH="$scratch" VLLM_CACHE_ROOT="$scratch/vllm-cache"
export TORCHINDUCTOR_CACHE_DIR="$HOME/.cache/vllm-kimilinear/inductor" VLLM_HOST_IP=127.0.0.1

triton_tests=$(ls tests/kernels/test_*_triton.py tests/kernels/test_*_gluon.py 2>/dev/null)
status=0
if [ -n "$triton_tests" ]; then
  echo "== Triton kernels under the interpreter"
  TRITON_INTERPRET=1 "$py" -m pytest -q -p no:cacheprovider $triton_tests || status=1
fi
echo "== Plugin, references and torch kernels"
"$py" -m pytest -q -p no:cacheprovider tests -W ignore::DeprecationWarning || status=1
exit $status
