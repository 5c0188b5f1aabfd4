"""Kimi Delta Attention (KDA): the token-by-token reference, the chunked torch path, paged state I/O."""
