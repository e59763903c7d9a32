"""TensorRT backend: engine build (`build`), INT8 calibration, build records, the engine cache and
the runner. Importing this package does not import tensorrt; building or running does."""
