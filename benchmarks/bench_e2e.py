"""End to end on a GPU: the plugin's Kimi-Linear against vLLM 0.26's in-tree one, same workloads, one command.

Each side runs in its own engine process (the in-tree side with VLLM_PLUGINS= empty, which switches the
plugin off), one after the other on the same GPU, on a Kimi-Linear-48B-A3B-shaped model cut to LAYERS
layers (real widths, 3:1 KDA:MLA, 256 experts; dummy weights, bf16, CUDA graphs on). Prints one table, with
the number of Triton kernel variants each side's processes built or loaded during each timed run (logged by
``compile_log/sitecustomize.py``; any such variant is a mid-serving stall, and their names follow the table).

    python benchmarks/bench_e2e.py [--layers 8] [--sides plugin,intree] [--quick] [--kv-cache-dtype fp8] [--profile]
                                   [--full-warmup] [--cprofile] [--kda-chunk 16]
"""

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
WORKLOADS = [("prefill 16x8192 -> 16", 16, 8192, 16), ("decode 128x256 -> 512", 128, 256, 512),
             ("mixed 64x2048 -> 256", 64, 2048, 256), ("long 1x131072 -> 64", 1, 131072, 64)]
QUICK = [("prefill 8x8192 -> 16", 8, 8192, 16), ("decode 64x256 -> 256", 64, 256, 256),
         ("mixed 32x2048 -> 128", 32, 2048, 128)]


def kv_report(model) -> dict:
    """What vLLM allocated for the MLA layers (latent rows) and KDA layers, read from the layers' own caches."""
    import torch
    mla, kda = [], []
    for name, mod in model.named_modules():
        kv = getattr(mod, "kv_cache", None)
        if isinstance(kv, (list, tuple)) and len(kv) == 1:
            kv = kv[0]
        if isinstance(kv, torch.Tensor) and kv.numel() > 0 and kv.dim() == 3:
            mla.append((name, list(kv.shape), str(kv.dtype), kv.element_size()))
        elif isinstance(kv, (list, tuple)) and len(kv) == 2 and all(isinstance(t, torch.Tensor) for t in kv):
            kda.append(sum(t.numel() * t.element_size() for t in kv))
    if not mla:
        return {"mla_layers": 0, "kda_layers": len(kda)}
    _, shape, dtype, esize = mla[0]
    tokens = shape[0] * shape[1]
    per_tok = shape[2] * esize
    return {"mla_layers": len(mla), "kda_layers": len(kda), "mla_cache_shape": shape, "mla_cache_dtype": dtype,
            "block_size": shape[1], "capacity_tokens": tokens, "bytes_per_token_per_mla_layer": per_tok,
            "gib_1m_tokens_7_mla_layers": round(7 * per_tok * 1048576 / 2**30, 3)}


def worker(args) -> None:
    sys.path.insert(0, HERE)
    from kimi_config import kimi_config

    d = f"/tmp/kimi{args.layers}"
    os.makedirs(d, exist_ok=True)
    with open(f"{d}/config.json", "w") as f:
        json.dump(kimi_config(args.layers), f)
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    work = QUICK if args.quick else WORKLOADS
    max_len = max(p + o for _, _, p, o in work) + 16
    t0 = time.time()
    llm = LLM(model=d, load_format="dummy", skip_tokenizer_init=True, max_model_len=max_len,
              gpu_memory_utilization=0.88, max_num_seqs=128, max_num_batched_tokens=16384,
              kv_cache_dtype=args.kv_cache_dtype)
    cls = llm.apply_model(lambda m: f"{type(m).__module__}.{type(m).__name__}")[0]
    print("RESULT " + json.dumps({"load_s": round(time.time() - t0, 1), "model_class": cls}), flush=True)
    try:
        print("RESULT " + json.dumps({"kv": llm.apply_model(kv_report)[0]}), flush=True)
    except Exception as e:          # noqa: BLE001 - the report must not cost the workloads
        print("RESULT " + json.dumps({"kv": f"not read: {type(e).__name__}: {e}"}), flush=True)
    rng = random.Random(0)

    def prompts(n, plen):
        return [TokensPrompt(prompt_token_ids=[rng.randrange(1000, 150000) for _ in range(plen)]) for _ in range(n)]

    for name, n, plen, olen in work:
        sp = SamplingParams(max_tokens=olen, ignore_eos=True, temperature=0.0, detokenize=False)
        if args.full_warmup:             # the same shapes once untimed: no kernel compiles in the timed run
            llm.generate(prompts(n, plen), sp, use_tqdm=False)
        else:                            # the anchor's warm-up (shared/gpu/bench_intree.py)
            llm.generate(prompts(min(n, 4), min(plen, 4096)), sp, use_tqdm=False)
        ps = prompts(n, plen)
        t = time.time()
        if args.cprofile:
            outs = cprofile_generate(llm, ps, sp, name)
        else:
            outs = llm.generate(ps, sp, use_tqdm=False)
        dt = time.time() - t
        gen = sum(len(o.outputs[0].token_ids) for o in outs)
        built = variants_built(t, t + dt)
        print("RESULT " + json.dumps({"workload": name, "time_s": round(dt, 3), "out_tok_s": round(gen / dt, 1),
                                      "total_tok_s": round((gen + n * plen) / dt, 1), "variants_built": len(built),
                                      "variants": built[:8]}), flush=True)
        if args.profile:                 # the same workload again, under the profiler (not the timed run)
            print("RESULT " + json.dumps({"profile": name, **profile_generate(llm, prompts(n, plen), sp)}),
                  flush=True)


def variants_built(t0: float, t1: float) -> list[str]:
    """The Triton kernel variants any process of this worker built or loaded between t0 and t1 (from the log that
    ``compile_log/sitecustomize.py`` writes), as 'kernel: specialisation' strings."""
    path = os.environ.get("KIMI_COMPILE_LOG")
    if not path or not os.path.exists(path):
        return []
    out = []
    with open(path) as f:
        for line in f:
            when, _, kernel, desc = line.rstrip("\n").split("\t", 3)
            if t0 <= float(when) <= t1:
                out.append(f"{kernel}: {desc[:300]}")
    return out


def cprofile_generate(llm, ps, sp, name, top=40):
    """The timed generate under cProfile (the engine runs in this process): prints the functions with the most
    cumulative host time, to find what a first run of a new shape spends its time on."""
    import cProfile
    import pstats

    prof = cProfile.Profile()
    outs = prof.runcall(llm.generate, ps, sp, use_tqdm=False)
    st = pstats.Stats(prof)
    label = lambda f, line, fn: f"{os.path.basename(f)}:{line}:{fn}"[-90:]  # noqa: E731
    cum = sorted(st.stats.items(), key=lambda kv: -kv[1][3])[:top]
    own = sorted(st.stats.items(), key=lambda kv: -kv[1][2])[:15]
    print("RESULT " + json.dumps({"cprofile": name,
                                  "top_cumulative_s": [[label(*k), round(v[3], 3), v[1]] for k, v in cum],
                                  "top_self_s": [[label(*k), round(v[2], 3), v[1]] for k, v in own]}), flush=True)
    return outs


def profile_generate(llm, ps, sp, top=20) -> dict:
    """GPU time per kernel name over one generate call (the engine runs in this process: see --profile), the
    total GPU kernel time and the wall time; their difference is time the GPU spent waiting on the host."""
    from profiling import gpu_time_by_kernel

    t = time.time()
    per = gpu_time_by_kernel(lambda: llm.generate(ps, sp, use_tqdm=False))
    wall = time.time() - t
    gpu = sum(ms for ms, _ in per.values())
    rows = sorted(per.items(), key=lambda kv: -kv[1][0])[:top]
    return {"wall_ms": round(wall * 1e3, 1), "gpu_kernel_ms": round(gpu, 1),
            "top": [[name, round(ms, 2), cnt] for name, (ms, cnt) in rows]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--sides", default="plugin,intree")
    ap.add_argument("--quick", action="store_true", help="smaller workloads (fits a 10-minute GPU call)")
    ap.add_argument("--kv-cache-dtype", default="auto", help="vLLM's --kv-cache-dtype (auto or fp8), both sides")
    ap.add_argument("--profile", action="store_true",
                    help="after each timed workload, run it again under torch.profiler (engine in-process) and "
                         "print the GPU time per kernel")
    ap.add_argument("--full-warmup", action="store_true",
                    help="warm each workload up with itself (default: 4 prompts of at most 4096 tokens, as the "
                         "anchor measurements did), so that Triton compiles for new shapes fall outside the timing")
    ap.add_argument("--cprofile", action="store_true",
                    help="run each timed workload under cProfile (engine in-process; times include its overhead) "
                         "and print the functions with the most cumulative host time")
    ap.add_argument("--kda-chunk", choices=["auto", "16", "64"],
                    help="the plugin's KDA prefill chunk (VLLM_KIMILINEAR_KDA_CHUNK; default: auto, the kernels' "
                    "default, 16-token chunks)")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args)
    import torch
    if not torch.cuda.is_available():
        sys.exit("bench_e2e.py needs a CUDA GPU (none is visible here)")

    results, failed = {}, []
    for side in args.sides.split(","):
        # every workload decodes greedily, which uses no sampler kernel; with FlashInfer's sampler on, vLLM's
        # warm-up builds its JIT module once per machine (over 4 minutes on a fresh H200, 2026-11-30), which
        # would otherwise land in the start-up time of whichever side runs first
        env = dict({"VLLM_USE_FLASHINFER_SAMPLER": "0"}, **os.environ)
        env.update(VLLM_ALLOW_INSECURE_SERIALIZATION="1",
                   KIMI_COMPILE_LOG=os.path.join(tempfile.mkdtemp(), "triton-variants.log"),
                   PYTHONPATH=os.pathsep.join([os.path.join(HERE, "compile_log")] +
                                              [x for x in [os.environ.get("PYTHONPATH")] if x]))
        if args.profile or args.cprofile:
            env["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"        # the profilers see the engine's work
        if side == "intree":
            env["VLLM_PLUGINS"] = ""
        elif args.kda_chunk:
            env["VLLM_KIMILINEAR_KDA_CHUNK"] = args.kda_chunk
        cmd = [sys.executable, __file__, "--worker", "--layers", str(args.layers),
               "--kv-cache-dtype", args.kv_cache_dtype] + (["--quick"] if args.quick else []) + \
            (["--profile"] if args.profile else []) + (["--full-warmup"] if args.full_warmup else []) + \
            (["--cprofile"] if args.cprofile else [])
        t = time.time()
        rows = []
        # the worker's results are echoed as they come, so that a run cut off by a time limit still shows them
        with subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as p:
            err = []
            drain = threading.Thread(target=lambda: err.extend(p.stderr), daemon=True)
            drain.start()
            for line in p.stdout:
                if line.startswith("RESULT "):
                    rows.append(json.loads(line[7:]))
                    print(f"[{side} {time.time() - t:.0f} s] {line[7:].strip()}", flush=True)
            p.wait()
            drain.join()
        if p.returncode != 0:
            failed.append(side)
            print(f"[{side}] failed (rc={p.returncode}) after {time.time() - t:.0f} s:\n{''.join(err)[-3000:]}",
                  flush=True)
        results[side] = rows
        print(f"[{side}] {[r for r in rows if not {'workload', 'profile', 'cprofile'} & r.keys()]}", flush=True)
    print(f"\nGPU: {torch.cuda.get_device_name()}  layers: {args.layers}  date: {time.strftime('%Y-%m-%d')}")
    names = [r["workload"] for rows in results.values() for r in rows if "workload" in r]
    names = list(dict.fromkeys(names))
    print("| workload | " + " | ".join(f"{s} time s | {s} out tok/s | {s} total tok/s | {s} Triton variants built"
                                      for s in results) + " | plugin/intree |")
    print("|---|" + "---|---|---|---|" * len(results) + "---|")
    for name in names:
        cells, times = [], {}
        for side, rows in results.items():
            r = next((r for r in rows if r.get("workload") == name), None)
            cells += [f"{r['time_s']:.2f}", f"{r['out_tok_s']:.0f}", f"{r['total_tok_s']:.0f}",
                      str(r.get("variants_built", "n/a"))] if r else ["n/a"] * 4
            if r:
                times[side] = r["time_s"]
        ratio = f"{times['intree'] / times['plugin']:.2f}x" if {"plugin", "intree"} <= times.keys() else "n/a"
        print(f"| {name} | " + " | ".join(cells) + f" | {ratio} |")
    for side, rows in results.items():
        for r in (r for r in rows if r.get("variants")):
            print(f"\n{side}, {r['workload']}: Triton variants built or loaded during the timed run (first 8):")
            for v in r["variants"]:
                print(f"  {v}")
        for r in (r for r in rows if "profile" in r):
            print(f"\n{side}, {r['profile']}: wall {r['wall_ms']} ms, GPU kernels {r['gpu_kernel_ms']} ms")
            print("| kernel | GPU ms | launches |\n|---|---|---|")
            for name, ms, cnt in r["top"]:
                print(f"| `{name}` | {ms} | {cnt} |")
        for r in (r for r in rows if "cprofile" in r):
            print(f"\n{side}, {r['cprofile']} under cProfile (cumulative host s, calls):")
            for fn, cum, calls in r["top_cumulative_s"]:
                print(f"  {cum:9.3f} {calls:8d}  {fn}")
            print(f"{side}, {r['cprofile']}: most self time (host s, calls):")
            for fn, own, calls in r["top_self_s"]:
                print(f"  {own:9.3f} {calls:8d}  {fn}")
    if failed:
        print(f"\nfailed: {failed}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
