"""Build script for the compiled part of dbrt: two small C modules of the CPU post-processing
(pipeline/postprocess/_fill.c, _steps.c). Both are optional: where no C compiler is at hand the
install still succeeds and the post-processing runs its NumPy / OpenCV code (the same results)."""
import sys

from setuptools import Extension, setup

# Bit-exact float results need a * b + c rounded twice, as the reference does: no fused
# multiply-add (GCC contracts by default wherever the target has FMA, e.g. every ARMv8 CPU).
EXACT_FLOAT = [] if sys.platform == "win32" else ["-ffp-contract=off"]


def extension(name: str) -> Extension:
    return Extension(f"pipeline.postprocess.{name}", [f"pipeline/postprocess/{name}.c"],
                     depends=["pipeline/postprocess/_common.h", "pipeline/postprocess/_fillpoly.h"], extra_compile_args=EXACT_FLOAT,
                     optional=True)


setup(ext_modules=[extension("_fill"), extension("_steps")])
