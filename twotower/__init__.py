"""The `twotower` command line: the tools above the library (train, evaluate, export, serve, ...).

It sits on top of `tfrs_model`, `export` and `serving` and is the only package that imports all
three; nothing imports it back.
"""

import tfrs_model  # noqa: F401  (selects Keras 2 before anything imports TensorFlow)
