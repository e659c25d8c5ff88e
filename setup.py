"""Build the optional native parts; everything else is configured in pyproject.toml.

Both extensions are optional: without a C compiler the install goes on, ``rnnkit.data.ctf``
reads with its pure Python paths (the same results, about 10x slower) and the LSTM runs on
torch's kernel wherever rnnkit's small-layer kernel would have (``rnnkit.lstm_kernel``).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension("rnnkit.data._ctfscan", ["src/rnnkit/data/_ctfscan.c"], optional=True),
        Extension("rnnkit._lstmkernel", ["src/rnnkit/_lstmkernel.c"], optional=True),
    ]
)
