"""Serve exported models over TensorFlow Serving's gRPC API: client, launcher, embedded server."""

import tfrs_model  # noqa: F401  (selects Keras 2 before anything imports TensorFlow)
