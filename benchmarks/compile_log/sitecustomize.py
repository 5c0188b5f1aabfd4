"""Loaded at start-up by every Python process of a ``bench_e2e.py`` worker (the worker's environment puts this
folder first on PYTHONPATH), the vLLM engine core included, whichever model side it runs. With
``KIMI_COMPILE_LOG`` set, Triton's post-compile hook appends one line per kernel variant the process builds or
loads from the disk cache (time, pid, kernel, launch options and argument specialisation): the benchmark counts
the lines that fall inside a timed run, where each one is a stall that serving would also pay."""

import os
import time

_PATH = os.environ.get("KIMI_COMPILE_LOG")


def _log_variant(*, repr, fn, **_):   # noqa: A002 - Triton passes the description as ``repr``
    with open(_PATH, "a") as f:
        f.write(f"{time.time():.3f}\t{os.getpid()}\t{fn.module}.{fn.name}\t{repr}\n")
    return None


if _PATH:
    try:
        from triton import knobs
    except Exception:  # noqa: BLE001 - a process without Triton builds no kernels
        pass
    else:
        knobs.runtime.jit_post_compile_hook = _log_variant
