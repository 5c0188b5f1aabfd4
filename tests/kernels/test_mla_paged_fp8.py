"""The plain-PyTorch MLA path (kernels/mla/paged.py, what CPUs run) over an fp8 cache whose scale is not 1:
the write / read round trip, the absorbed decode and the expanded prefill, each against float64 numbers.

A checkpoint may ship a k_scale per layer; a path that divided by it on write and forgot it on read (or
the reverse) would be right at 1.0 and wrong at any other scale, so every case here uses ``K_SCALE``. The paged
cases and their fp64 truth are ``test_mla_prefill``'s (a decode is the last position's causal attention)."""

import pytest
import torch

from kernels.mla import fp8
from kernels.mla.paged import decode_absorbed, prefill_expanded, rows_as_float, write_latent_cache
from tests.kernels.test_mla_prefill import SMALL, make_case, truth

K_SCALE = 0.03          # rows of N(0, 1) land at up to ~150 in e4m3 units: inside the normal range
L, R = SMALL[4], SMALL[2]


def test_write_then_read_round_trip_with_scale():
    g = torch.Generator().manual_seed(1)
    cache = torch.zeros(4, 8, L + R, dtype=torch.uint8)          # 4 blocks of 8 rows
    kv_c, k_pe = torch.randn(5, L, generator=g), torch.randn(5, R, generator=g)
    slots = torch.tensor([9, 30, -1, 17, 8])                     # one padding token (slot -1 -> row 0)
    write_latent_cache(cache, slots, kv_c, k_pe, k_scale=K_SCALE)
    flat = cache.view(-1, L + R)
    rows = torch.cat([kv_c, k_pe], dim=-1)
    keep = slots >= 0
    got = rows_as_float(flat[slots[keep]], torch.float64, k_scale=K_SCALE)
    want = rows[keep].double()
    assert ((got - want).abs() <= fp8.roundtrip_bound(want, K_SCALE)).all()
    assert (got - want).abs().max() > 0                          # fp8 did round: the bound is what is tested
    untouched = torch.ones(flat.shape[0], dtype=torch.bool)
    untouched[slots.clamp(min=0)] = False
    assert (flat[untouched] == 0).all()                          # nothing else written


def test_decode_absorbed_with_scale_matches_fp64():
    totals = [1, 8, 9, 30]                                        # around the 8-row block boundary
    (q, cache, table, W), rows = make_case(totals, [1] * len(totals), bs=8, seed=2, fp8=True, k_scale=K_SCALE)
    P = q.shape[-1] - R
    got = decode_absorbed(q[..., :P], q[..., P:], cache, table, torch.tensor(totals), W, 0.3, max(totals),
                          k_scale=K_SCALE)
    _close_per_sequence(got, truth(q, rows, totals, [1] * len(totals), W, 0.3), [1] * len(totals))


@pytest.mark.parametrize("chunk", [4, 10000])
def test_prefill_expanded_with_scale_matches_fp64(chunk):
    totals, qlens = [5, 20, 17], [5, 3, 9]                        # prefixes 0, 17 and 8: pieces of 4 rows
    (q, cache, table, W), rows = make_case(totals, qlens, bs=8, seed=4, fp8=True, k_scale=K_SCALE)
    got = prefill_expanded(q, cache, table, totals, qlens, W, 0.3, k_scale=K_SCALE, chunk=chunk)
    _close_per_sequence(got, truth(q, rows, totals, qlens, W, 0.3), qlens)


def _close_per_sequence(got, want, qlens):
    """Each sequence's outputs within 1e-5 of its largest fp64 value, element by element."""
    start = 0
    for ql in qlens:
        g, w = got[start:start + ql].double(), want[start:start + ql]
        assert (g - w).abs().max() < 1e-5 * w.abs().max()
        start += ql


def test_round_queries_e4m3():
    """The queries as the fp8 register kernel's score product takes them: one power-of-two scale a head over its
    latent and position parts together (largest |value| into (224, 448]), rounded to e4m3 within 2^-4 of each
    value in its normal range; a head of zeros stays zeros, one of subnormals finite; heads of very different
    sizes (1e-4, 1e3) keep their own precision."""
    g = torch.Generator().manual_seed(3)
    q_lat = torch.randn(3, 4, 64, generator=g)
    q_pe = torch.randn(3, 4, 16, generator=g)
    q_lat[:, 1] *= 1e-4
    q_pe[:, 2] *= 1e3
    q_lat[2, 3] = 0
    q_pe[2, 3] = 0
    r_lat, r_pe = fp8.round_queries_e4m3(q_lat.bfloat16(), q_pe.bfloat16())
    assert r_lat.dtype == r_pe.dtype == torch.float32
    x = torch.cat([q_lat.bfloat16().float(), q_pe.bfloat16().float()], -1)
    r = torch.cat([r_lat, r_pe], -1)
    amax = x.abs().amax(-1, keepdim=True)
    live = amax > 0
    scale = torch.exp2(torch.floor(torch.log2(448 / torch.where(live, amax, torch.ones_like(amax)))))
    top = (amax * scale)[live]
    assert (top > 224).all() and (top <= 448).all()
    normal = x.abs() * scale >= 2.0 ** -6
    assert ((r - x).abs() <= 2.0 ** -4 * x.abs())[normal].all()
    assert ((r - x).abs()[normal] > 0).any()                     # it does round (3 mantissa bits < bf16's 7)
    assert (r * scale).to(torch.float8_e4m3fn).float().equal(r * scale)    # values of the e4m3 grid, scaled
    assert (r[2, 3] == 0).all()
    # a head of bf16 subnormals (below 2^-100) takes 2^-100's scale: finite, its values far below e4m3's range
    tiny_lat, tiny_pe = fp8.round_queries_e4m3((q_lat[:1, :1] * 1e-39).bfloat16(), (q_pe[:1, :1] * 1e-39).bfloat16())
    assert torch.isfinite(tiny_lat).all() and torch.isfinite(tiny_pe).all() and tiny_lat.abs().max() < 1e-30
