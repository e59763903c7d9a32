"""dbrt export: the PyTorch DBNet, checkpoint loading, ONNX export, FP16 / INT8 ONNX, training.

Import submodules explicitly (`from export.model import DBNet`); this package itself imports
nothing heavy, so the command line can use its torch-free parts (synthetic data) without torch.
"""
