#!/usr/bin/env bash
# Sets a CPU machine up, builds a tiny random Kimi-Linear, serves it with `vllm serve` through the
# plugin on 127.0.0.1, asks it one chat question, prints the answer and stops the server.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/setup-cpu.sh
venv="${KIMI_VENV:-$HOME/.cache/vllm-kimilinear/venv}"
model="$HOME/.cache/vllm-kimilinear/tiny-kimi-linear"
port="${PORT:-8011}"
"$venv/bin/python" -m vllm_kimilinear.tiny "$model" >/dev/null
echo "[quickstart] serving a tiny random Kimi-Linear from $model on 127.0.0.1:$port (first start compiles, ~1-2 min)"
log="$(mktemp)"
VLLM_HOST_IP=127.0.0.1 VLLM_CPU_KVCACHE_SPACE=1 "$venv/bin/vllm" serve "$model" --served-model-name tiny-kimi-linear \
  --host 127.0.0.1 --port "$port" --dtype float32 --max-model-len 1024 --gpu-memory-utilization 0.2 >"$log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null' EXIT
for _ in $(seq 600); do
  curl -sf "http://127.0.0.1:$port/health" >/dev/null && break
  kill -0 $pid 2>/dev/null || { tail -40 "$log"; echo "[quickstart] the server exited"; exit 1; }
  sleep 1
done
grep -m1 "vllm-kimilinear" "$log" || true
echo "[quickstart] POST /v1/chat/completions"
curl -s "http://127.0.0.1:$port/v1/chat/completions" -H 'Content-Type: application/json' \
  -d '{"model": "tiny-kimi-linear", "messages": [{"role": "user", "content": "What is the capital of France?"}], "max_tokens": 16, "temperature": 0}' \
  | "$venv/bin/python" -c 'import json,sys; r=json.load(sys.stdin); print("[quickstart] answer (random weights, so gibberish):", repr(r["choices"][0]["message"]["content"])); print("[quickstart] usage:", r["usage"])'
