"""The MLA token mixer: projections, the latent-cache attention layer, and its vLLM backend."""
