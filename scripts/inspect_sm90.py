"""Compile the project's Triton kernels for an H100 (sm_90a) without a GPU and report what ptxas made of them.

For each kernel variant: registers per thread, spill bytes, shared memory, and counts of the instructions
that matter here (wgmma / mma.sync tensor-core products, cp.async and TMA bulk copies, local-memory
traffic). A development aid for choosing designs between GPU sessions; numbers are static, not timings.

    python scripts/inspect_sm90.py [mla|mla-gluon|kda-prefill|kda-decode ...]
"""

import os
import re
import subprocess
import sys
import tempfile

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PTXAS = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "ptxas")
TARGET = GPUTarget("cuda", 90, 32)
SMEM_LIMIT = 227 * 1024      # bytes of shared memory one block may use on an H100


def compile_kernel(fn, ptrs, const, floats=(), div16=(), **options):
    """AOT-compile ``fn``: pointer args typed by ``ptrs``, constexprs by ``const``, the rest i32 (or fp32)."""
    sig = {a: ptrs.get(a, "constexpr" if a in const else "fp32" if a in floats else "i32") for a in fn.arg_names}
    attrs = {(fn.arg_names.index(a),): [["tt.divisibility", 16]] for a in list(ptrs) + list(div16)
             if a in fn.arg_names}
    return triton.compile(ASTSource(fn, sig, constexprs=const, attrs=attrs), target=TARGET, options=options)


def ptxas_info(ptx: str) -> str:
    """What ``ptxas -v`` says of a kernel's PTX for sm_90a: registers, spills, and its performance warnings."""
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "k.ptx")
        with open(path, "w") as f:
            f.write(ptx)
        r = subprocess.run([PTXAS, "-arch=sm_90a", "-v", path, "-o", os.path.join(d, "k.o")], capture_output=True,
                           text=True)
    return r.stderr


def wgmma_serialized(info: str) -> bool:
    """Whether ptxas serialised a kernel's wgmma (its warnings "wgmma.mma_async instructions are serialized due to
    ...", e.g. C7511 and C7512, both seen here): it then waits for each wgmma to finish before issuing the next one,
    in every warp partition of the kernel, which can cost more than the change that caused it (a 2026-12-02 scratch
    variant of the fp8 MLA decode that ran out of registers in one partition was 16-22% slower for it;
    benchmarks/RESULTS.md)."""
    return "wgmma.mma_async instructions are serialized" in info


def report(label, k):
    ptx = k.asm["ptx"]
    info = ptxas_info(ptx)
    regs = re.search(r"Used (\d+) registers", info)
    spill = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", info)
    counts = {name: len(re.findall(pat, ptx)) for name, pat in [
        ("wgmma", r"wgmma\.mma_async"), ("mma.sync", r"\bmma\.sync"), ("cp.async", r"cp\.async\.c"),
        ("tma", r"cp\.async\.bulk"), ("ld.local", r"ld\.local"), ("ld.global", r"ld\.global"),
        ("f64 ops", r"\.f64\b")]}
    counts["loop relayouts"] = loop_relayouts(k.asm["ttgir"])
    counts["wgmma serialized"] = int(wgmma_serialized(info))
    smem = k.metadata.shared
    too_big = " (over the 227 KiB an H100 block can have: will not launch)" if smem > SMEM_LIMIT else ""
    print(f"{label:60s} regs {regs.group(1) if regs else '?':>4}  spill st/ld "
          f"{spill.group(1) + '/' + spill.group(2) if spill else '?':>9}  smem {smem:>6}{too_big}  " +
          "  ".join(f"{n} {c}" for n, c in counts.items()), flush=True)


def loop_relayouts(ttgir: str) -> int:
    """Layout conversions of 2-D or larger tiles inside loops (in Triton's GPU IR): each usually moves the tile
    through shared memory with barriers, every iteration. (The diagonal KDA kernel's column walk had one of a
    [16, 128] fp32 tile per step until its key column was loaded as a tile.)"""
    n, depth = 0, 0
    for line in ttgir.splitlines():
        s = line.strip()
        if "scf.for" in s:
            depth += 1
        elif s.startswith("scf.yield") and depth:
            depth -= 1
        elif depth and "ttg.convert_layout" in s and re.search(r"tensor<\d+x\d+", s.split("->")[0]):
            n += 1
    return n


def mla():
    from kernels.mla.triton_decode import _mla_decode_split
    ptrs = dict(q_lat_ptr="*bf16", q_pe_ptr="*bf16", kv_ptr="*bf16", bt_ptr="*i32", seq_lens_ptr="*i32",
                k_scale_ptr="*fp32", acc_ptr="*fp32", ml_ptr="*fp32", o_ptr="*bf16", lse_ptr="*fp32")
    div16 = ("s_ql_n", "s_ql_h", "s_qp_n", "s_qp_h", "s_kv_blk", "s_kv_row", "s_o_n", "s_o_h", "num_heads")
    for kv in ("bf16", "fp8e4nv"):
        for bn, nw, ns, page_loop, prefetch, tar in [
                (32, 4, 3, True, False, False), (32, 4, 3, False, False, False),   # the 16-bit default (2 an SM)
                (32, 8, 2, False, False, False), (32, 8, 2, False, True, False), (32, 8, 3, True, False, False),
                (32, 8, 4, True, False, False), (16, 8, 4, True, False, False), (32, 8, 2, True, True, False),
                (16, 8, 2, True, True, False), (64, 8, 2, True, False, True), (64, 8, 2, True, True, True)]:
            const = dict(L=512, R=64, BLOCK_L=512, BLOCK_R=64, BLOCK_SIZE=1888 if page_loop else 64, BLOCK_H=32,
                         BLOCK_N=bn, IS_FP8=kv != "bf16", DIRECT=False, DOT_PRECISION="tf32", PAGE_LOOP=page_loop,
                         PREFETCH=prefetch, TOKENS_AS_ROWS=tar, F16_MATH=kv != "bf16", TMA=False, desc_c=None,
                         desc_r=None)
            k = compile_kernel(_mla_decode_split, dict(ptrs, kv_ptr="*" + kv), const, floats=("qk_scale_log2",),
                               div16=div16, num_warps=nw, num_stages=ns)
            report(f"mla {kv} block_n {bn} w {nw} stages {ns} page_loop {page_loop} prefetch {prefetch} "
                   f"tokens_as_rows {tar}", k)
    for kv, bn, nw, ns in [("fp8e4nv", 64, 8, 2), ("fp8e4nv", 32, 8, 3), ("fp8e4nv", 32, 8, 4), ("bf16", 32, 8, 3)]:
        const = dict(L=512, R=64, BLOCK_L=512, BLOCK_R=64, BLOCK_SIZE=1888, BLOCK_H=32, BLOCK_N=bn,
                     IS_FP8=kv != "bf16", DIRECT=False, DOT_PRECISION="tf32", PAGE_LOOP=True, PREFETCH=False,
                     TOKENS_AS_ROWS=False, F16_MATH=kv != "bf16", TMA=True)
        descs = dict(desc_c=f"tensordesc<{kv}[1, {bn}, 512]>", desc_r=f"tensordesc<{kv}[1, {bn}, 64]>")
        k = compile_kernel(_mla_decode_split, dict(ptrs, kv_ptr="*" + kv, **descs), const, floats=("qk_scale_log2",),
                           div16=div16, num_warps=nw, num_stages=ns)
        report(f"mla {kv} TMA tiles, block_n {bn} w {nw} stages {ns}", k)
    from kernels.mla.triton_decode import _mla_decode_combine
    k = compile_kernel(_mla_decode_combine, dict(acc_ptr="*fp32", ml_ptr="*fp32", o_ptr="*bf16", lse_ptr="*fp32"),
                       dict(L=512, BLOCK_L=32, BLOCK_S=256), num_warps=4)
    report("mla combine (up to 256 splits at once, 32 columns a program)", k)


def mla_gluon():
    """The Hopper MLA decode in Gluon (kernels/mla/wgmma_decode.py): bf16 and fp8 caches, 32 and 16 heads a program."""
    import torch
    from triton.experimental.gluon._runtime import GluonASTSource
    from triton.runtime.jit import mangle_type

    from kernels.mla import wgmma_decode as W
    f8 = torch.float8_e4m3fn
    # the last field: the register kernel's queries in e4m3 (its default)
    for kv_dt, bh, direct, regs, q8 in [(torch.bfloat16, 32, False, False, False),
                                        (torch.bfloat16, 16, False, False, False), (f8, 32, False, False, False),
                                        (f8, 32, False, True, True), (f8, 16, True, True, True),
                                        (f8, 32, False, True, False), (torch.bfloat16, 32, True, False, False)]:
        dc, dr = W.cache_descriptors(torch.zeros(2, 1888, 576, dtype=kv_dt), 512)
        fp8 = kv_dt == f8
        fn, setting = W.kernel_and_setting(fp8, regs, q8)
        ptrs = dict(q_lat_ptr="*bf16", q_pe_ptr="*bf16", bt_ptr="*i32", seq_lens_ptr="*i32", k_scale_ptr="*fp32",
                    acc_ptr="*fp32", ml_ptr="*fp32", o_ptr="*bf16", lse_ptr="*fp32", desc_c=mangle_type(dc),
                    desc_r=mangle_type(dr))
        const = dict(L=512, R=64, BLOCK_SIZE=1888, BLOCK_H=bh, BLOCK_N=W.BLOCK_N, DIRECT=direct, num_warps=4,
                     **setting)
        sig = {a: ptrs.get(a, "constexpr" if a in const else "fp32" if a == "qk_scale_log2" else "i32")
               for a in fn.arg_names}
        k = triton.compile(GluonASTSource(fn, sig, constexprs=const), target=TARGET, options=dict(num_warps=4))
        queries = (" e4m3 queries" if q8 else " 16-bit queries") if regs else ""
        report(f"mla gluon {str(kv_dt)[6:]}{' registers' if regs else ''}{queries} heads {bh} "
               f"{'direct' if direct else 'split'}", k)


def kda_prefill():
    from kernels.kda.triton_chunk import BC, BT, _chunk_diag_kernel, _chunk_inter_kernel, _chunk_intra_kernel
    bf, f32 = "*bf16", "*fp32"
    div16 = ("s_qt", "s_qh", "s_kt", "s_kh", "s_vt", "s_vh", "s_gt", "s_gh", "s_ot", "s_oh", "s_ss", "s_sh", "s_sv")
    ptrs = dict(q_ptr=bf, k_ptr=bf, v_ptr=bf, g_ptr=bf, beta_ptr=f32, alog_ptr=f32, dtb_ptr=f32, cu_ptr="*i32",
                slot_ptr="*i32", chunk_seq_ptr="*i32", chunk_off_ptr="*i32", w_ptr=bf, u_ptr=f32, qg_ptr=bf,
                kg_ptr=bf, aqk_ptr=f32, gl_ptr=f32, ek_ptr="*fp16", rn_ptr=f32, dd_ptr=f32, o_ptr=bf,
                state_ptr=f32, init_ptr="*i1", lb_ptr="*i32", start_ptr="*i32", flag_ptr="*i32",
                ticket_ptr="*i32")
    for bt, form, name, bkd, nw in ((BT, 0, "walk", 128, 4), (BT, 1, "product", 128, 4), (BT, 3, "reference", 128, 4),
                                    (BT, 3, "reference", 64, 4), (BT, 3, "reference", 32, 4),
                                    (BT, 3, "reference", 32, 2), (BT, 3, "reference", 16, 2),
                                    (BC, 3, "reference", 32, 2), (BC, 0, "walk", 128, 4),
                                    (BC, 3, "reference, early out", 32, 2), (BC, 3, "reference, early out", 32, 1),
                                    (BC, 3, "reference, early out, balanced", 32, 1),
                                    (BC, 4, "halves, early out", 32, 1), (BC, 4, "halves, early out", 32, 2),
                                    (BC, 4, "halves, early out, fallback", 32, 1),
                                    (BC, 3, "reference, early out, balanced, bounds", 32, 1)):
        k = compile_kernel(_chunk_diag_kernel, dict(ptrs, done_ptr="*i8"),
                           dict(H=32, K=128, BT=bt, BC=BC, FORM=form, RANGE=96.0, PREC="tf32",
                                SKIP_DONE=form in (0, 1) or "fallback" in name, BKD=bkd, EARLY_OUT="early" in name,
                                BALANCED="balanced" in name, BOUND="bounds" in name), div16=div16, num_warps=nw)
        report(f"kda diag kernel, {bt}-token chunks ({name}, key slices {bkd}, {nw} warps)", k)
    for bk, nw in [(16, 4), (16, 8), (32, 4)]:
        const = dict(H=32, K=128, V=128, BT=BT, BC=BC, BK=bk, BVI=32, PREC_A="tf32", PREC_M="tf32", PREC_O="tf32")
        k = compile_kernel(_chunk_intra_kernel, ptrs, const, floats=("scale",), div16=div16, num_warps=nw,
                           num_stages=3)
        report(f"kda intra BK {bk} warps {nw}", k)
    from kernels.kda.triton_chunk import _chunk16_kernel
    for nw, bvi in ((4, 64), (4, 32), (4, 128), (8, 64)):
        const = dict(H=32, K=128, V=128, BC=BC, BVI=bvi, PREC_M="tf32", PREC_O="tf32")
        report(f"kda 16-token chunk kernel, {nw} warps, U {bvi} columns at a time",
               compile_kernel(_chunk16_kernel, ptrs, const, floats=("scale",), div16=div16, num_warps=nw))
    import triton.language as tl
    for form, bv, nw, ns, seg, role in [(1, 32, 2, 3, 1, 0), (1, 64, 4, 3, 1, 0), (3, 16, 2, 4, 1, 0),
                                        (3, 16, 2, 3, 1, 0), (3, 16, 4, 3, 1, 0), (3, 32, 2, 3, 1, 0),
                                        (3, 32, 4, 3, 1, 0), (3, 64, 4, 3, 1, 0), (3, 64, 8, 3, 1, 0),
                                        (3, 16, 2, 4, 4, 1), (3, 64, 4, 3, 4, 2), (3, 32, 4, 3, 4, 2)]:
        const = dict(H=32, K=128, V=128, BT=BC, BV=bv, DOT_DT=tl.bfloat16, AV_DT=tl.float32, PREC="tf32", FORM=form,
                     SEG=seg, ROLE=role)
        roles = {0: "", 1: f", plain beside {seg} segments", 2: f", {seg} segments"}
        name = {1: "rows", 3: "pairs"}[form] + roles[role]
        report(f"kda inter {name} bf16/fp32, 16-token chunks, BV {bv} warps {nw} stages {ns}",
               compile_kernel(_chunk_inter_kernel, ptrs, const, div16=div16, num_warps=nw, num_stages=ns))
    for form in ("cols", "rows", "cols_kmajor"):
        for dot, av in [("fp32", "fp32"), ("bf16", "fp32"), ("bf16", "bf16")]:
            for bv, nw in [(32, 4), (64, 8), (16, 4)]:
                dts = {"fp32": tl.float32, "bf16": tl.bfloat16}
                const = dict(H=32, K=128, V=128, BT=BT, BV=bv, DOT_DT=dts[dot], AV_DT=dts[av], PREC="tf32",
                             FORM={"cols": 0, "rows": 1, "cols_kmajor": 2}[form], SEG=1, ROLE=0)
                try:
                    k = compile_kernel(_chunk_inter_kernel, ptrs, const, div16=div16, num_warps=nw, num_stages=2)
                    report(f"kda inter {form} {dot}/{av} BV {bv} warps {nw}", k)
                except Exception as e:     # noqa: BLE001
                    print(f"kda inter {form} {dot}/{av} BV {bv}: "
                          f"{type(e).__name__}: {str(e)[:300]}")


def kda_decode():
    from kernels.kda.triton_conv import _short_conv_decode_kernel
    k = compile_kernel(_short_conv_decode_kernel, dict(x_ptr="*bf16", w_ptr="*bf16", state_ptr="*bf16", slot_ptr="*i32",
                                                       init_ptr="*i1", y_ptr="*bf16"),
                       dict(W=4, BD=256, HAS_INIT=True), num_warps=4)
    report("kda short-conv decode step (BD 256)", k)
    from kernels.kda.triton_decode import _decode_kernel
    ptrs = dict(q_ptr="*bf16", k_ptr="*bf16", v_ptr="*bf16", g_ptr="*bf16", beta_ptr="*fp32", alog_ptr="*fp32",
                dtb_ptr="*fp32", state_ptr="*fp32", slot_ptr="*i32", init_ptr="*i1", o_ptr="*bf16")
    for bv, nw in [(8, 1), (32, 4)]:
        k = compile_kernel(_decode_kernel, ptrs, dict(H=32, K=128, V=128, BV=bv, HAS_INIT=True), floats=("scale",),
                           num_warps=nw)
        report(f"kda decode BV {bv} warps {nw}", k)


if __name__ == "__main__":
    import argparse
    parts = {"mla": mla, "mla-gluon": mla_gluon, "kda-prefill": kda_prefill, "kda-decode": kda_decode}
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("which", nargs="*", help=f"kernels to compile, of {list(parts)} (default: all)")
    which = ap.parse_args().which or list(parts)
    for w in which:
        if w not in parts:
            ap.error(f"unknown kernel {w!r}; choose from {list(parts)}")
    for w in which:
        parts[w]()
