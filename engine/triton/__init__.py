"""NVIDIA Triton Inference Server support: the local server launcher (server.py) and the client
backend for `triton://HOST[:PORT]/NAME` models (runner.TritonRunner, options, model_info, shm).
tritonclient is imported only where a client is made.
"""
