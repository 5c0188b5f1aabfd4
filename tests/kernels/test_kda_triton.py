"""The Triton KDA kernels (prefill, decode, verify) against the float64 torch math, on fresh random inputs.

On a machine without CUDA these run under Triton's interpreter: set TRITON_INTERPRET=1 before Python
starts (``TRITON_INTERPRET=1 pytest tests/kernels/test_kda_triton.py``). Shapes stay small (H=2,
K=V=32 or 64, at most ~200 tokens) because the interpreter runs each program in Python. Inputs are
fp32 here (the interpreter computes bf16 products wrongly); bf16 is checked on the GPU by
``benchmarks/bench_kda_kernels.py``.
"""

import math
import os
import zlib

import pytest
import torch

if not torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1":
    pytest.skip("no CUDA device and TRITON_INTERPRET=1 not set (set it before Python starts to run the "
                "Triton kernels on the CPU)", allow_module_level=True)

from kernels.kda.chunk import chunk_kda                                    # noqa: E402
from kernels.kda.reference import kda_gate, l2_normalize, recurrent_kda    # noqa: E402
from kernels.kda.triton_chunk import (_FAST, _diag_pairs, _diag_workspace, chunk_kda_prefill,  # noqa: E402
                                      chunk_windows, overlap_window_count)
from kernels.kda.triton_decode import recurrent_kda_decode, recurrent_kda_verify  # noqa: E402
from kernels.kda import triton_chunk                                        # noqa: E402
import triton.language as tl                                                # noqa: E402

DEV = "cuda" if torch.cuda.is_available() else "cpu"
INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
H = 2
TOL = 2e-5          # fp32 kernels vs float64 truth, relative (norm of the difference / norm of the truth)


def rel(a, b):
    a, b = a.double().cpu(), b.double().cpu()
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


def gate_raw(shape, regime, gen):
    """Gate pre-activations: mild ~N(0,1); strong ~N(2,3^2); 'huge' +-1e4 at random (log-decay -1e4*A or ~0
    per step); 'spiky' mild values with 5% of +1e4 (a full reset now and then)."""
    x = torch.randn(shape, generator=gen)
    if regime == "mild":
        return x
    if regime == "strong":
        return 2.0 + 3.0 * x
    if regime == "huge":
        return torch.where(torch.rand(shape, generator=gen) < 0.5, -1e4, 1e4)
    if regime == "spiky":
        return torch.where(torch.rand(shape, generator=gen) < 0.05, torch.full_like(x, 1e4), x)
    raise ValueError(regime)


def make_tokens(T, K, V, regime, gen):
    q = torch.randn(T, H, K, generator=gen)
    k = torch.randn(T, H, K, generator=gen)
    v = torch.randn(T, H, V, generator=gen)
    g = gate_raw((T, H, K), regime, gen)
    beta = torch.rand(T, H, generator=gen)
    return q, k, v, g, beta


def make_params(K, gen):
    A_log = torch.log(torch.empty(1, 1, H, 1).uniform_(1, 16, generator=gen))
    dt_bias = torch.randn(H * K, generator=gen) * 0.5
    return A_log, dt_bias


def truth_sequence(q, k, v, g_raw, beta, A_log, dt_bias, scale, S0):
    """fp64 chunked math for one sequence; S0 key-major [H, K, V] or None. Returns (o, S key-major)."""
    d = torch.float64
    g = kda_gate(g_raw.to(d), A_log.to(d), dt_bias.to(d))
    return chunk_kda(l2_normalize(q.to(d)), l2_normalize(k.to(d)), v.to(d), g, beta.to(d), scale,
                     None if S0 is None else S0.to(d))


def dev(*xs):
    return [x.to(DEV) for x in xs]


PREFILL_CASES = [
    # (lengths, has_initial_state, slots, regime, K)
    ([1, 63, 64, 65, 130], [True, False, True, True, False], [1, 2, 0, 4, 6], "mild", 32),
    ([64, 1, 129], [False, True, True], [5, 3, 1], "strong", 32),
    ([130, 0, 63], [True, True, False], [2, 3, 4], "huge", 32),
    ([100, 70, 30], [True, True, False], [6, 1, 3], "spiky", 32),
    ([65, 2], [True, False], [3, 0], "mild", 64),
    ([200], [True], [1], "strong", 64),
]


# Prefill designs (``_config``): the default ({}: 16-token chunks, pairs through the balanced reference in 32-column
# slices stopping at the first slice out of range, the sequential walk two chunks a step), and with either chunk length
# (64 and 16) every sequential-step layout ("inter_form"; the pair forms over 16-token chunks only) and every
# form of the sub-block pairs ("walk", "product", and "reference", which falls back to the walk in blocks whose
# decays leave its range: both branches run in these cases; its key width whole or in 16-column slices, "diag_bk",
# stopping at the first slice out of range or not, "diag_early_out"; the out-of-range blocks by the walk with a
# running sum or product, "fallback_form", or by halves first and then the walk, the default; the pairs by halves
# in the first launch, "diag_form" "halves"; the reference of the tensor-core pairs, "diag_ref": the middle row or
# halfway between the first and last rows' decays; the chunk kernel and the sequential walk in windows of chunks,
# "overlap_windows", whose walks carry the state from window to window through the slots; the sequential walk in
# segments at once, "inter_segments", each after a warm-up from zero or walked through by the segment before, which
# "segment_warmup" 0 makes the case for every later segment) run on every case (sequences of every chunk count
# modulo 4).
DESIGNS = [{}, dict(chunk=64, inter_form="rows", diag_form="walk"),
           dict(chunk=64, inter_form="cols", diag_form="product"),
           dict(chunk=64, inter_form="cols_kmajor", diag_form="reference", diag_bk=16),
           dict(chunk=64, inter_form="rows", diag_form="reference"),
           dict(chunk=16, inter_form="cols_kmajor", diag_form="walk"),
           dict(chunk=16, inter_form="rows", diag_form="product"),
           dict(chunk=16, inter_form="cols", diag_form="reference", diag_bk=None),
           dict(chunk=16, inter_form="rows", diag_form="reference", diag_bk=16, fallback_form="product"),
           dict(chunk=16, inter_form="rows", diag_form="reference", diag_early_out=False),
           dict(chunk=16, inter_form="pairs", diag_form="walk", BV=16, inter16_warps=2, inter16_stages=4),
           dict(chunk=16, diag_ref="row"),
           dict(chunk=64, inter_form="rows", diag_ref="row", diag_bk=32),
           dict(chunk=16, inter_form="pairs", diag_form="product"),
           dict(chunk=64, inter_form="cols", diag_ref="balanced", diag_bk=32),
           dict(chunk=16, diag_ref="balanced", diag_bk=None, fallback_form="product"),
           dict(chunk=16, overlap_windows=3),
           dict(chunk=16, overlap_windows=5, inter_form="rows"),
           dict(chunk=16, fallback_form="walk"),
           dict(chunk=16, diag_form="halves", fallback_form="walk", diag_bk=16),
           dict(chunk=64, inter_form="rows", diag_form="halves", fallback_form="product"),
           dict(chunk=16, inter_segments=3, segment_warmup=64, segment_launch=(16, 2, 4)),
           dict(chunk=16, inter_segments=4, segment_warmup=0, overlap_windows=3),
           dict(chunk=64, diag_bk=32, fallback_form="halves")]
DESIGN_IDS = ["-".join(str(v) for v in d.values()) or "default" for d in DESIGNS]


@pytest.mark.parametrize("design", DESIGNS, ids=DESIGN_IDS)
@pytest.mark.parametrize("lengths,has_init,slots,regime,K", PREFILL_CASES)
def test_chunk_prefill_matches_fp64(lengths, has_init, slots, regime, K, design):
    gen = torch.Generator().manual_seed(zlib.crc32(repr((lengths, regime, K)).encode()))
    V, T = K, sum(lengths)
    q, k, v, g, beta = make_tokens(T, K, V, regime, gen)
    A_log, dt_bias = make_params(K, gen)
    scale = K ** -0.5
    state0 = torch.randn(8, H, V, K, generator=gen) * 0.3          # [slots, H, V, K], V-major
    for slot, init in zip(slots, has_init):
        if slot > 0 and not init:
            state0[slot] = float("nan")             # a reused slot holds any bits; it must only be written
    cu = torch.tensor([0] + lengths).cumsum(0).to(torch.int32)
    state = state0.clone()
    out = torch.full((T, H, V), float("nan"))
    qd, kd, vd, gd, bd, Ad, dd, st, cud, outd = dev(q, k, v, g, beta, A_log, dt_bias, state, cu, out)
    o = chunk_kda_prefill(qd, kd, vd, gd, bd, Ad, dd, scale, st,
                          torch.tensor(slots, dtype=torch.int32, device=DEV),
                          torch.tensor(has_init, device=DEV), cud, out=outd,
                          _config=design)
    assert o.data_ptr() == outd.data_ptr()
    o, st = o.cpu(), st.cpu()
    assert not torch.isnan(o).any(), "some outputs were never written"

    want_state = state0.clone().double()
    for i, (s, e) in enumerate(zip(cu[:-1].tolist(), cu[1:].tolist())):
        if slots[i] <= 0:
            assert (o[s:e] == 0).all(), "a null-slot sequence must leave zero outputs"
            continue
        S0 = state0[slots[i]].transpose(-1, -2) if has_init[i] else None
        o_ref, S_ref = truth_sequence(q[s:e], k[s:e], v[s:e], g[s:e], beta[s:e], A_log, dt_bias, scale, S0)
        if e > s:
            assert rel(o[s:e], o_ref) < TOL, (i, rel(o[s:e], o_ref))
        want_state[slots[i]] = S_ref.transpose(-1, -2)
        assert rel(st[slots[i]], want_state[slots[i]]) < TOL, (i, rel(st[slots[i]], want_state[slots[i]]))
    untouched = [j for j in range(8) if j not in [s for s in slots if s > 0]]
    for j in untouched:
        assert torch.equal(st[j], state0[j]), f"slot {j} must be left untouched"
    assert torch.isfinite(st).all()


def two_sequence_errors(K, V, lengths, slots, seed, config):
    """Two sequences through chunk_kda_prefill, the first continuing from its slot, the second from zeros
    ("strong" gates, 3 state slots). Returns per sequence (rel. error of o, rel. error of its final state)
    against fp64, and whether the slots nobody uses were left untouched."""
    gen = torch.Generator().manual_seed(seed)
    q, k, v, g, beta = make_tokens(sum(lengths), K, V, "strong", gen)
    A_log, dt_bias = make_params(K, gen)
    state0 = torch.randn(3, H, V, K, generator=gen) * 0.3
    cu = torch.tensor([0] + lengths).cumsum(0).to(torch.int32)
    st = state0.clone().to(DEV)
    o = chunk_kda_prefill(*dev(q, k, v, g, beta, A_log, dt_bias), K ** -0.5, st,
                          torch.tensor(slots, dtype=torch.int32, device=DEV),
                          torch.tensor([True, False], device=DEV), cu.to(DEV), _config=config).cpu()
    st = st.cpu()
    errs = []
    for i, (s, e, slot) in enumerate(zip(cu[:-1].tolist(), cu[1:].tolist(), slots)):
        S0 = state0[slot].transpose(-1, -2) if i == 0 else None
        o_ref, S_ref = truth_sequence(q[s:e], k[s:e], v[s:e], g[s:e], beta[s:e], A_log, dt_bias, K ** -0.5, S0)
        errs.append((rel(o[s:e], o_ref), rel(st[slot], S_ref.transpose(-1, -2))))
    untouched = all(torch.equal(st[j], state0[j]) for j in range(3) if j not in slots)
    return errs, untouched


@pytest.mark.parametrize("design", DESIGNS, ids=DESIGN_IDS)
@pytest.mark.parametrize("K,V", [(32, 64), (64, 16)])
def test_chunk_prefill_value_width_differs_from_key_width(K, V, design):
    """V != K: the state tile is [V, K] (value-major in memory), so row and column roles cannot be swapped."""
    errs, untouched = two_sequence_errors(K, V, [70, 5], [2, 1], K * 1000 + V, design)
    for i, (e_o, e_s) in enumerate(errs):
        assert e_o < TOL, (i, e_o)
        assert e_s < TOL
    assert untouched


def small_decay_batch(K, lengths, gen):
    """Mild gates with A in [0.1, 1]: every 16-token sub-block's half-block decay far inside the reference-row
    range. Returns the inputs and the largest 8-row decay in log2 units (asserted below the range by the callers,
    so that these tests keep exercising the tensor-core branch)."""
    q, k, v, g, beta = make_tokens(sum(lengths), K, K, "mild", gen)
    A_log = torch.log(torch.empty(1, 1, H, 1).uniform_(0.1, 1, generator=gen))
    dt_bias = torch.randn(H * K, generator=gen) * 0.5
    g2 = -kda_gate(g.double(), A_log.double(), dt_bias.double()) / torch.log(torch.tensor(2.0, dtype=torch.float64))
    worst = max(g2[s + i:min(s + i + 8, e)].sum(0).max().item()
                for s, e in zip([0] + list(torch.tensor(lengths).cumsum(0)[:-1].tolist()),
                                torch.tensor(lengths).cumsum(0).tolist()) for i in range(0, e - s, 8))
    return (q, k, v, g, beta, A_log, dt_bias), worst


def prefill_errors(inputs, lengths, cfg):
    """Relative errors of o per sequence (zero initial states) against fp64, and o itself."""
    q, k, v, g, beta, A_log, dt_bias = inputs
    K = q.shape[-1]
    cu = torch.tensor([0] + lengths).cumsum(0).to(torch.int32)
    st = torch.zeros(len(lengths) + 1, H, K, K, device=DEV)
    o = chunk_kda_prefill(*dev(*inputs), K ** -0.5, st,
                          torch.arange(1, len(lengths) + 1, dtype=torch.int32, device=DEV),
                          torch.zeros(len(lengths), dtype=torch.bool, device=DEV), cu.to(DEV), _config=cfg).cpu()
    errs = []
    for s, e in zip(cu[:-1].tolist(), cu[1:].tolist()):
        o_ref, _ = truth_sequence(q[s:e], k[s:e], v[s:e], g[s:e], beta[s:e], A_log, dt_bias, K ** -0.5, None)
        errs.append(rel(o[s:e], o_ref))
    return errs, o


@pytest.mark.parametrize("form", ["rows", "pairs"])
def test_sequential_steps_carry_slowly_decaying_state(form):
    """Slow decays (A in [0.1, 1]: a chunk keeps a good part of the state), so that what one chunk leaves in the state
    matters to the outputs of the chunks after it: the one- and two-chunk steps against fp64, over
    sequences of every chunk count modulo 4 (the gate regimes of the cases above forget most of the state within a
    chunk or two: a four-chunk step tried on 2026-11-30 whose last chunk took the state decayed over one chunk too
    few passed every one of them, and failed here)."""
    gen = torch.Generator().manual_seed(31)
    lengths = [20, 12, 16, 33, 40, 64, 140]               # 2, 1, 1, 3, 3, 4, 9 chunks
    inputs, worst = small_decay_batch(32, lengths, gen)
    errs, _ = prefill_errors(inputs, lengths, dict(chunk=16, inter_form=form, diag_form="walk"))
    assert all(e < TOL for e in errs), errs      # (max() would pass over a NaN)


@pytest.mark.parametrize("cfg", [dict(chunk=64), dict(chunk=64, diag_bk=16), dict(chunk=16, diag_bk=None),
                                 dict(chunk=16), dict(chunk=16, diag_bk=16, diag_early_out=True)],
                         ids=["64", "64-slices16", "16-whole", "16-slices32", "16-slices16-early-out"])
def test_reference_pairs_in_range(cfg):
    """Every sub-block in range, so every pair block comes from the tensor-core branch of the reference-row form
    (the default), over the whole key width or in slices, in both chunk lengths: exact against fp64."""
    gen = torch.Generator().manual_seed(29)
    lengths = [37, 70]
    inputs, worst = small_decay_batch(64, lengths, gen)
    assert worst < 96.0 / 4, worst
    errs, _ = prefill_errors(inputs, lengths, dict(cfg, diag_form="reference"))
    assert all(e < TOL for e in errs), errs      # (max() would pass over a NaN)


def test_chunk_windows_cover_every_chunk_once():
    """The windows of ``overlap_windows``: consecutive, even-sized but the last, every chunk in exactly one."""
    for n, w in [(1, 1), (25, 3), (2048, 8), (7, 8), (64, 5)]:
        wins = chunk_windows(n, w)
        assert len(wins) <= w and wins[0][0] == 0 and wins[-1][1] == n
        assert all(a[1] == b[0] for a, b in zip(wins, wins[1:]))
        assert all((hi - lo) % 2 == 0 for lo, hi in wins[:-1])


def test_prefill_rejects_unknown_settings():
    gen = torch.Generator().manual_seed(5)
    inputs, _ = small_decay_batch(16, [20], gen)
    with pytest.raises(ValueError, match="chunk16_maxnreg"):
        prefill_errors(inputs, [20], dict(chunk16_maxnreg=96))
    with pytest.raises(ValueError, match="overlap_diag"):
        prefill_errors(inputs, [20], dict(overlap_diag=True))            # removed in the twelfth session
    with pytest.raises(ValueError, match="fallback_form='halves'"):
        prefill_errors(inputs, [20], dict(diag_form="halves"))           # halves after halves: pick the walk


def test_overlap_windows_keep_bf16_slots_in_one_window():
    """bf16 state slots: windows would round the carried state to bf16 at each boundary, so the prefill keeps one
    window there (the same outputs and slots with and without the setting)."""
    gen = torch.Generator().manual_seed(9)
    lengths = [70, 40]
    inputs, _ = small_decay_batch(16, lengths, gen)
    cu = torch.tensor([0] + lengths).cumsum(0).to(torch.int32).to(DEV)
    outs = []
    for wins in (1, 3):
        st = (torch.randn(3, H, 16, 16, generator=torch.Generator().manual_seed(1)) * 0.3).bfloat16().to(DEV)
        o = chunk_kda_prefill(*dev(*inputs), 0.25, st, torch.tensor([1, 2], dtype=torch.int32, device=DEV),
                              torch.tensor([True, False], device=DEV), cu,
                              _config=dict(chunk=16, overlap_windows=wins)).cpu()
        outs.append((o, st.cpu()))
    assert torch.equal(outs[0][0], outs[1][0]) and torch.equal(outs[0][1], outs[1][1])


@pytest.mark.parametrize("bad", [0, 2.5, "4", True])
def test_overlap_windows_rejects_bad_counts(bad):
    gen = torch.Generator().manual_seed(3)
    lengths = [20]
    inputs, _ = small_decay_batch(16, lengths, gen)
    with pytest.raises(ValueError, match="overlap_windows"):
        prefill_errors(inputs, lengths, dict(chunk=16, overlap_windows=bad))


def slow_gate_inputs(lengths, gen, log2_decay=0.35):
    """Inputs whose slowest key channel decays by about 2^-log2_decay a token (A = 1, pre-activations near a fixed
    dt_bias): a 16-token chunk scales the state by about 2^-5.6, so a segment's look-back needs about 17 chunks to
    reach 2^-SEG_FORGET."""
    q, k, v, _, beta = make_tokens(sum(lengths), 32, 32, "mild", gen)
    g = 0.1 * torch.randn(q.shape, generator=gen)
    A_log = torch.zeros(1, 1, H, 1)
    dt_bias = torch.full((H * 32,), math.log(math.expm1(log2_decay * math.log(2.0))))
    return q, k, v, g, beta, A_log, dt_bias


@pytest.mark.skipif(not INTERPRETED, reason="patches a constexpr global, which the interpreter reads at each call")
def test_segments_start_on_their_own_after_their_warm_up(monkeypatch):
    """The sequential walk in segments (``inter_segments``): a segment whose look-back finds the state forgotten (its
    bound below 2^-SEG_FORGET) walks from zero from there, at once with the others; one whose look-back does not is
    walked through by the segment before. Here the first boundary of each sequence (14 and 10 chunks in) has too
    few chunks before it and the later ones enough: exact against fp64; with no look-back allowed
    (``segment_warmup`` 0) the same arithmetic as the plain walk, bit for bit; with the look-back's threshold too
    short (SEG_FORGET 4: a chunk of warm-up) visibly wrong, so the warm-ups are both taken and what makes it exact.
    The default settings take the segments exactly where ``segment_count`` says so."""
    gen = torch.Generator().manual_seed(53)
    lengths = [800, 600]                       # 50 and 38 chunks: four segments of 14 and 10 chunks
    inputs = slow_gate_inputs(lengths, gen)
    errs, o_seg = prefill_errors(inputs, lengths, dict(chunk=16, inter_segments=4))
    assert all(e < TOL for e in errs), errs    # (max() would pass over a NaN)
    # continuing from the slots: segment 0 reads a slot that a later segment's program writes at the end; and in
    # windows, whose segments look back into the window before (and split there too: not the plain walk's outputs)
    q, k, v, g, beta, A_log, dt_bias = inputs
    state0 = torch.randn(3, H, 32, 32, generator=gen) * 0.3
    cu = torch.tensor([0] + lengths).cumsum(0).to(torch.int32)
    outs = []
    for cfg in (dict(chunk=16, inter_segments=4), dict(chunk=16, inter_segments=2, overlap_windows=3),
                dict(chunk=16, inter_segments=1, overlap_windows=3)):
        st = state0.clone().to(DEV)
        o = chunk_kda_prefill(*dev(*inputs), 32 ** -0.5, st, torch.tensor([2, 1], dtype=torch.int32, device=DEV),
                              torch.tensor([True, True], device=DEV), cu.to(DEV), _config=cfg).cpu()
        outs.append(o)
        for i, (s, e, slot) in enumerate(zip(cu[:-1].tolist(), cu[1:].tolist(), [2, 1])):
            o_ref, S_ref = truth_sequence(q[s:e], k[s:e], v[s:e], g[s:e], beta[s:e], A_log, dt_bias, 32 ** -0.5,
                                          state0[slot].transpose(-1, -2))
            assert rel(o[s:e], o_ref) < TOL and rel(st[slot].cpu(), S_ref.transpose(-1, -2)) < TOL, (cfg, i)
    assert not torch.equal(outs[1], outs[2])
    _, o_plain = prefill_errors(inputs, lengths, dict(chunk=16, inter_segments=1))
    _, o_through = prefill_errors(inputs, lengths, dict(chunk=16, inter_segments=4, segment_warmup=0))
    assert torch.equal(o_through, o_plain)
    assert not torch.equal(o_seg, o_plain)     # warm-ups from zero round differently: some segment started on its own
    # the default (inter_segments None) takes them by batch shape: these walks fit the interpreter's wave of 4 SMs,
    # so the batch's chunk count (89, the host's bound) decides
    monkeypatch.setattr(triton_chunk, "SEGMENT_MIN_CHUNKS", 89)
    assert torch.equal(prefill_errors(inputs, lengths, dict(chunk=16))[1], o_seg)
    monkeypatch.setattr(triton_chunk, "SEGMENT_MIN_CHUNKS", 90)
    assert torch.equal(prefill_errors(inputs, lengths, dict(chunk=16))[1], o_plain)
    monkeypatch.setattr(triton_chunk, "SEG_FORGET", tl.constexpr(4.0))
    errs, _ = prefill_errors(inputs, lengths, dict(chunk=16, inter_segments=4))
    assert all(e > 5e-4 for e in errs), errs   # (2026-12-01: 1.0e-3 and 1.4e-3; exact: 1.6e-7)


@pytest.mark.parametrize("bad", [dict(inter_segments=0), dict(inter_segments=2.0), dict(inter_segments=True),
                                 dict(inter_segments=2, inter_form="rows"), dict(segment_warmup=-1),
                                 dict(segment_warmup=2048), dict(segment_launch=(48, 4, 3)),
                                 dict(segment_launch=(64, 4))])
def test_segments_reject_bad_settings(bad):
    gen = torch.Generator().manual_seed(3)
    inputs, _ = small_decay_batch(16, [20], gen)
    with pytest.raises(ValueError, match="inter_segments|segment_warmup|segment_launch"):
        prefill_errors(inputs, [20], dict(chunk=16, **bad))


def test_overlap_windows_by_batch_shape():
    """The default window count: windows only while the sequential walks fit one wave (one long sequence at H = 32
    on 132 SMs), at least 128 chunks a window, at most 8."""
    assert overlap_window_count(32, 128, 132, 2048) == 8            # 1x32768: measured faster
    assert overlap_window_count(32, 128, 132, 512) == 4
    assert overlap_window_count(32, 128, 132, 200) == 1
    assert overlap_window_count(16, 128, 132, 4096) == 8            # TP=2 halves the heads
    assert overlap_window_count(8 * 32, 128, 132, 2048) == 1        # 8x4096: measured slower
    assert overlap_window_count(34, 128, 132, 4096) == 1            # 34 x 4 programs of 32 rows > 132


def test_segments_by_batch_shape(monkeypatch):
    """The default segment count: 4 while the sequential walks fit one wave and the batch holds at least 512
    chunks (the host's bound T // 16 + N: one sequence of about 8192 tokens or more at H = 32 on 132 SMs), else
    off; and the profile run's warm-ups compile the segments' kernels wherever a batch of that many sequences may
    take them."""
    tc = triton_chunk
    assert tc._FAST["inter_segments"] is None and tc._EXACT["inter_segments"] is None
    assert tc.segment_count(32, 128, 132, 32768 // 16 + 1) == 4     # 1x32768: measured faster
    assert tc.segment_count(32, 128, 132, 8192 // 16 + 1) == 4      # 1x8192: measured faster
    assert tc.segment_count(32, 128, 132, 511) == 1
    assert tc.segment_count(16, 128, 132, 1024) == 4                 # TP=2 halves the heads
    assert tc.segment_count(8 * 32, 128, 132, 2056) == 1             # 8x4096: measured slower
    assert tc.segment_count(34, 128, 132, 4096) == 1                 # 34 x 4 programs of 32 rows > 132
    monkeypatch.setattr(tc, "num_sms", lambda device: 132)
    seg = {"inter_segments": 4}
    assert tc.prefill_warmups(32, 128, None) == [(1, {}), (1, seg), (2, {})]
    assert tc.prefill_warmups(16, 128, None) == [(1, {}), (1, seg), (3, {})]   # 2 sequences fit too: same kernels
    assert tc.prefill_warmups(32, 128, None, 64) == [(n, {}) for n in tc.prefill_variant_batches(32, 128, None, 64)]


def diag_done_flags(q, k, g, A_log, dt_bias, lengths, cfg):
    """The diagonal kernel alone over 16-token chunks with ``cfg``: its ``done`` flags per (chunk, head) on the CPU,
    with cu_seqlens and each sequence's first chunk."""
    cu = torch.tensor([0] + lengths).cumsum(0).to(torch.int32)
    N, T = len(lengths), sum(lengths)
    chunk_off = torch.tensor([0] + [-(-n // 16) for n in lengths]).cumsum(0).to(torch.int32)
    nchb = T // 16 + N
    chunk_seq = torch.searchsorted(chunk_off[1:], torch.arange(nchb, dtype=torch.int32), right=True, out_int32=True)
    dd, done = _diag_workspace(nchb, H, 16, cfg, DEV)
    qd, kd, gd, Ad, dbd = dev(q, k, g, A_log.reshape(-1), dt_bias)
    _diag_pairs(qd, kd, gd, Ad, dbd, cu.to(DEV), torch.arange(1, N + 1, dtype=torch.int32, device=DEV),
                chunk_seq.to(DEV), chunk_off.to(DEV), N, nchb, 16, cfg, dd, done)
    return done.cpu(), cu, chunk_off


def decision_inputs(seed, lengths, a_range, raw_top):
    """Inputs for the range-decision tests (K = 32, mild raw gates, A uniform in ``a_range``; with ``raw_top`` about
    a third of the q, k tokens scaled by up to 2^raw_top): q, k, g, A_log, dt_bias, the fp64 decays in log2 units
    (positive) and log2 |q|, log2 |k|."""
    gen = torch.Generator().manual_seed(seed)
    q, k, v, g, beta = make_tokens(sum(lengths), 32, 32, "mild", gen)
    if raw_top:
        q, k = _scale_some_tokens(q, gen, raw_top), _scale_some_tokens(k, gen, raw_top)
    A_log = torch.log(torch.empty(1, 1, H, 1).uniform_(*a_range, generator=gen))
    dt_bias = torch.randn(H * 32, generator=gen) * 0.5
    g2 = -kda_gate(g.double(), A_log.double(), dt_bias.double()) / torch.log(torch.tensor(2.0, dtype=torch.float64))
    return q, k, g, A_log, dt_bias, g2, torch.log2(q.abs().double()), torch.log2(k.abs().double())


def _scale_some_tokens(x, gen, top):
    """x with about a third of its tokens scaled by 2^u, u uniform in [0, top] (raw q, k before their norm)."""
    T = x.shape[0]
    u = torch.empty(T, 1, 1).uniform_(0, top, generator=gen) * (torch.rand(T, 1, 1, generator=gen) < 0.35)
    return x * torch.exp2(u)


@pytest.mark.parametrize("ref,rng,big_raw", [("row", 96.0, False), ("balanced", 96.0, False),
                                             ("balanced", 110.0, True)])
def test_reference_range_decision_follows_the_exponents(ref, rng, big_raw):
    """Which sub-blocks the reference form keeps (its ``done`` flags) against the largest |E| computed in fp64 from
    the gates: the middle row's (the decays of rows 1..7, and of rows 8..15) or the balanced reference's (half the
    decay of rows 1..15), with decays that put many blocks on either side of the bound; with large raw q, k
    (``big_raw``) a block is kept only while every factor |x| 2^(+-E) stays below fp32's 2^128 as well."""
    lengths = [48, 37, 16]
    q, k, g, A_log, dt_bias, g2, lq, lk = decision_inputs(41, lengths, (5, 9), 30.0 if big_raw else None)
    cfg = dict(_FAST, diag_ref=ref, diag_bk=16, prec_d="ieee", diag_range=rng, fallback_form="walk")
    done, cu, chunk_off = diag_done_flags(q, k, g, A_log, dt_bias, lengths, cfg)
    kept, expected, margins, by_raw = [], [], [], 0
    for n, (s, L) in enumerate(zip(cu[:-1].tolist(), lengths)):
        for i in range(0, L, 16):
            blk = g2[s + i:s + min(i + 16, L)]                  # [rows, H, K]
            S = torch.cumsum(torch.cat([torch.zeros_like(blk[:1]), blk[1:]]), 0)  # decays of rows 1..r, [rows, H, K]
            p = min(7, S.shape[0] - 1)                          # rows past the sequence's end decay by nothing
            E = S[-1:] / 2 - S if ref == "balanced" else S[p:p + 1] - S           # G_r - m
            big = E.abs().amax(dim=(0, 2))                      # [H]
            rows = slice(s + i, s + min(i + 16, L))
            F = torch.stack([E + lq[rows], E + lk[rows], lk[rows] - E]).amax(dim=(0, 1, 3))  # log2 of the factors
            for h in range(H):
                kept.append(bool(done[(chunk_off[n].item() + i // 16) * H + h]))
                expected.append(big[h].item() <= rng and F[h].item() < 128.0)
                by_raw += big[h].item() <= rng and not expected[-1]
                margins += [abs(big[h].item() - rng)] + ([abs(F[h].item() - 128.0)] if big[h].item() <= rng else [])
    assert min(margins) > 1e-3, margins            # no block on a bound itself
    assert kept == expected, (kept, expected)
    assert any(expected) and not all(expected)
    assert (by_raw > 0) == big_raw, by_raw          # the raw magnitudes decide some blocks where they are large


@pytest.mark.parametrize("rng,big_raw", [(96.0, False), (110.0, True)])
def test_halves_range_decision_follows_the_exponents(rng, big_raw):
    """Which sub-blocks the pairs by halves keep (``diag_form="halves"``, its ``done`` flags) against fp64 from the
    gates: each 8-row half's largest |E| about its own balanced reference (half the decay of its rows after the
    first) within the range, and with large raw q, k every factor |x| 2^(+-E) below fp32's 2^128 (the factors
    across the halves are <= |x|, whatever the decay between them). Decays that put blocks on either side, and
    blocks kept whose whole-block decay is past the range (the blocks halves exist for)."""
    lengths = [48, 37, 16, 29]
    q, k, g, A_log, dt_bias, g2, lq, lk = decision_inputs(47, lengths, (6, 20), 40.0 if big_raw else None)
    cfg = dict(_FAST, diag_form="halves", fallback_form="walk", diag_bk=16, prec_d="ieee", diag_range=rng)
    done, cu, chunk_off = diag_done_flags(q, k, g, A_log, dt_bias, lengths, cfg)
    kept, expected, margins, by_raw, whole_out = [], [], [], 0, 0
    for n, (s, L) in enumerate(zip(cu[:-1].tolist(), lengths)):
        for i in range(0, L, 16):
            big = torch.zeros(H, dtype=torch.float64)
            F = torch.full((H,), -1e9, dtype=torch.float64)
            for a in range(s + i, s + min(i + 16, L), 8):                 # the block's halves
                rows = slice(a, min(a + 8, s + min(i + 16, L)))
                half = g2[rows]                                          # [rows, H, K]
                S = torch.cumsum(torch.cat([torch.zeros_like(half[:1]), half[1:]]), 0)
                E = S[-1:] / 2 - S                                       # G_r - m of the half's reference
                big = torch.maximum(big, E.abs().amax(dim=(0, 2)))
                F = torch.maximum(F, torch.stack([E + lq[rows], E + lk[rows], lk[rows] - E]).amax(dim=(0, 1, 3)))
            blk = g2[s + i:s + min(i + 16, L)]
            whole = blk[1:].sum(0).amax(dim=-1) / 2                       # the whole block's reference: half its decay
            for h in range(H):
                kept.append(bool(done[(chunk_off[n].item() + i // 16) * H + h]))
                expected.append(big[h].item() <= rng and F[h].item() < 128.0)
                by_raw += big[h].item() <= rng and not expected[-1]
                whole_out += expected[-1] and whole[h].item() > rng
                margins += [abs(big[h].item() - rng)] + ([abs(F[h].item() - 128.0)] if big[h].item() <= rng else [])
    assert min(margins) > 1e-3, margins            # no block on a bound itself
    assert kept == expected, (kept, expected)
    assert any(expected) and not all(expected)
    assert whole_out > 0, whole_out                 # kept by halves, out of the whole block's range
    assert (by_raw > 0) == big_raw, by_raw


def test_halves_keep_the_decay_between_the_halves_apart():
    """A decay of 2^-300 at a half's first row (row 8 of a sub-block) and mild decays elsewhere: the pairs by halves
    keep the block (each half's own decay is small; the decay between the halves only enters the factors across,
    which are <= 1) and stay exact against fp64, with pairs across the halves that underflow to zero."""
    gen = torch.Generator().manual_seed(47)
    K, lengths = 32, [40, 21]
    q, k, v, g, beta = make_tokens(sum(lengths), K, K, "mild", gen)
    A_log = torch.zeros(1, 1, H, 1)                                      # A = 1
    dt_bias = torch.zeros(H * K)
    for s in (0, 16, 40):
        g[s + 8] = 300.0 * 0.6931471805599453                            # softplus(x) ~ x: a decay of 2^-300
    cfg = dict(chunk=16, diag_form="halves", fallback_form="walk", diag_bk=16, diag_range=96.0)
    done, _, _ = diag_done_flags(q, k, g, A_log, dt_bias, lengths, dict(_FAST, **cfg))
    assert done.all(), done                     # every block by halves (the whole block's range would drop three)
    errs, _ = prefill_errors((q, k, v, g, beta, A_log, dt_bias), lengths, cfg)
    assert all(e < TOL for e in errs), errs      # (max() would pass over a NaN)


@pytest.mark.parametrize("ref", ["row", "balanced"])
def test_reference_pairs_with_exponents_near_the_range(ref):
    """Decays that put the reference factors of in-range sub-blocks up to 2^+-96 (A in [5, 7]): exact against fp64
    whichever reference, and with the balanced one some sub-block whose exponents pass 60 is inside the range (so
    its tensor-core branch runs with factors far from 1; the others take the walk)."""
    gen = torch.Generator().manual_seed(37)
    K, lengths = 32, [48, 37]
    q, k, v, g, beta = make_tokens(sum(lengths), K, K, "mild", gen)
    A_log = torch.log(torch.empty(1, 1, H, 1).uniform_(5, 7, generator=gen))
    dt_bias = torch.randn(H * K, generator=gen) * 0.5
    g2 = -kda_gate(g.double(), A_log.double(), dt_bias.double()) / torch.log(torch.tensor(2.0, dtype=torch.float64))
    starts = [0, lengths[0]]
    halves = [g2[s + i + 1:min(s + i + 16, s + n)].sum(0).amax().item() / 2
              for s, n in zip(starts, lengths) for i in range(0, n, 16)]
    assert any(60 < x <= 96 for x in halves), halves
    errs, _ = prefill_errors((q, k, v, g, beta, A_log, dt_bias), lengths,
                             dict(chunk=16, diag_form="reference", diag_ref=ref, diag_bk=16))
    assert all(e < TOL for e in errs), errs      # (max() would pass over a NaN)


@pytest.mark.parametrize("chunk", [64, 16])
def test_reference_pairs_with_large_raw_inputs(chunk):
    """Raw q, k up to 2^40 (their norm comes later) with the reference range at 2^+-124: blocks whose factors would
    pass fp32's range take the walk (``_all_finite``), so the outputs stay exact against fp64 where a check of the
    exponents alone would overflow."""
    gen = torch.Generator().manual_seed(29)
    lengths = [37, 70]
    q, k, v, g, beta = make_tokens(sum(lengths), 32, 32, "mild", gen)
    q, k = _scale_some_tokens(q, gen, 40.0), _scale_some_tokens(k, gen, 40.0)
    A_log = torch.log(torch.empty(1, 1, H, 1).uniform_(5, 9, generator=gen))
    dt_bias = torch.randn(H * 32, generator=gen) * 0.5
    errs, _ = prefill_errors((q, k, v, g, beta, A_log, dt_bias), lengths,
                             dict(chunk=chunk, diag_form="reference", diag_range=124.0, diag_bk=16))
    assert all(e < TOL for e in errs), errs      # (max() would pass over a NaN)


@pytest.mark.parametrize("chunk", [64, 16])
def test_reference_pairs_without_fallback(chunk):
    """The "reference" pair form with its range check switched off (every block takes the tensor-core branch): exact
    for decays within fp32's range, and NaN for +-1e4 gates, which is why the branch checks the block's range
    and falls back to the walk (the DESIGNS above run both branches with the check on)."""
    gen = torch.Generator().manual_seed(23)
    lengths = [37, 70]
    cfg = dict(diag_form="reference", diag_range=float("inf"), chunk=chunk, diag_bk=16)
    inputs, worst = small_decay_batch(32, lengths, gen)
    assert worst < 96.0 / 4, worst
    errs, _ = prefill_errors(inputs, lengths, cfg)
    assert all(e < TOL for e in errs), errs      # (max() would pass over a NaN)
    q, k, v, g, beta = make_tokens(sum(lengths), 32, 32, "huge", gen)
    errs, o = prefill_errors((q, k, v, g, beta) + inputs[5:], lengths, cfg)
    assert torch.isnan(o).any() or any(not e < TOL for e in errs), errs


@pytest.mark.parametrize("chunk", [64, 16])
def test_chunk_prefill_bf16_state_and_strided_inputs(chunk):
    """bf16 state slots (read and written in bf16) and q/k/v as column views of one fused projection."""
    gen = torch.Generator().manual_seed(7)
    K = V = 32
    lengths = [70, 5]
    T = sum(lengths)
    qkv = torch.randn(T, 3 * H * K, generator=gen)
    q, k, v = (x.view(T, H, K) for x in qkv.split(H * K, dim=-1))
    g = gate_raw((T, H, K), "mild", gen)
    beta = torch.rand(T, H, generator=gen)
    A_log, dt_bias = make_params(K, gen)
    state0 = (torch.randn(4, H, V, K, generator=gen) * 0.3).bfloat16()
    cu = torch.tensor([0] + lengths).cumsum(0).to(torch.int32)
    st = state0.clone().to(DEV)
    o = chunk_kda_prefill(*dev(q, k, v, g, beta, A_log, dt_bias), K ** -0.5, st,
                          torch.tensor([2, 3], dtype=torch.int32, device=DEV),
                          torch.tensor([True, True], device=DEV), cu.to(DEV), _config=dict(chunk=chunk)).cpu()
    st = st.cpu()
    for i, (s, e, slot) in enumerate([(0, 70, 2), (70, 75, 3)]):
        o_ref, S_ref = truth_sequence(q[s:e], k[s:e], v[s:e], g[s:e], beta[s:e], A_log, dt_bias, K ** -0.5,
                                      state0[slot].float().transpose(-1, -2))
        assert rel(o[s:e], o_ref) < TOL
        assert rel(st[slot], S_ref.transpose(-1, -2)) < 8e-3        # bf16 storage of the state
    assert torch.equal(st[0], state0[0]) and torch.equal(st[1], state0[1])


@pytest.mark.parametrize("chunk", [64, 16])
def test_prefill_then_decode_equals_one_prefill(chunk):
    """Prefill 66 tokens, decode 3 more one by one: same outputs and state as prefilling all 69."""
    gen = torch.Generator().manual_seed(11)
    K = V = 32
    T = 69
    q, k, v, g, beta = make_tokens(T, K, V, "strong", gen)
    A_log, dt_bias = make_params(K, gen)
    scale = K ** -0.5
    pool = torch.randn(3, H, V, K, generator=gen).to(DEV)
    slot = torch.tensor([2], dtype=torch.int32, device=DEV)
    init = torch.tensor([False], device=DEV)
    qd, kd, vd, gd, bd, Ad, dd = dev(q, k, v, g, beta, A_log, dt_bias)
    o_all = chunk_kda_prefill(qd, kd, vd, gd, bd, Ad, dd, scale, pool.clone(), slot, init,
                              torch.tensor([0, T], dtype=torch.int32, device=DEV), _config=dict(chunk=chunk)).cpu()
    st = pool.clone()
    o1 = chunk_kda_prefill(qd[:66], kd[:66], vd[:66], gd[:66], bd[:66], Ad, dd, scale, st, slot, init,
                           torch.tensor([0, 66], dtype=torch.int32, device=DEV), _config=dict(chunk=chunk)).cpu()
    outs = [o1]
    for t in range(66, T):
        outs.append(recurrent_kda_decode(qd[t:t + 1], kd[t:t + 1], vd[t:t + 1], gd[t:t + 1], bd[t:t + 1],
                                         Ad, dd, scale, st, slot).cpu())
    o_ref, S_ref = truth_sequence(q, k, v, g, beta, A_log, dt_bias, scale, None)
    assert rel(torch.cat(outs), o_ref) < TOL
    assert rel(o_all, o_ref) < TOL
    assert rel(st[2].cpu(), S_ref.transpose(-1, -2)) < TOL


def truth_step(q, k, v, g_raw, beta, A_log, dt_bias, scale, S):
    """One fp64 recurrent step for a batch: q, k, g_raw [N, H, K]; S key-major [N, H, K, V]."""
    d = torch.float64
    outs, states = [], []
    for i in range(q.shape[0]):
        g = kda_gate(g_raw[i:i + 1].to(d), A_log.to(d), dt_bias.to(d))
        o, Sn = recurrent_kda(l2_normalize(q[i:i + 1].to(d)), l2_normalize(k[i:i + 1].to(d)), v[i:i + 1].to(d),
                              g, beta[i:i + 1].to(d), scale, S[i].to(d))
        outs.append(o[0])
        states.append(Sn)
    return torch.stack(outs), torch.stack(states)


@pytest.mark.parametrize("regime,K,state_dtype", [("mild", 32, torch.float32), ("huge", 32, torch.float32),
                                                  ("strong", 64, torch.float32), ("mild", 64, torch.bfloat16)])
def test_decode_matches_fp64(regime, K, state_dtype):
    gen = torch.Generator().manual_seed(zlib.crc32(repr((regime, K, state_dtype)).encode()))
    V, N = K, 7
    q, k, v, g, beta = make_tokens(N, K, V, regime, gen)
    A_log, dt_bias = make_params(K, gen)
    scale = K ** -0.5
    state0 = (torch.randn(9, H, V, K, generator=gen) * 0.3).to(state_dtype)
    slots = torch.tensor([3, 0, 1, 8, 5, 0, 2], dtype=torch.int32)
    has_init = torch.tensor([True, True, False, True, True, False, True])
    state0[1] = float("nan")                        # slot 1's sequence has no state: its old bits must not count
    st = state0.clone().to(DEV)
    out = torch.full((N, H, V), float("nan"), device=DEV)
    o = recurrent_kda_decode(*dev(q, k, v, g, beta, A_log, dt_bias), scale, st, slots.to(DEV),
                             has_initial_state=has_init.to(DEV), out=out).cpu()
    st = st.cpu()
    S = torch.where(has_init[:, None, None, None], state0.float()[slots.clamp(min=0).long()].transpose(-1, -2), 0.0)
    o_ref, S_ref = truth_step(q, k, v, g, beta, A_log, dt_bias, scale, S)
    valid = slots > 0
    tol_s = TOL if state_dtype == torch.float32 else 8e-3
    tol_o = TOL if state_dtype == torch.float32 else 8e-3
    assert not torch.isnan(o).any()
    assert (o[~valid] == 0).all()
    assert rel(o[valid], o_ref[valid]) < tol_o
    assert rel(st[slots[valid].long()], S_ref[valid].transpose(-1, -2)) < tol_s
    for j in (0, 4, 6, 7):                                           # null slot and unused slots
        assert torch.equal(st[j], state0[j])


def test_decode_without_init_flags_reads_every_slot():
    gen = torch.Generator().manual_seed(3)
    K = V = 32
    N = 3
    q, k, v, g, beta = make_tokens(N, K, V, "mild", gen)
    A_log, dt_bias = make_params(K, gen)
    state0 = torch.randn(4, H, V, K, generator=gen) * 0.3
    slots = torch.tensor([1, 2, 3], dtype=torch.int32)
    st = state0.clone().to(DEV)
    o = recurrent_kda_decode(*dev(q, k, v, g, beta, A_log, dt_bias), K ** -0.5, st, slots.to(DEV)).cpu()
    o_ref, S_ref = truth_step(q, k, v, g, beta, A_log, dt_bias, K ** -0.5, state0[1:].transpose(-1, -2))
    assert rel(o, o_ref) < TOL and rel(st[1:].cpu(), S_ref.transpose(-1, -2)) < TOL


def test_verify_keeps_every_state():
    gen = torch.Generator().manual_seed(5)
    K = V = 32
    N, T = 3, 4
    q, k, v, g, beta = make_tokens(N * T, K, V, "strong", gen)
    A_log, dt_bias = make_params(K, gen)
    scale = K ** -0.5
    state0 = torch.randn(16, H, V, K, generator=gen) * 0.3
    initial = torch.tensor([1, 0, 9], dtype=torch.int32)
    idx = torch.tensor([[2, 3, 4, 5], [6, 7, 8, 15], [10, 0, 11, 9]], dtype=torch.int32)
    st = state0.clone().to(DEV)
    out = torch.full((N * T, H, V), float("nan"), device=DEV)
    o = recurrent_kda_verify(*dev(q, k, v, g, beta, A_log, dt_bias), scale, st, initial.to(DEV), idx.to(DEV),
                             out=out).cpu()
    st = st.cpu()
    assert not torch.isnan(o).any()
    assert (o[T:2 * T] == 0).all()
    for n in (0, 2):
        S = state0[initial[n]].transpose(-1, -2).double()
        for j in range(T):
            t = n * T + j
            o_ref, S = truth_step(q[t:t + 1], k[t:t + 1], v[t:t + 1], g[t:t + 1], beta[t:t + 1], A_log, dt_bias,
                                  scale, S[None])
            S = S[0]
            assert rel(o[t], o_ref[0]) < TOL
            if idx[n, j] > 0:
                assert rel(st[idx[n, j]], S.transpose(-1, -2)) < TOL
    for j in (0, 1, 6, 7, 8, 12, 13, 14, 15):                         # null, sequence 1's slots, unused
        assert torch.equal(st[j], state0[j])


@pytest.mark.parametrize("chunk", [64, 16])
def test_chunk_prefill_fast_path_storage(chunk):
    """The bf16-input settings (bf16 W/QG/KG, fp16 2^G k, tf32 products) on fp32 inputs: same data flow as on
    the GPU's fast path, so only bf16 rounding of the stored intermediates separates it from the truth. The
    sequential step's products with the state stay fp32 here (the interpreter gets bf16 products wrong); the GPU
    benchmark measures them in bf16."""
    from kernels.kda.triton_chunk import _FAST
    errs, _ = two_sequence_errors(32, 32, [65, 30], [1, 2], 13, dict(_FAST, ws_dtype=torch.bfloat16, inter_dot="fp32",
                                                                        chunk=chunk))
    for e_o, e_s in errs:
        assert e_o < 1e-2, e_o                                            # bf16 intermediates: ~3e-3 expected
        assert e_s < 1e-2


def test_prefill_launch_choices_and_their_warm_up_counts(monkeypatch):
    """The sequential kernel's launch (value rows, warps, stages) follows the batch shape, and the warm-up counts
    reach every launch it can pick on a 132-SM GPU with either chunk length."""
    import kernels.kda.triton_chunk as tc

    sms = 132
    assert tc._FAST["chunk"] == 16
    assert tc.inter16_launch(32, 128, sms) == (16, 2, 4)          # one long sequence at H = 32: latency-bound
    assert tc.inter16_launch(34, 128, sms) == (64, 4, 3)          # 136 programs of 32 rows: more than one wave
    assert tc.inter16_launch(64, 128, sms) == (64, 4, 3)
    assert tc.inter16_launch(64, 64, sms) == (16, 2, 4)           # narrower values: more walks fit the wave
    assert tc._inter16_launch(32, 128, sms, dict(tc._FAST, BV=32, inter16_warps=None, inter16_stages=3)) == (32, 4, 3)
    assert tc._inter16_launch(32, 128, sms, dict(tc._FAST, BV=32, inter16_warps=2)) == (32, 2, 4)   # as configured
    assert tc.inter_block_v(32, 128, sms) == 32 and tc.inter_block_v(256, 128, sms) == 64   # 64-token chunks
    monkeypatch.setattr(tc, "num_sms", lambda device: sms)
    assert tc.prefill_variant_batches(32, 128, None) == [1, 2]     # H = 32
    assert tc.prefill_variant_batches(16, 128, None) == [1, 3]     # TP = 2: 2 x 16 walks x 4 = 128 <= 132
    assert tc.prefill_variant_batches(2, 128, None) == [1, 17]     # the tiny model
    # 64-token chunks: value rows 16 / 32 / 64 by inter_block_v
    assert tc.prefill_variant_batches(2, 128, None, 64) == [1, 9, 17]
    assert tc.prefill_variant_batches(16, 128, None, 64) == [1, 2, 3]
