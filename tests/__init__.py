"""The project's tests: CPU tests of the plugin in vLLM against the fp64 reference model, and kernel tests."""
