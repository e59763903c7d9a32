"""DBNet on Triton Inference Server: the model repository `dbrt triton export` writes
(repository.py) and the Python-backend DB post-processing model it ships (postprocess_model.py)."""
