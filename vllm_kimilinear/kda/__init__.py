"""The KDA token mixer: layer (weights, projections), state spec and vLLM attention backend."""
