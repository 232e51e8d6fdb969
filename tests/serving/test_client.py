"""The REST and gRPC clients (`glcic_tf.serving.client`) and serving/client.py.

The request builders and the gRPC client (against a loopback fake of TF Serving's gRPC
services) need no server; the REST round trip and the command line talk to `api`: the embedded
server in this process on the tiny export, or the server at `TFSERVING_REST_URL`.
"""

from __future__ import annotations

import concurrent.futures

import numpy as np
import pytest

from glcic_tf.serving import client as serving_client

from helpers.images import noise, png_bytes
from helpers.scripts import load_script
from helpers.serving import (MODEL, available_versions, check_completed_png, complete_locally,
                             make_mask)


def test_rest_predict_body_formats():
    rows = serving_client.rest_predict_body({"image_bytes": [b"ab"], "mask_bytes": [b"c"]})
    assert rows == {"signature_name": "serving_default",
                    "instances": [{"image_bytes": {"b64": "YWI="}, "mask_bytes": {"b64": "Yw=="}}]}
    cols = serving_client.rest_predict_body(
        {"image": np.zeros((1, 1, 1, 3), np.float32)}, "complete", "columns")
    assert cols == {"signature_name": "complete", "inputs": {"image": [[[[0.0, 0.0, 0.0]]]]}}
    with pytest.raises(ValueError, match="different batch sizes"):
        serving_client.rest_predict_body({"a": [b"x"], "b": [b"y", b"z"]})
    with pytest.raises(ValueError, match="format must be one of"):
        serving_client.rest_predict_body({"a": [b"x"]}, format="csv")
    assert serving_client.rest_outputs({"predictions": [{"b64": "YWI="}]}) == {"": [b"ab"]}
    assert serving_client.rest_outputs({"outputs": {"a": [1], "b": [{"b64": "Yw=="}]}}) == {
        "a": [1], "b": [b"c"]}


def test_grpc_predict_request_fields():
    from tensorflow.core.framework import types_pb2

    request = serving_client.build_predict_request(
        "glcic", {"image_bytes": [b"png1", b"png2"], "mask_bytes": [b"m1", b"m2"]}, version=3)
    assert request.model_spec.name == "glcic"
    assert request.model_spec.signature_name == "serving_default"
    assert request.model_spec.version.value == 3
    image = request.inputs["image_bytes"]
    assert image.dtype == types_pb2.DT_STRING
    assert [d.size for d in image.tensor_shape.dim] == [2]
    assert list(image.string_val) == [b"png1", b"png2"]

    arr = np.arange(12, dtype=np.float32).reshape(1, 2, 2, 3) / 12
    request = serving_client.build_predict_request("glcic", {"image": arr}, "complete",
                                                   label="stable")
    assert request.model_spec.version_label == "stable"
    assert not request.model_spec.HasField("version")
    proto = request.inputs["image"]
    assert proto.dtype == types_pb2.DT_FLOAT
    assert [d.size for d in proto.tensor_shape.dim] == [1, 2, 2, 3]
    np.testing.assert_array_equal(serving_client.tensor_proto_to_array(proto), arr)
    with pytest.raises(ValueError, match="not both"):
        serving_client.build_predict_request("glcic", {"image": arr}, version=1, label="x")
    status = serving_client.build_status_request("glcic", version=2)
    assert status.model_spec.name == "glcic" and status.model_spec.version.value == 2


def test_grpc_client_against_loopback_fake():
    import grpc
    from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

    class Fake(prediction_service_pb2_grpc.PredictionServiceServicer,
               model_service_pb2_grpc.ModelServiceServicer):
        """A loopback gRPC PredictionService/ModelService: echoes reversed image bytes."""

        def Predict(self, request, context):
            from tensorflow_serving.apis import predict_pb2

            if request.model_spec.name != "glcic":
                context.abort(grpc.StatusCode.NOT_FOUND, "Servable not found for request: "
                              f"Latest({request.model_spec.name})")
            images = list(request.inputs["image_bytes"].string_val)
            response = predict_pb2.PredictResponse()
            response.outputs["completed_bytes"].CopyFrom(
                serving_client.make_tensor_proto([i[::-1] for i in images]))
            return response

        def GetModelStatus(self, request, context):
            from tensorflow_serving.apis import get_model_status_pb2

            response = get_model_status_pb2.GetModelStatusResponse()
            status = response.model_version_status.add()
            status.version = 7
            status.state = get_model_status_pb2.ModelVersionStatus.AVAILABLE
            return response

    server = grpc.server(concurrent.futures.ThreadPoolExecutor(2))
    fake = Fake()
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(fake, server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(fake, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with serving_client.GrpcClient(f"127.0.0.1:{port}", "glcic", timeout=30) as client:
            assert client.complete(b"abc", b"m") == b"cba"
            assert client.complete([b"ab", b"cd"], [b"m", b"n"]) == [b"ba", b"dc"]
            assert client.status() == [{"version": 7, "state": "AVAILABLE", "error_code": 0,
                                        "error_message": ""}]
        with serving_client.GrpcClient(f"127.0.0.1:{port}", "nope", timeout=30) as client:
            with pytest.raises(serving_client.ServingError, match="NOT_FOUND: Servable not"):
                client.complete(b"abc", b"m")
    finally:
        server.stop(grace=None)


def test_rest_client_round_trip(api, local):
    image, mask = noise(32, 32, seed=6), make_mask()
    with serving_client.RestClient(api.url, MODEL, timeout=120) as client:
        assert available_versions(client.status())
        sigs = client.metadata()["metadata"]["signature_def"]["signature_def"]
        assert "complete" in sigs
        for fmt in serving_client.FORMATS:
            check_completed_png(client.complete(png_bytes(image), png_bytes(mask), format=fmt),
                                image, mask, local)
        image_f = (image[None] / 255.0).astype(np.float32)
        mask_f = (mask[None, ..., None] > 0).astype(np.float32)
        out = client.complete_arrays(image_f, mask_f)
        assert out.shape == (1, 32, 32, 3)
        expected = complete_locally(local, image_f, mask_f)
        if expected is not None:
            np.testing.assert_allclose(out, expected, atol=1e-6)
        with pytest.raises(serving_client.ServingError, match="400"):
            client.complete(b"not an image", png_bytes(mask))


def test_client_cli_rest(api, local, tmp_path, capsys):
    cli = load_script("serving/client.py")
    image, mask = noise(32, 32, seed=8), make_mask()
    (tmp_path / "in.png").write_bytes(png_bytes(image))
    (tmp_path / "mask.png").write_bytes(png_bytes(mask))
    out = tmp_path / "out" / "done.png"
    cli.main(cli.parse_args(["--url", api.url, "--model", MODEL,
                             "--image", str(tmp_path / "in.png"),
                             "--mask", str(tmp_path / "mask.png"),
                             "--out", str(out), "--format", "columns", "--status"]))
    stdout = capsys.readouterr().out
    assert "AVAILABLE" in stdout and "wrote" in stdout
    check_completed_png(out.read_bytes(), image, mask, local)
    with pytest.raises(SystemExit) as e:
        cli.main(cli.parse_args(["--url", api.url, "--model", "nope", "--status"]))
    assert "404" in str(e.value.code)
