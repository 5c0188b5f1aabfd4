"""The KDA layers' vLLM attention backend: vLLM's GDN metadata (state slots, decodes first), our name.

One addition to GDN's metadata: ``has_initial_state`` for every sequence, decodes included. vLLM counts a
new 1-token prompt as a decode, and its state slot may still hold a finished request's state (vLLM's CPU
runner zeroes only attention blocks), so the decode path must know to start from zero.
"""

import torch

from vllm.v1.attention.backends.gdn_attn import GDNAttentionBackend, GDNAttentionMetadataBuilder


class KimiKDAMetadataBuilder(GDNAttentionMetadataBuilder):
    """GDN's builder (subclassed so vLLM's runner still feeds it spec-decode inputs) plus a per-sequence
    ``has_initial_state`` kept in a persistent buffer (stable address under CUDA graphs)."""

    def __init__(self, kv_cache_spec, layer_names, vllm_config, device):
        super().__init__(kv_cache_spec, layer_names, vllm_config, device)
        self._has_init = torch.zeros(vllm_config.scheduler_config.max_num_seqs, dtype=torch.bool, device=device)

    def build(self, common_prefix_len, common_attn_metadata, *args, **kwargs):
        md = super().build(common_prefix_len, common_attn_metadata, *args, **kwargs)
        m = common_attn_metadata
        n = m.num_reqs
        qsl = m.query_start_loc[: n + 1]
        self._has_init[:n].copy_(m.seq_lens[:n] > (qsl[1:] - qsl[:-1]))
        md.has_initial_state = self._has_init[:n]
        return md


class KimiKDABackend(GDNAttentionBackend):
    @staticmethod
    def get_name() -> str:
        return "KIMILINEAR_KDA"

    @staticmethod
    def get_builder_cls() -> type[KimiKDAMetadataBuilder]:
        return KimiKDAMetadataBuilder
