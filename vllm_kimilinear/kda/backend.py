"""The KDA layers' vLLM attention backend: vLLM's GDN metadata (state slots, decodes first), our name."""

from vllm.v1.attention.backends.gdn_attn import GDNAttentionBackend, GDNAttentionMetadataBuilder


class KimiKDAMetadataBuilder(GDNAttentionMetadataBuilder):
    """GDN's builder as is: decodes ordered first, one state slot per sequence (column 0 of the block
    table), ``has_initial_state`` for prefills. Subclassed so vLLM's runner still feeds it the
    spec-decode inputs it gives GDN builders."""


class KimiKDABackend(GDNAttentionBackend):
    @staticmethod
    def get_name() -> str:
        return "KIMILINEAR_KDA"

    @staticmethod
    def get_builder_cls() -> type[KimiKDAMetadataBuilder]:
        return KimiKDAMetadataBuilder
