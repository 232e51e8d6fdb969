"""SavedModel export: layout, versions, signatures, reload without glcic_tf, bf16, CLI."""

from pipeline_scripts import load_pipeline
import io
import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from glcic_tf import completion, export, masks, models, poisson, runs
from glcic_tf.benchmarks.completion import he_normal_weights, psnr
from glcic_tf.config import GLCICConfig, get_preset

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WIDTH = 1 / 16
STEP = 321


def make_run_dir(path, width=WIDTH, seed=0, step=STEP):
    """A training run dir as training writes it: config.json + a CheckpointManager checkpoint."""
    config = get_preset("tiny").override(
        {"model.width": width, "data.mean_pixel": [0.5, 0.4, 0.3]})
    keras.utils.set_random_seed(seed)
    model = models.completion_network(config.model.width, config.model)
    he_normal_weights(model, seed)
    runs.save_completion_run(path, config, model, step=step)
    return config, model


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    run_dir = str(root / "run")
    config, model = make_run_dir(run_dir)
    base = str(root / "models" / "glcic")
    fp32 = export.export_from_run(run_dir, base)
    bf16 = export.export_from_run(run_dir, base, precision="bfloat16")
    return {"root": root, "run_dir": run_dir, "config": config, "model": model, "base": base,
            "fp32": fp32, "bf16": bf16}


def png_bytes(array):
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "PNG")
    return buffer.getvalue()


def keras_composite(model, config, image, mask):
    out = model(masks.network_inputs(image, mask, config.data), training=False)
    return masks.composite(out, image, mask).numpy()


def test_layout_versions_and_assets(exported):
    base = exported["base"]
    assert exported["fp32"] == os.path.join(base, "1")
    assert exported["bf16"] == os.path.join(base, "2")
    assert sorted(os.listdir(base)) == ["1", "2"]  # no staging leftovers
    for version in ("1", "2"):
        names = set(os.listdir(os.path.join(base, version)))
        assert {"saved_model.pb", "variables", "assets"} <= names
    assets = os.path.join(exported["fp32"], "assets")
    assert GLCICConfig.load(os.path.join(assets, "config.json")) == exported["config"]
    with open(os.path.join(assets, "mean_pixel.json")) as f:
        assert json.load(f)["mean_pixel"] == [0.5, 0.4, 0.3]
    with open(os.path.join(assets, "model_card.md")) as f:
        card = f.read()
    for text in ("321 training steps", "`tiny`", "mean_fill", "serving_default", "complete",
                 "Intended use", "Limitations"):
        assert text in card, text
    with open(os.path.join(exported["bf16"], "assets", "export.json")) as f:
        info = json.load(f)
    assert info["precision"] == "bfloat16" and info["step"] == STEP
    # The default maxdim follows the training crop: 500 px for 256 px crops, 124 for 64 px.
    assert info["maxdim"] == completion.default_maxdim(exported["config"]) == 124
    assert info["fold_batch_norm"] is True  # bf16 runs the folded network by default
    assert info["postprocess"] == "in-graph"  # the default
    assert info["signatures"] == ["serving_default", "serving_float", "complete"]
    assert "Post-processing (`serving_default`, `serving_float`): in the graph" in card
    assert export.next_version(base) == 3
    assert export.latest_version_dir(base) == exported["bf16"]
    assert export.next_version(str(exported["root"] / "nothing")) == 1


def test_refuses_to_overwrite_and_rejects_bad_arguments(exported):
    model, config, base = exported["model"], exported["config"], exported["base"]
    before = os.path.getmtime(os.path.join(base, "1", "saved_model.pb"))
    with pytest.raises(export.ExportError, match=r"glcic/1 already exists: refusing to "
                                                 r"overwrite version 1"):
        export.export_saved_model(model, config, base, version=1)
    with pytest.raises(export.ExportError, match="precision must be one of"):
        export.export_saved_model(model, config, base, precision="float16")
    with pytest.raises(export.ExportError, match="version must be a positive integer"):
        export.export_saved_model(model, config, base, version=0)
    with pytest.raises(export.ExportError, match="postprocess must be one of"):
        export.export_saved_model(model, config, base, postprocess="opencv")
    assert os.path.getmtime(os.path.join(base, "1", "saved_model.pb")) == before
    assert sorted(os.listdir(base)) == ["1", "2"]


def test_graph_uses_only_registered_stock_ops(exported):
    from tensorflow.core.protobuf import saved_model_pb2
    from tensorflow.python.framework import op_def_registry

    saved = saved_model_pb2.SavedModel()
    with open(os.path.join(exported["bf16"], "saved_model.pb"), "rb") as f:
        saved.ParseFromString(f.read())
    graph = saved.meta_graphs[0].graph_def
    ops = {n.op for n in graph.node}
    for function in graph.library.function:
        ops |= {n.op for n in function.node_def}
    assert {"DecodeImage", "EncodePng", "Conv2D"} <= ops
    # The in-graph post-processing (pyramids, box write-back) is in the graph, in stock ops.
    assert {"AvgPool", "MaxPool", "TensorStridedSliceUpdate", "While"} <= ops
    assert not ops & {"PyFunc", "PyFuncStateless", "EagerPyFunc"}
    assert [op for op in ops if op_def_registry.get(op) is None] == []


def test_reload_without_glcic_tf_matches_keras(exported, tmp_path):
    """A fresh interpreter that cannot import glcic_tf gets the Keras model's results."""
    config, model = exported["config"], exported["model"]
    rng = np.random.default_rng(0)
    image = rng.random((2, 32, 48, 3)).astype(np.float32)
    mask = np.zeros((2, 32, 48, 1), np.float32)
    mask[0, 4:20, 8:30] = 1.0
    mask[1, 10:28, 20:44] = 1.0
    expected_complete = keras_composite(model, config, image, mask)
    # serving_default: two images of different sizes in one batch; the first needs no
    # resizing (compared with the Keras composite), the second is odd-sized (compared with
    # the Completer, which runs the same resizing in TensorFlow ops).
    image_a = np.round(image[0] * 255).astype(np.uint8)
    hole_a = mask[0, ..., 0] > 0
    image_b = (rng.random((37, 51, 3)) * 255).astype(np.uint8)
    hole_b = np.zeros((37, 51), bool)
    hole_b[5:30, 10:40] = True
    x = image_a[None].astype(np.float32) / 255.0
    hole_a_f = hole_a[..., None].astype(np.float32)
    keras_a = keras_composite(model, config, x, hole_a_f[None])[0]
    # serving_default post-processes in the graph (the export's default): the Keras composite
    # through poisson.postprocess_image, and the Completer's in-graph mode for image b.
    keras_a = np.round(poisson.postprocess_image(keras_a, hole_a_f).numpy() * 255)
    keras_a = keras_a.astype(np.uint8)
    completer_b = completion.Completer.from_model(config, model).complete(
        image_b, hole_b, postprocess="in-graph")
    raw_b = completion.Completer.from_model(config, model).complete(
        image_b, hole_b, postprocess="none")
    assert np.abs(raw_b.astype(int) - completer_b).max() > 10  # post-processing shows
    mask_rgba_b = np.zeros((37, 51, 4), np.uint8)
    mask_rgba_b[hole_b] = 255  # RGBA mask: white, opaque = hole
    np.savez(tmp_path / "data.npz", image=image, mask=mask, expected_complete=expected_complete,
             keras_a=keras_a, completer_b=completer_b, image_b=image_b, hole_b=hole_b,
             image_bytes=np.array([png_bytes(image_a), png_bytes(image_b)], dtype=object),
             mask_bytes=np.array([png_bytes(np.where(hole_a, 255, 0).astype(np.uint8)),
                                  png_bytes(mask_rgba_b)], dtype=object),
             bad_mask=np.array([png_bytes(np.full((30, 51), 255, np.uint8))], dtype=object))
    script = textwrap.dedent(f"""
        import importlib.util, json, sys
        # Hide glcic_tf: drop the editable-install finder and the repository root from the path
        # (-I already leaves out the working directory and PYTHON* variables).
        sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in repr(f).lower()]
        sys.path[:] = [p for p in sys.path if p and p.rstrip("/") != {REPO!r}]
        assert importlib.util.find_spec("glcic_tf") is None, "glcic_tf is importable"
        import numpy as np, tensorflow as tf, io
        from PIL import Image
        d = np.load("data.npz", allow_pickle=True)
        result = {{}}
        loaded = tf.saved_model.load({exported["fp32"]!r})
        got = loaded.signatures["complete"](image=tf.constant(d["image"]),
                                            mask=tf.constant(d["mask"]))["completed"].numpy()
        result["complete_max_abs"] = float(np.abs(got - d["expected_complete"]).max())
        out = loaded.signatures["serving_default"](
            image_bytes=tf.constant(list(d["image_bytes"])),
            mask_bytes=tf.constant(list(d["mask_bytes"])))["completed_bytes"].numpy()
        a, b = (np.asarray(Image.open(io.BytesIO(o))) for o in out)
        result["shapes"] = [list(a.shape), list(b.shape)]
        result["a_max_diff"] = int(np.abs(a.astype(int) - d["keras_a"]).max())
        result["b_max_diff"] = int(np.abs(b.astype(int) - d["completer_b"]).max())
        flt = loaded.signatures["serving_float"](
            image=tf.constant(d["image_b"][None] / 255.0, tf.float32),
            mask=tf.constant(d["hole_b"][None, ..., None], tf.float32))["completed"].numpy()[0]
        result["float_vs_bytes"] = int(np.abs(np.round(flt * 255) - b).max())
        try:
            loaded.signatures["serving_default"](image_bytes=tf.constant(list(d["image_bytes"][1:])),
                                                 mask_bytes=tf.constant(list(d["bad_mask"])))
            result["mismatch_error"] = None
        except tf.errors.InvalidArgumentError as e:
            result["mismatch_error"] = e.message
        bf16 = tf.saved_model.load({exported["bf16"]!r})
        got16 = bf16.signatures["complete"](image=tf.constant(d["image"]),
                                            mask=tf.constant(d["mask"]))["completed"].numpy()
        hole = d["mask"][..., 0] > 0
        mse = float(np.mean((got16[hole] - got[hole]) ** 2))
        result["bf16_psnr_hole_db"] = 10 * np.log10(1.0 / mse) if mse else 999.0
        result["glcic_tf_loaded"] = any(m.startswith("glcic_tf") for m in sys.modules)
        print("RESULT " + json.dumps(result))
    """)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    proc = subprocess.run([sys.executable, "-I", "-c", script], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")][-1]
    result = json.loads(line[len("RESULT "):])
    assert result["glcic_tf_loaded"] is False
    assert result["complete_max_abs"] <= 1e-5
    assert result["shapes"] == [[32, 48, 3], [37, 51, 3]]
    assert result["a_max_diff"] <= 1 and result["b_max_diff"] <= 1
    assert result["float_vs_bytes"] <= 1
    assert "mask_bytes: mask size (height, width) differs from image_bytes size" in (
        result["mismatch_error"] or "")
    print(f"bf16 vs fp32 PSNR inside the holes (width {WIDTH}): "
          f"{result['bf16_psnr_hole_db']:.1f} dB")
    assert result["bf16_psnr_hole_db"] >= 30.0


def test_saved_model_cli_lists_both_signatures(exported):
    cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run([cli, "show", "--all", "--dir", exported["fp32"]], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    text = proc.stdout

    def section(name):
        start = text.index(f"signature_def['{name}']")
        end = text.find("signature_def[", start + 1)
        return text[start:end if end > 0 else len(text)]

    default, complete = section("serving_default"), section("complete")
    floats = section("serving_float")
    for key, channels in (("inputs['image']", 3), ("inputs['mask']", 1),
                          ("outputs['completed']", 3)):
        block = floats[floats.index(key):][:120]
        assert "dtype: DT_FLOAT" in block and f"shape: (-1, -1, -1, {channels})" in block, block
    for key in ("inputs['image_bytes']", "inputs['mask_bytes']", "outputs['completed_bytes']"):
        block = default[default.index(key):][:120]
        assert "dtype: DT_STRING" in block and "shape: (-1)" in block, block
    for key, channels in (("inputs['image']", 3), ("inputs['mask']", 1),
                          ("outputs['completed']", 3)):
        block = complete[complete.index(key):][:120]
        assert "dtype: DT_FLOAT" in block and f"shape: (-1, -1, -1, {channels})" in block, block


def test_complete_signature_and_completer_from_saved_model(exported):
    loaded = tf.saved_model.load(exported["fp32"])
    with pytest.raises(tf.errors.InvalidArgumentError, match="multiples of 4"):
        loaded.signatures["complete"](image=tf.zeros([1, 30, 32, 3]),
                                      mask=tf.ones([1, 30, 32, 1]))
    config, model = exported["config"], exported["model"]
    image = (np.random.default_rng(1).random((45, 61, 3)) * 255).astype(np.uint8)
    hole = np.zeros((45, 61), bool)
    hole[10:30, 5:50] = True
    from_model = completion.Completer.from_model(config, model)
    from_saved = completion.Completer.from_path(exported["fp32"])
    assert from_saved.config == config and from_saved.step == STEP
    for post in ("opencv", "in-graph", "none"):
        a = from_model.complete(image, hole, postprocess=post)
        b = from_saved.complete(image, hole, postprocess=post)
        assert np.abs(a.astype(int) - b).max() <= 1
    # A TF Serving base path resolves to its highest version (the bf16 export).
    latest = completion.Completer.from_path(exported["base"])
    assert latest.source.endswith(os.path.join("glcic", "2"))
    c = latest.complete(image, hole, postprocess=False)
    assert psnr(c[hole] / 255.0, a[hole] / 255.0) > 30
    assert latest.precision == "bfloat16"
    with open(os.path.join(exported["bf16"], "assets", "export.json")) as f:
        layer_dtypes = json.load(f)["layer_dtypes"]
    # Kernel and bias per convolution, in layer order; the documented layers stay float32.
    dtypes = [v.dtype.name for v in latest._loaded.folded_variables]
    assert dtypes[0::2] == dtypes[1::2] == list(layer_dtypes.values())
    assert [n for n, d in layer_dtypes.items() if d == "float32"] == list(
        completion.BFLOAT16_FLOAT32_LAYERS)


def test_saved_model_precision_is_the_exports(exported, tmp_path, capsys):
    with pytest.raises(completion.CompletionError,
                       match=r"glcic/1: this SavedModel computes in float32 .*not bfloat16"):
        completion.Completer.from_path(exported["fp32"], precision="bfloat16")
    assert completion.Completer.from_path(exported["fp32"], "float32").precision == "float32"
    assert completion.Completer.from_path(exported["base"], "bfloat16").precision == "bfloat16"
    cli = load_pipeline("complete")
    image = str(tmp_path / "in.png")
    Image.fromarray(np.full((32, 32, 3), 128, np.uint8)).save(image)
    code = cli.main(cli.parse_args(["--model", exported["fp32"], "--image", image,
                                    "--out", str(tmp_path / "out.png"),
                                    "--precision", "bfloat16"]))
    err = capsys.readouterr().err
    assert code == 1 and "computes in float32" in err and "fixed at export" in err


def test_bfloat16_export_without_folding_keeps_the_float32_layers(exported):
    config, model = exported["config"], exported["model"]
    path = export.export_saved_model(model, config, str(exported["root"] / "unfolded"),
                                     precision="bfloat16", fold_batch_norm=False)
    with open(os.path.join(path, "assets", "export.json")) as f:
        info = json.load(f)
    assert info["fold_batch_norm"] is False
    assert info["float32_layers"] == list(completion.BFLOAT16_FLOAT32_LAYERS)
    assert [n for n, d in info["layer_dtypes"].items() if d == "float32"] == list(
        completion.BFLOAT16_FLOAT32_LAYERS)
    assert len(info["layer_dtypes"]) == 17
    rng = np.random.default_rng(3)
    image = rng.random((1, 32, 40, 3)).astype(np.float32)
    mask = np.zeros((1, 32, 40, 1), np.float32)
    mask[:, 8:24, 4:36] = 1.0
    got = tf.saved_model.load(path).signatures["complete"](image=image, mask=mask)
    assert psnr(got["completed"].numpy(), keras_composite(model, config, image, mask)) > 36.0
    with pytest.raises(export.ExportError, match=r"float32_layers: \['nope'\]"):
        export.export_saved_model(model, config, str(exported["root"] / "bad"),
                                  precision="bfloat16", float32_layers=("nope",))


def test_float32_export_with_folded_batch_norm(exported):
    config, model = exported["config"], exported["model"]
    path = export.export_saved_model(model, config, str(exported["root"] / "folded"),
                                     fold_batch_norm=True)
    loaded = tf.saved_model.load(path)
    rng = np.random.default_rng(2)
    image = rng.random((1, 32, 40, 3)).astype(np.float32)
    mask = np.zeros((1, 32, 40, 1), np.float32)
    mask[:, 8:24, 4:36] = 1.0
    got = loaded.signatures["complete"](image=image, mask=mask)["completed"].numpy()
    np.testing.assert_allclose(got, keras_composite(model, config, image, mask), atol=1e-4)


def test_export_cli_untrained_warns_and_refuses_overwrite(tmp_path, capsys):
    cli = load_pipeline("export")
    base = str(tmp_path / "glcic")
    assert cli.main(cli.parse_args(["--out", base, "--preset", "tiny"])) == 0
    captured = capsys.readouterr()
    assert "WARNING" in captured.err and "UNTRAINED" in captured.err
    assert os.path.isfile(os.path.join(base, "1", "saved_model.pb"))
    with open(os.path.join(base, "1", "assets", "model_card.md")) as f:
        assert "NOT TRAINED" in f.read()
    assert cli.main(cli.parse_args(["--out", base, "--preset", "tiny", "--version", "1"])) == 1
    err = capsys.readouterr().err
    assert "already exists: refusing to overwrite version 1" in err


def test_export_without_postprocessing_serves_the_raw_composite(tmp_path, capsys):
    cli = load_pipeline("export")
    base = str(tmp_path / "glcic")
    assert cli.main(cli.parse_args(["--out", base, "--preset", "tiny",
                                    "--postprocess", "none"])) == 0
    assert "post-processing: none" in capsys.readouterr().out
    version = os.path.join(base, "1")
    with open(os.path.join(version, "assets", "export.json")) as f:
        assert json.load(f)["postprocess"] == "none"
    with open(os.path.join(version, "assets", "model_card.md")) as f:
        assert "none (the raw composite" in f.read()
    rng = np.random.default_rng(4)
    image = (rng.random((36, 44, 3)) * 255).astype(np.uint8)
    hole = np.zeros((36, 44), bool)
    hole[6:30, 8:40] = True
    served = tf.io.decode_png(tf.saved_model.load(version).signatures["serving_default"](
        image_bytes=tf.constant([tf.io.encode_png(image).numpy()]),
        mask_bytes=tf.constant([tf.io.encode_png(hole[..., None].astype(np.uint8) * 255)
                                .numpy()]))["completed_bytes"][0]).numpy()
    completer = completion.Completer.from_path(version)
    raw = completer.complete(image, hole, postprocess="none")
    assert np.abs(served.astype(int) - raw).max() <= 1
    post = completer.complete(image, hole, postprocess="in-graph")
    assert np.abs(served.astype(int) - post).max() > 10
