"""The bundled sample dataset: scikit-image's shipped photographs as train/val TFRecords.

`ensure_sample_dataset()` builds (once) and returns a directory with `sample-train-*.tfrecord`,
`sample-val-*.tfrecord`, `sample-rejects.jsonl` and `sample-dataset_info.json` (the dataset
`DIR/sample`, see `glcic_tf.data.datasets`), made by the SAME Beam
pipeline as real datasets (`glcic_tf.data.tfrecords.run`, DirectRunner) from the images inside the
installed scikit-image wheel. Only files present in the `skimage/data` package directory are
used: images that scikit-image fetches with pooch are never requested, so no network is needed.
Grayscale and RGBA photographs go through the usual normalisation (replicated to RGB,
composited over white), which exercises those paths too.

The build goes to a temporary sibling directory that is renamed into place, so an interrupted or
concurrent build never leaves a half-written cache; a directory holding the metadata is reused as
is. Default location: `$GLCIC_CACHE_DIR` if set, else `~/.cache/glcic_tf/sample_data_v4` (v4: one
metadata file per prefix; v3 caches had `dataset_info.json` and are left alone).
"""

from __future__ import annotations

import os
import shutil
import tempfile

from glcic_tf.data import datasets

SAMPLE_NAME = "sample"
CACHE_VERSION = "sample_data_v4"
VAL_FRACTION_TARGET = 0.1
MIN_VAL_IMAGES = 2

# Photographs (and photo-like scans) shipped inside the scikit-image 0.24 wheel, all with a
# shorter side >= 172 px. Synthetic pictures (chessboards, phantom, horse silhouette) and tiny
# files (microaneurysms 102 px, multipage.tif, the gif) are left out on purpose.
SAMPLE_FILES = (
    # RGB photographs
    "astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "hubble_deep_field.jpg",
    "ihc.png", "motorcycle_left.png", "motorcycle_right.png", "retina.jpg", "color.png",
    # RGBA (composited over white)
    "logo.png",
    # grayscale photographs and scans
    "camera.png", "moon.png", "coins.png", "page.png", "text.png", "clock_motion.png",
    "brick.png", "grass.png", "gravel.png", "cell.png",
)


def skimage_data_dir() -> str:
    """The `skimage/data` package directory of the installed scikit-image."""
    import skimage.data

    return os.path.dirname(os.path.abspath(skimage.data.__file__))


def sample_source_files() -> list[str]:
    """Absolute paths of the `SAMPLE_FILES` present on disk (the wheel's content)."""
    root = skimage_data_dir()
    files = [os.path.join(root, name) for name in SAMPLE_FILES
             if os.path.isfile(os.path.join(root, name))]
    if len(files) < 4:
        raise FileNotFoundError(
            f"only {len(files)} of the sample photographs were found in {root}; expected the "
            f"scikit-image wheel to ship {', '.join(SAMPLE_FILES)}")
    return files


def default_cache_dir() -> str:
    """`$GLCIC_CACHE_DIR` if set, else `~/.cache/glcic_tf/sample_data_v4`."""
    return os.environ.get("GLCIC_CACHE_DIR") or os.path.join(
        os.path.expanduser("~"), ".cache", "glcic_tf", CACHE_VERSION)


def sample_val_fraction(keys: list[str]) -> float:
    """A val fraction putting max(MIN_VAL_IMAGES, 10%) of `keys` in val under the hash split.

    The split sends a key to val iff int(key, 16) < fraction * 2**64, so the fraction is set
    halfway between the n-th and (n+1)-th smallest key: exactly n val images, deterministically.
    """
    positions = sorted(int(k, 16) / 2.0**64 for k in keys)
    n = min(len(positions) - 1, max(MIN_VAL_IMAGES, round(VAL_FRACTION_TARGET * len(positions))))
    return (positions[n - 1] + positions[n]) / 2.0


def ensure_sample_dataset(cache_dir: str | None = None) -> str:
    """Builds the sample dataset once and returns its directory.

    Args:
      cache_dir: where to keep it; default `default_cache_dir()`.

    Returns:
      A directory with the dataset `sample_prefix(dir)`: train/val shards
      (`sample_train_pattern(dir)`, `sample_val_pattern(dir)`) and its metadata.
    """
    from glcic_tf.data import tfrecords
    from glcic_tf.data.normalize import image_key

    cache_dir = os.path.abspath(cache_dir or default_cache_dir())
    if os.path.isfile(_info_file(cache_dir)):
        return cache_dir
    files = sample_source_files()
    root = skimage_data_dir()
    val_fraction = sample_val_fraction([image_key(f, root) for f in files])
    parent = os.path.dirname(cache_dir)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(cache_dir)}.tmp-", dir=parent)
    try:
        tfrecords.run(files, os.path.join(tmp, SAMPLE_NAME), shards=2, val_fraction=val_fraction,
                      min_side=128, key_root=root)
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; the cache is an ordinary directory
        if os.path.isdir(cache_dir):  # an incomplete leftover (no metadata)
            shutil.rmtree(cache_dir, ignore_errors=True)
        try:
            os.rename(tmp, cache_dir)
        except OSError:
            # A concurrent build won the race: use its (complete) result.
            if not os.path.isfile(_info_file(cache_dir)):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return cache_dir


def _info_file(directory: str) -> str:
    return datasets.info_path(sample_prefix(directory))


def sample_prefix(directory: str) -> str:
    """The sample dataset in `directory` (what `--data` takes)."""
    return os.path.join(directory, SAMPLE_NAME)


def sample_train_pattern(directory: str) -> str:
    """Glob of the sample dataset's train shards in `directory`."""
    return os.path.join(directory, f"{SAMPLE_NAME}-train-*.tfrecord")


def sample_val_pattern(directory: str) -> str:
    """Glob of the sample dataset's val shards in `directory`."""
    return os.path.join(directory, f"{SAMPLE_NAME}-val-*.tfrecord")
