"""Serving: an embedded server speaking TensorFlow Serving's REST API, its clients, and the
completion page it serves at /ui.

The server's modules, in the order a request meets them:

* `server`: `serve()` (what serving/server.py runs) and `serving_in_thread()` (in-process).
* `app`: the Starlette app, its routes, body limit and deadline, and `predict()`.
* `predict_request` / `predict_response`: TF Serving's JSON <-> tensors (json_tensor.cc).
* `manager`: `ModelManager`, which polls the base paths and loads, swaps and unloads versions.
* `model_config`: `ModelConfig` and the ModelServerConfig text proto (serving/models.config).
* `servable`: one loaded SavedModel version and its signatures.
* `errors`: `ServingError` and TF Serving's mapping of error codes to HTTP statuses.

Beside them: `client` (REST and gRPC clients, for TF Serving and the embedded server) and
`page` (the completion page, `static/index.html`).
"""
