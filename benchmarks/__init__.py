"""Benchmarks of the library, kept beside it: index, serve and quality, reached by `twotower bench`.

Results are written to `benchmarks/results/*.json` and `docs/benchmarks.md` of the source tree this
package lives in, whatever the working directory.
"""

import tfrs_model  # noqa: F401  (selects Keras 2 before anything imports TensorFlow)
