"""MLA prefill over the paged latent cache, with the cached context expanded piece by piece: the torch path
against an independent float64 computation, and (on a GPU) the FlashAttention path against the torch one.

Sequences carry cached prefixes (chunked prefills) and the piece size is small, so that prefixes split into
several pieces, one of them partial, and the merge by log-sum-exp is exercised."""

import pytest
import torch

from kernels.mla.fp8 import quantize_latent
from kernels.mla.paged import context_pieces, prefill_expanded

SMALL = (3, 16, 8, 12, 32)          # H, P (nope), R (pe), V, L (latent)
KIMI = (4, 128, 64, 128, 512)       # Kimi's widths (4 of its heads): FlashAttention's head sizes


def make_case(totals, qlens, bs, seed, dims=SMALL, dtype=torch.float32, fp8=False, device="cpu", k_scale=1.0):
    H, P, R, V, L = dims
    gen = torch.Generator().manual_seed(seed)
    rows = [torch.randn(n, L + R, generator=gen) for n in totals]
    nblk = [-(-n // bs) for n in totals]
    perm = torch.randperm(sum(nblk) + 3, generator=gen)[: sum(nblk)] + 1          # block 0 stays unused
    table = torch.zeros(len(totals), max(nblk), dtype=torch.int32)
    cache = torch.zeros(int(perm.max()) + 1, bs, L + R)
    used = 0
    for i, n in enumerate(totals):
        table[i, : nblk[i]] = perm[used: used + nblk[i]].to(torch.int32)
        used += nblk[i]
        for t in range(n):
            cache[table[i, t // bs], t % bs] = rows[i][t]
    if fp8:
        cache = quantize_latent(cache, k_scale).view(torch.uint8)
        rows = [quantize_latent(r, k_scale).double() * k_scale for r in rows]   # what the cache holds, as numbers
    else:
        cache = cache.to(dtype)
        rows = [r.to(dtype).double() for r in rows]
    q = torch.randn(sum(qlens), H, P + R, generator=gen).to(dtype)
    W = (torch.randn(H, P + V, L, generator=gen) * L ** -0.5).to(dtype)
    return [t.to(device) for t in (q, cache, table, W)], rows


def truth(q, rows, totals, qlens, W, scale):
    """float64, from each sequence's contiguous rows: causal attention of its new tokens over all its rows."""
    H, L = W.shape[0], W.shape[-1]
    P = q.shape[-1] - (rows[0].shape[-1] - L)
    W = W.double().cpu()
    outs, start = [], 0
    for r, n, ql in zip(rows, totals, qlens):
        r = r.double().cpu()
        kv = torch.einsum("tl,hdl->thd", r[:, :L], W)
        k = torch.cat([kv[..., :P], r[:, None, L:].expand(-1, H, -1)], dim=-1)
        s = torch.einsum("qhd,khd->hqk", q[start:start + ql].double().cpu(), k) * scale
        pos = torch.arange(n - ql, n)
        s = s.masked_fill(torch.arange(n)[None, None, :] > pos[None, :, None], float("-inf"))
        outs.append(torch.einsum("hqk,khv->qhv", torch.softmax(s, -1), kv[..., P:]))
        start += ql
    return torch.cat(outs)


def rel(a, b):
    return ((a.double().cpu() - b).norm() / b.norm()).item()


@pytest.mark.parametrize("total,qlen,chunk", [(10, 10, 4), (10, 3, 4), (11, 3, 4), (9, 1, 8), (40, 7, 16)])
def test_context_pieces_cover_the_keys_once(total, qlen, chunk):
    pieces = context_pieces(total, qlen, chunk)
    assert pieces[-1] == (total - qlen, total, True)
    assert [p[1] for p in pieces[:-1]] == [p[0] for p in pieces[1:]] and pieces[0][0] == 0
    assert all(not c and 0 < hi - lo <= chunk for lo, hi, c in pieces[:-1])


TOTALS, QLENS = [1, 37, 50, 64, 23], [1, 5, 50, 17, 9]       # prefixes 0, 32, 0, 47, 14


@pytest.mark.parametrize("chunk", [8, 16, 10000])
@pytest.mark.parametrize("fp8", [False, True])
def test_torch_prefill_matches_fp64_with_pieces(chunk, fp8):
    (q, cache, table, W), rows = make_case(TOTALS, QLENS, bs=16, seed=5, fp8=fp8)
    got = prefill_expanded(q, cache, table, TOTALS, QLENS, W, 0.2, chunk=chunk)
    assert rel(got, truth(q, rows, TOTALS, QLENS, W, 0.2)) < 1e-5


@pytest.mark.skipif(not torch.cuda.is_available(), reason="FlashAttention needs a CUDA GPU")
@pytest.mark.parametrize("chunk", [16, 10000])
def test_flash_prefill_matches_torch(chunk):
    pytest.importorskip("vllm.vllm_flash_attn")
    from vllm.config import VllmConfig, set_current_vllm_config

    from vllm_kimilinear.mla.prefill import prefill_flash
    totals, qlens = [1, 300, 80, 129], [1, 45, 80, 7]
    (q, cache, table, W), rows = make_case(totals, qlens, bs=64, seed=9, dims=KIMI, dtype=torch.bfloat16,
                                           device="cuda")
    with set_current_vllm_config(VllmConfig()):
        got = prefill_flash(q, cache, table, totals, qlens, W, 0.1, chunk=chunk)
    assert rel(got.float(), truth(q, rows, totals, qlens, W, 0.1)) < 1e-2          # bf16 keys, values, products
