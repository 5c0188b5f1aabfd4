"""Multi-head Latent Attention over a paged latent cache: torch paths (CPU product and GPU oracle)."""
