"""NVIDIA Triton Inference Server support: the local server launcher (server.py).
tritonclient is imported only where a client is made.
"""
