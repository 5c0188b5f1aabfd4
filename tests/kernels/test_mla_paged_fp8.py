"""The plain-PyTorch MLA path (kernels/mla/paged.py, what CPUs run) over an fp8 cache whose scale is not 1:
the write / read round trip, the absorbed decode and the expanded prefill, each against float64 numbers.

A checkpoint may ship a k_scale per layer; a path that divided by it on write and forgot it on read (or
the reverse) would be right at 1.0 and wrong at any other scale, so every case here uses ``K_SCALE``."""

import pytest
import torch

from kernels.mla import fp8
from kernels.mla.paged import decode_absorbed, prefill_expanded, rows_as_float, write_latent_cache

K_SCALE = 0.03          # rows of N(0, 1) land at up to ~150 in e4m3 units: inside the normal range
H, P, V, L, R = 3, 16, 12, 32, 8


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


def _paged(seq_lens, bs, seed):
    """An fp8 cache (scale K_SCALE) with shuffled blocks, its block table and each sequence's rows as the
    numbers the cache holds (float64)."""
    g = torch.Generator().manual_seed(seed)
    need = [-(-n // bs) for n in seq_lens]
    perm = torch.randperm(sum(need) + 2, generator=g)[: sum(need)] + 1       # block 0 stays unused
    table = torch.zeros(len(seq_lens), max(need), dtype=torch.int32)
    cache = torch.zeros(int(perm.max()) + 1, bs, L + R, dtype=torch.uint8)
    held, used = [], 0
    for i, n in enumerate(seq_lens):
        table[i, : need[i]] = perm[used: used + need[i]].to(torch.int32)
        used += need[i]
        rows = torch.randn(n, L + R, generator=g)
        slots = table[i].long()[torch.arange(n) // bs] * bs + torch.arange(n) % bs
        write_latent_cache(cache, slots, rows[:, :L], rows[:, L:], k_scale=K_SCALE)
        held.append(fp8.quantize_latent(rows, K_SCALE).double() * K_SCALE)
    W = torch.randn(H, P + V, L, generator=g) * L ** -0.5
    return cache, table, held, W


def _attend(q, keys, values, scale, causal_from=None):
    s = torch.einsum("qhd,khd->hqk", q, keys) * scale
    if causal_from is not None:
        s = s.masked_fill(torch.arange(keys.shape[0])[None, None, :] >
                          (causal_from + torch.arange(q.shape[0]))[None, :, None], float("-inf"))
    return torch.einsum("hqk,khv->qhv", torch.softmax(s, -1), values)


def _expand(rows, W):
    kv = torch.einsum("tl,hdl->thd", rows[:, :L], W.double())
    return torch.cat([kv[..., :P], rows[:, None, L:].expand(-1, H, -1)], dim=-1), kv[..., P:]


def test_decode_absorbed_with_scale_matches_fp64():
    seq_lens = [1, 8, 9, 30]                                      # around the 8-row block boundary
    cache, table, held, W = _paged(seq_lens, bs=8, seed=2)
    g = torch.Generator().manual_seed(3)
    q = torch.randn(len(seq_lens), H, P + R, generator=g)
    got = decode_absorbed(q[..., :P], q[..., P:], cache, table, torch.tensor(seq_lens), W, 0.3, max(seq_lens),
                          k_scale=K_SCALE)
    for i, rows in enumerate(held):
        keys, values = _expand(rows, W)
        want = _attend(q[i: i + 1].double(), keys, values, 0.3)[0]
        assert (got[i].double() - want).abs().max() < 1e-5 * want.abs().max()


@pytest.mark.parametrize("chunk", [4, 10000])
def test_prefill_expanded_with_scale_matches_fp64(chunk):
    seq_lens, query_lens = [5, 20, 17], [5, 3, 9]                 # prefixes 0, 17 and 8: pieces of 4 rows
    cache, table, held, W = _paged(seq_lens, bs=8, seed=4)
    g = torch.Generator().manual_seed(5)
    q = torch.randn(sum(query_lens), H, P + R, generator=g)
    got = prefill_expanded(q, cache, table, seq_lens, query_lens, W, 0.3, k_scale=K_SCALE, chunk=chunk)
    start = 0
    for rows, n, ql in zip(held, seq_lens, query_lens):
        keys, values = _expand(rows, W)
        want = _attend(q[start: start + ql].double(), keys, values, 0.3, causal_from=n - ql)
        assert (got[start: start + ql].double() - want).abs().max() < 1e-5 * want.abs().max()
        start += ql
