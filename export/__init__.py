"""Export a trained two-tower run as a versioned SavedModel with a ScaNN or brute-force index."""

import os

# TFRS 0.7 needs Keras 2; TensorFlow reads this once, at its first import, so it is set here
# before any module of this package imports TensorFlow. An explicit user setting wins.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
