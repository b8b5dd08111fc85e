"""Build pow_kernel, the miners' native nonce search, as an optional extension.

`optional=True`: on a machine without a C compiler (or where the build fails for
any other reason) setuptools prints a warning and installs the package without
the module; mining/kernel.py then falls back to the hashlib loop. Nothing
prebuilt is shipped.
"""
import sys

from setuptools import Extension, setup

compile_args = [] if sys.platform == "win32" else ["-O3"]

setup(
    ext_modules=[
        Extension("pow_kernel", sources=["pow_kernel.c"], extra_compile_args=compile_args, optional=True),
    ],
)
