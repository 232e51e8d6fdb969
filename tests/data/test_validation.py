"""glcic_tf.data.validation and pipelines/validate_data.py (TFDV: stats, schema, anomalies).

Shards are written directly with `schema.to_example_bytes` (no Beam conversion run); one
schema is inferred through the real CLI and reused by the other tests. The CLI runs in-process
(`main(parse_args(argv))`, exit status = return value) to avoid paying the TF/TFDV import again.
"""

import pytest
import tensorflow as tf

from glcic_tf.data import validation
from glcic_tf.data.schema import (
    FEATURE_CHANNELS,
    FEATURE_ENCODED,
    FEATURE_FORMAT,
    FEATURE_HEIGHT,
    FEATURE_KEY,
    FEATURE_WIDTH,
)

from helpers.data import write_records
from helpers.images import example_bytes, noise
from helpers.scripts import load_pipeline


def _cli(argv, capsys):
    module = load_pipeline("validate_data")
    capsys.readouterr()
    code = module.main(module.parse_args(argv))
    return code, capsys.readouterr().out


def _example(seed, h, w, fmt):
    """A tf.train.Example of random pixels (to edit before writing)."""
    return tf.train.Example.FromString(example_bytes(f"img_{seed}.{fmt}", noise(h, w, seed), fmt))


def _write(path, examples):
    write_records(path, [ex.SerializeToString() for ex in examples])


def _examples(n, seed=0):
    return [_example(seed + i, 128 + 4 * i, 160 - 3 * i, "png" if i % 3 else "jpeg")
            for i in range(n)]


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    """Good train/val shards (a schema is inferred from them by the first test)."""
    root = tmp_path_factory.mktemp("tfdv")
    _write(root / "good-train-00000-of-00001.tfrecord", _examples(8))
    _write(root / "good-val-00000-of-00001.tfrecord", _examples(3, seed=50))
    return {"root": root, "out": root / "report"}


@pytest.fixture(scope="module")
def schema_path(good):
    path = good["out"] / "schema.pbtxt"
    if not path.is_file():
        validation.validate(str(good["root"] / "good-train-*.tfrecord"), str(good["out"]))
    return str(path)


def test_cli_passes_on_good_shards(good, capsys):
    root, out = good["root"], good["out"]
    code, stdout = _cli(["--data", str(root / "good-train-*.tfrecord"),
                         "--compare", str(root / "good-val-*.tfrecord"), "--out", str(out)],
                        capsys)
    assert code == 0, stdout
    assert "no anomalies" in stdout and "(inferred)" in stdout
    for name in ("schema.pbtxt", "stats.tfrecord", "compare_stats.tfrecord", "anomalies.pbtxt",
                 "stats.html", "drift_anomalies.pbtxt"):
        assert (out / name).is_file(), name
    page = (out / "stats.html").read_text()
    assert "image/channels" in page and "<table>" in page and "8 examples" in page


def test_inferred_schema_is_tightened(schema_path):
    import tensorflow_data_validation as tfdv

    schema = tfdv.load_schema_text(schema_path)
    features = {f.name: f for f in schema.feature}
    assert set(features) == set(validation.ALL_FEATURES)
    for f in features.values():
        assert f.presence.min_fraction == 1.0
        assert (f.value_count.min, f.value_count.max) == (1, 1)
    channels = features[FEATURE_CHANNELS].int_domain
    assert (channels.min, channels.max) == (3, 3)
    assert features[FEATURE_HEIGHT].int_domain.min == 128
    assert features[FEATURE_WIDTH].int_domain.min == 128
    assert list(features[FEATURE_FORMAT].string_domain.value) == ["jpeg", "png"]
    assert features[FEATURE_ENCODED].image_domain.minimum_supported_image_fraction == 1.0


def test_cli_flags_wrong_channel_count(good, schema_path, capsys):
    root = good["root"]
    examples = _examples(4, seed=100)
    examples[1].features.feature[FEATURE_CHANNELS].int64_list.value[:] = [1]
    _write(root / "channels.tfrecord", examples)
    code, stdout = _cli(["--data", str(root / "channels.tfrecord"),
                         "--out", str(root / "channels_report"), "--schema", schema_path], capsys)
    assert code == 1, stdout
    assert "image/channels: Out-of-range values" in stdout
    assert (root / "channels_report" / "anomalies.pbtxt").is_file()
    assert not (root / "channels_report" / "schema.pbtxt").exists()  # given, not inferred


def test_flags_missing_feature_and_broken_images(good, schema_path):
    root = good["root"]
    examples = _examples(4, seed=200)
    del examples[2].features.feature[FEATURE_KEY]
    examples[3].features.feature[FEATURE_ENCODED].bytes_list.value[:] = [b"not an image"]
    examples[3].features.feature[FEATURE_FORMAT].bytes_list.value[:] = [b"gif"]
    _write(root / "broken.tfrecord", examples)
    result = validation.validate(str(root / "broken.tfrecord"), str(root / "broken_report"),
                                 schema_path=schema_path)
    assert not result.ok
    text = "\n".join(result.anomalies)
    assert "image/key: Column dropped" in text
    assert "image/encoded: Low supported image fraction" in text
    assert "image/format: Unexpected string values" in text and "gif" in text


def test_drift_is_reported_separately(good, schema_path, tmp_path):
    # Train: JPEG and PNG mixed; compare: only big PNGs -> format and size drift, but valid.
    big = [_example(300 + i, 400, 500, "png") for i in range(3)]
    _write(tmp_path / "big.tfrecord", big)
    result = validation.validate(str(good["root"] / "good-train-*.tfrecord"), str(tmp_path / "r"),
                                 schema_path=schema_path,
                                 compare_pattern=str(tmp_path / "big.tfrecord"))
    assert result.ok and result.anomalies == []
    drift = "\n".join(result.drift)
    assert "drift: image/height" in drift and "Jensen-Shannon" in drift


def test_clear_errors(tmp_path):
    missing, unused = tmp_path / "nonexistent", str(tmp_path / "unused")
    with pytest.raises(FileNotFoundError, match="no TFRecord files? match"):
        validation.validate(str(missing / "*.tfrecord"), unused)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        validation.validate(str(missing / "*.tfrecord"), unused,
                            schema_path=str(missing / "schema.pbtxt"))


def test_cli_dataset_prefix_validates_train_against_its_val_split(tmp_path, capsys):
    from helpers.datasets import write_dataset

    prefix = str(tmp_path / "shards" / "urban")
    write_dataset(prefix, train=6, val=3, shards=(2, 1), size=(40, 48))
    write_dataset(str(tmp_path / "shards" / "bsd"), train=2, val=1, size=(30, 30))  # neighbour
    out = tmp_path / "report"
    code, stdout = _cli(["--data", prefix, "--out", str(out)], capsys)
    assert code == 0, stdout
    assert "no anomalies" in stdout
    assert f"between --data and {prefix} (val split)" in stdout
    assert (out / "compare_stats.tfrecord").is_file()
    import tensorflow_data_validation as tfdv

    stats = tfdv.load_statistics(str(out / "stats.tfrecord"))
    assert stats.datasets[0].num_examples == 6  # the train split only, not bsd's
    schema = tfdv.load_schema_text(str(out / "schema.pbtxt"))
    assert tfdv.get_feature(schema, FEATURE_HEIGHT).int_domain.min == 40  # its min_side


def test_cli_glob_catching_a_json_file_names_it(tmp_path, capsys):
    from helpers.datasets import write_dataset

    write_dataset(str(tmp_path / "out" / "data"), train=2, val=1)
    module = load_pipeline("validate_data")
    code = module.main(module.parse_args(["--data", str(tmp_path / "out" / "data*"),
                                          "--out", str(tmp_path / "r")]))
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1
    assert f"{tmp_path / 'out' / 'data-dataset_info.json'}: no TFRecord framing" in err
    assert "expected TFRecord files of tf.train.Example records" in err


@pytest.mark.slow  # three TFDV comparisons: about 25 s on a quiet 2-core machine
def test_cli_fail_on_drift_exits_1_on_a_drifting_pair_and_0_on_a_steady_one(
        good, schema_path, tmp_path, capsys):
    module = load_pipeline("validate_data")
    train = str(good["root"] / "good-train-*.tfrecord")
    # Drifting: only big PNGs against train's mixed JPEG / PNG of 128-156 px.
    _write(tmp_path / "big.tfrecord", [_example(400 + i, 400, 500, "png") for i in range(3)])
    # Steady: train's sizes and formats, other pixels.
    _write(tmp_path / "steady.tfrecord", _examples(8, seed=500))

    def run(compare, *flags):
        capsys.readouterr()
        code = module.main(module.parse_args(["--data", train, "--compare", str(compare),
                                              "--schema", schema_path, "--out",
                                              str(tmp_path / "r"), *flags]))
        return (code, *capsys.readouterr())

    code, out, err = run(tmp_path / "big.tfrecord", "--fail-on-drift")
    assert code == 1, out
    assert "no anomalies" in out  # the data is valid: the status is the drift's
    assert f"drift findings between --data and {tmp_path / 'big.tfrecord'}:" in out
    assert "drift: image/height" in out and "Jensen-Shannon divergence" in out
    assert "drift: image/format" in out
    assert err.strip() == (f"error: drift between --data and {tmp_path / 'big.tfrecord'} "
                           f"(--fail-on-drift); see the findings above")
    code, out, err = run(tmp_path / "big.tfrecord")
    assert code == 0 and "drift findings" in out and err == ""  # drift alone: reported only
    code, out, err = run(tmp_path / "steady.tfrecord", "--fail-on-drift")
    assert code == 0, out
    assert f"no drift between --data and {tmp_path / 'steady.tfrecord'}" in out and err == ""
