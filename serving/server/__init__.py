"""The embedded TensorFlow-Serving-compatible model server, and the launcher that picks a server.

Modules, from the request inward:
  `server`: `EmbeddedServer` (gRPC and REST on one `ServingConfig`) and `run_until_signal`.
  `services`, `rest`: the gRPC servicers and the REST front end, both over `api.ServingApi`.
  `api`: Predict, GetModelMetadata and GetModelStatus on TF Serving's protos, transport-free.
  `requests`: `StatusError` and the checks of request tensors against a signature.
  `model_manager`: versions on disk -> loaded servables (`servable`), warmed up (`warmup`), with
    TF Serving's lifecycle; `batching` merges concurrent calls.
  `config`, `monitoring`: the typed server config and the Prometheus metrics.
  `launcher`: runs `tensorflow_model_server` for a config when installed, else the embedded server.

Nothing is imported here, so `serving.server.config` and `serving.server.launcher` stay free of
TensorFlow; import the modules by their full path.
"""
