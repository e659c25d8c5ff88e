"""Build the optional native CTF scanner; everything else is configured in pyproject.toml.

The extension is optional: without a C compiler the install goes on and ``rnnkit.data.ctf``
reads with its pure Python paths (the same results, about 10x slower).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension("rnnkit.data._ctfscan", ["src/rnnkit/data/_ctfscan.c"], optional=True),
    ]
)
