"""Export a trained two-tower run as a versioned SavedModel with a ScaNN or brute-force index."""

import tfrs_model  # noqa: F401  (selects Keras 2 before anything imports TensorFlow)
