"""Every KDA Triton kernel, in the variants the plugin uses or the benchmarks time, compiles for an H100
(sm_90a, Triton's bundled ptxas; no GPU needed) within the shared memory one block may have. Catches what the
interpreter cannot: layouts Triton cannot lower (e.g. a gather of fp64), register allocation failures, wgmma that
ptxas serialises for want of registers."""

from tests.kernels.lowering import run_lowering_script

_LOWER = r"""
import sys
sys.path.insert(0, "scripts")
import triton.language as tl
from inspect_sm90 import SMEM_LIMIT, compile_kernel, ptxas_info, wgmma_serialized
from kernels.kda.triton_chunk import (BC, BT, _FAST, _chunk16_kernel, _chunk_diag_kernel, _chunk_inter_kernel,
                                      _chunk_intra_kernel, _per_chunk, _segment_start_kernel)
from kernels.kda.triton_conv import (_short_conv_decode_kernel, _short_conv_prefill_kernel,
                                     _short_conv_prefill_state_kernel)
from kernels.kda.triton_decode import _decode_kernel, _verify_kernel

bf, f32 = "*bf16", "*fp32"
ptrs = dict(q_ptr=bf, k_ptr=bf, v_ptr=bf, g_ptr=bf, beta_ptr=f32, alog_ptr=f32, dtb_ptr=f32, cu_ptr="*i32",
            slot_ptr="*i32", chunk_seq_ptr="*i32", chunk_off_ptr="*i32", w_ptr=bf, u_ptr=f32, qg_ptr=bf, kg_ptr=bf,
            aqk_ptr=f32, gl_ptr=f32, ek_ptr="*fp16", rn_ptr=f32, dd_ptr=f32, o_ptr=bf, state_ptr=f32, init_ptr="*i1",
            init_slot_ptr="*i32", idx_ptr="*i32", x_ptr=bf, y_ptr=bf, done_ptr="*i8", lb_ptr="*i32",
            start_ptr="*i32", flag_ptr="*i32", ticket_ptr="*i32")
done = []

def check(label, k):
    assert k.asm["cubin"], label
    assert k.metadata.shared <= SMEM_LIMIT, (label, k.metadata.shared)
    assert not wgmma_serialized(ptxas_info(k.asm["ptx"])), label
    done.append(label)

# the diagonal kernel: walk (as the reference form's last launch), product, reference row over the whole key
# width and in 32-column slices (from the middle row or balanced), by halves (the reference form's second launch),
# for 64-token chunks and for the 16-token chunks' launch (BT = BC), on the warps the fast path gives each
for form, bt, bkd, prec, bal in ((0, BT, 128, "tf32", False), (1, BT, 128, "tf32", False), (3, BT, 128, "tf32", False),
                                 (3, BT, 32, "tf32", False), (0, BC, 128, "tf32", False), (3, BC, 128, "tf32", False),
                                 (3, BC, 32, "tf32", False), (3, BC, 32, "ieee", False), (3, BC, 32, "tf32", True),
                                 (3, BC, 128, "ieee", True), (3, BT, 128, "tf32", True), (4, BC, 32, "tf32", True),
                                 (4, BC, 32, "ieee", True)):
    const = dict(H=32, K=128, BT=bt, BC=BC, FORM=form, RANGE=96.0, PREC=prec, SKIP_DONE=form in (0, 1, 4), BKD=bkd,
                 EARLY_OUT=form >= 3 and bt == BC and _FAST["diag_early_out"], BALANCED=bal, BOUND=False)
    nw = _per_chunk(_FAST["diag_warps" if form >= 3 else "fallback_warps"], bt)
    check(f"diag form={form} BT {bt} BKD {bkd} {prec} balanced={bal}",
          compile_kernel(_chunk_diag_kernel, ptrs, const, num_warps=nw))
const = dict(H=32, K=128, BT=BC, BC=BC, FORM=3, RANGE=96.0, PREC="tf32", SKIP_DONE=False, BKD=32, EARLY_OUT=False,
             BALANCED=False, BOUND=False)
check("diag reference, all slices", compile_kernel(_chunk_diag_kernel, ptrs, const, num_warps=_FAST["diag_warps"][BC]))
# the first launch with the segments' state-transfer bounds (inter_segments)
const = dict(const, EARLY_OUT=True, BALANCED=True, BOUND=True)
check("diag reference with bounds", compile_kernel(_chunk_diag_kernel, ptrs, const, num_warps=_FAST["diag_warps"][BC]))
for prec in ("tf32", "ieee"):
    const = dict(H=32, K=128, V=128, BT=BT, BC=BC, BK=16, BVI=32, PREC_A=prec, PREC_M=prec, PREC_O=prec)
    check(f"intra {prec}", compile_kernel(_chunk_intra_kernel, ptrs, const, floats=("scale",),
                                          num_warps=_FAST["intra_warps"], num_stages=_FAST["intra_stages"]))
for prec in ("tf32", "ieee"):
    const = dict(H=32, K=128, V=128, BC=BC, BVI=_FAST["BVI"][BC], PREC_M=prec, PREC_O=prec)
    check(f"chunk16 {prec}", compile_kernel(_chunk16_kernel, ptrs, const, floats=("scale",),
                                            num_warps=_FAST["chunk16_warps"]))
dts = {"fp32": tl.float32, "bf16": tl.bfloat16}
for form, dot, bv, nw in [(0, "fp32", 32, 4), (0, "bf16", 16, 4), (1, "bf16", 64, 8), (2, "bf16", 32, 8)]:
    const = dict(H=32, K=128, V=128, BT=BT, BV=bv, DOT_DT=dts[dot], AV_DT=tl.float32, PREC="tf32", FORM=form, SEG=1,
                 ROLE=0)
    check(f"inter form={form} {dot} BV {bv}", compile_kernel(_chunk_inter_kernel, ptrs, const, num_warps=nw,
                                                             num_stages=2))
# the launches the fast path picks over 16-token chunks (pairs; one long sequence: 16 rows on 2 warps), the exact
# path's (fp32 pairs, 32 rows on 4 warps), and the walk in 4 segments (inter_segments: its plain launch for the
# pairs that do not split, ROLE 1, and the segments' launch, ROLE 2)
for bv, nw, ns, dot, prec, seg, role in ((16, 2, 4, "bf16", "tf32", 1, 0), (64, 4, 3, "bf16", "tf32", 1, 0),
                                         (32, 4, 3, "fp32", "ieee", 1, 0), (16, 2, 4, "bf16", "tf32", 4, 1),
                                         (64, 4, 3, "bf16", "tf32", 4, 2)):
    const = dict(H=32, K=128, V=128, BT=BC, BV=bv, DOT_DT=dts[dot], AV_DT=tl.float32, PREC=prec, FORM=3, SEG=seg,
                 ROLE=role)
    check(f"inter pairs BV {bv} warps {nw} {dot} segments {seg} role {role}",
          compile_kernel(_chunk_inter_kernel, ptrs, const, num_warps=nw, num_stages=ns))
check("segment starts", compile_kernel(_segment_start_kernel, ptrs, dict(H=32, SEG=4, WARM=64), num_warps=1))
check("decode", compile_kernel(_decode_kernel, ptrs, dict(H=32, K=128, V=128, BV=8, HAS_INIT=True),
                               floats=("scale",), num_warps=1))
check("verify", compile_kernel(_verify_kernel, ptrs, dict(H=32, K=128, V=128, BV=8), floats=("scale",),
                               num_warps=1))
check("conv", compile_kernel(_short_conv_decode_kernel, ptrs, dict(W=4, BD=256, HAS_INIT=True), num_warps=4))
check("conv prefill", compile_kernel(_short_conv_prefill_kernel, ptrs, dict(W=4, BT=32, BD=128), num_warps=4))
check("conv prefill state", compile_kernel(_short_conv_prefill_state_kernel, ptrs, dict(W=4, BD=128), num_warps=4))
print("LOWERED", len(done))
"""


def test_kda_kernels_lower_for_sm90(tmp_path):
    assert "LOWERED 34" in run_lowering_script(_LOWER, tmp_path, timeout=1200)
