"""GPU time per CUDA kernel name under torch.profiler, shared by the benchmark scripts."""

import collections

import torch
from torch.profiler import ProfilerActivity, profile


def gpu_time_by_kernel(fn, name_width=90) -> dict[str, list]:
    """Run ``fn()`` once under the profiler; {kernel name (cut to ``name_width``): [total ms, launches]}."""
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    per = collections.defaultdict(lambda: [0.0, 0])
    for e in prof.events():
        if e.device_type == torch.autograd.DeviceType.CUDA:
            per[e.name[:name_width]][0] += e.device_time_total / 1e3
            per[e.name[:name_width]][1] += 1
    return per
