"""`vllm serve` with the tiny model and recipes/cpu-tiny.yaml on 127.0.0.1: completions, chat completions and
streaming answer.

The server runs as a user would start it (engine in its own processes, torch.compile on), is stopped by
its PID, and leaves no process behind.
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import time

import psutil
import pytest
import requests


RECIPE = os.path.join(os.path.dirname(__file__), "..", "recipes", "cpu-tiny.yaml")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(tiny_dir, tmp_path):
    port = free_port()
    vllm_bin = shutil.which("vllm", path=os.path.dirname(sys.executable)) or "vllm"
    log = open(tmp_path / "serve.log", "w")
    env = dict(os.environ, VLLM_ENABLE_V1_MULTIPROCESSING="1")
    # as recipes/cpu-tiny.yaml says to run it (its host, dtype and memory settings), on a free port
    proc = subprocess.Popen([vllm_bin, "serve", tiny_dir, "--config", RECIPE, "--served-model-name", "tiny",
                             "--port", str(port), "--max-model-len", "512", "--max-num-seqs", "4"],
                            stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 400
    while time.time() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"server exited early:\n{(tmp_path / 'serve.log').read_text()[-4000:]}")
        try:
            if requests.get(base + "/health", timeout=2).status_code == 200:
                break
        except requests.ConnectionError:
            pass
        time.sleep(1)
    else:
        proc.kill()
        pytest.fail("server did not become healthy in 400 s")
    server_proc = psutil.Process(proc.pid)
    family = [server_proc] + server_proc.children(recursive=True)
    yield base, tmp_path / "serve.log"
    proc.terminate()
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=30)
    gone, alive = psutil.wait_procs([p for p in family if p.is_running()], timeout=30)
    assert not alive, f"processes left behind: {alive}"


@pytest.mark.slow
def test_serve_completions_chat_and_streaming(server):
    base, log = server
    r = requests.post(base + "/v1/completions", json={"model": "tiny", "prompt": "Hello, my name is",
                                                      "max_tokens": 8, "temperature": 0}, timeout=60)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["usage"]["completion_tokens"] == 8 and body["choices"][0]["finish_reason"] == "length"

    r = requests.post(base + "/v1/chat/completions", json={
        "model": "tiny", "messages": [{"role": "user", "content": "What is the capital of France?"}],
        "max_tokens": 6, "temperature": 0}, timeout=60)
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["completion_tokens"] == 6

    r = requests.post(base + "/v1/completions", json={"model": "tiny", "prompt": "One two", "max_tokens": 5,
                                                      "temperature": 0, "stream": True}, stream=True, timeout=60)
    chunks = [json.loads(line[6:]) for line in r.iter_lines(decode_unicode=True)
              if line.startswith("data: ") and line != "data: [DONE]"]
    assert sum(len(c["choices"]) for c in chunks) == 5
    text = "".join(c["choices"][0]["text"] for c in chunks)
    r = requests.post(base + "/v1/completions", json={"model": "tiny", "prompt": "One two", "max_tokens": 5,
                                                      "temperature": 0}, timeout=60)
    assert r.json()["choices"][0]["text"] == text, "streamed and non-streamed greedy text differ"
    assert "vllm-kimilinear" in log.read_text() and "is active" in log.read_text()
