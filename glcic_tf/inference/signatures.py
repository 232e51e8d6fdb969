"""The SavedModel's signatures: what TF Serving and `tf.saved_model.load` users call.

Batch and spatial dimensions are dynamic; the graph holds stock TensorFlow ops only.

* `serving_default`: inputs `image_bytes` and `mask_bytes`, tf.string [None], encoded PNG/JPEG/
  BMP/GIF (so TF Serving's REST `{"b64": ...}` convention applies); output `completed_bytes`,
  tf.string [None], PNG. Each element is decoded (image as RGB; mask with any channel count,
  reduced to luma times alpha, >= 0.2 = hole), completed with `ops.complete_full_resolution`
  (long side scaled down to `maxdim`, sides rounded to multiples of 4, the config's input
  convention, composite at the original resolution, pixels outside the hole unchanged),
  post-processed at the original resolution when the export asks for it
  (`glcic_tf.inference.poisson`) and PNG-encoded, one element at a time with tf.map_fn so
  images in one request may differ in size. A mask whose size differs from its image fails the
  request with INVALID_ARGUMENT ("mask_bytes: mask size differs from image_bytes size"). An
  empty mask returns the image unchanged.
* `serving_float`: the same pipeline on float tensors: inputs `image` float32
  [None, None, None, 3] in [0, 1] and `mask` float32 [None, None, None, 1] (>= 0.2 = hole), any
  height and width; output `completed` float32 (not rounded to 8 bits).
* `complete`: the network alone: inputs `image` float32 [None, None, None, 3] in [0, 1] and
  `mask` float32 [None, None, None, 1] (>= 0.2 = hole); output `completed` float32
  [None, None, None, 3]: the network's output inside the hole, `image` outside, never
  post-processed. H and W must be multiples of 4 (else INVALID_ARGUMENT); no resizing happens.

`build_module` returns the tf.Module whose tf.functions are these signatures;
`glcic_tf.inference.export` saves it with its assets.
"""

from __future__ import annotations

from glcic_tf.inference.images import HOLE_THRESHOLD
from glcic_tf.inference.ops import complete_full_resolution, keras_complete_fn, mask_gray_tf
from glcic_tf.inference.ops import to_uint8_tf
from glcic_tf.networks.folding import FoldedNetwork

SIGNATURE_BYTES = "serving_default"
SIGNATURE_FLOAT = "serving_float"
SIGNATURE_NETWORK = "complete"


def build_module(model, config, maxdim: int, postprocess: str):
    """A tf.Module holding `model` with the three signatures as tf.functions.

    Args:
      model: the completion network: a Keras model or a `FoldedNetwork` (its variables are
        tracked, so they are saved).
      config: the GLCICConfig it was trained with (`config.data`: input convention, mean pixel).
      maxdim: long side `serving_default` and `serving_float` scale images down to.
      postprocess: "in-graph" (the paper's post-processing in those two signatures) or "none".
    """
    import tensorflow as tf

    from glcic_tf.inference import poisson

    complete_batch = keras_complete_fn(model, config.data)
    maxdim = int(maxdim)

    def complete_one(image, hole):
        """image [H, W, 3] float32, hole [H, W, 1] 0/1 -> the served completion, float32."""
        out = complete_full_resolution(image, hole, complete_batch, maxdim)
        if postprocess == "in-graph":
            out = poisson.postprocess_image(out, hole)
        return out

    class GLCICModule(tf.Module):
        """Holds the completion network; its tf.functions are the exported signatures."""

        def __init__(self):
            super().__init__(name="glcic")
            if isinstance(model, FoldedNetwork) and model.source_model is None:
                self.folded_variables = list(model.variables)  # tracked, so they are saved
            else:  # a Keras model, or one folded live from its variables: saved as Keras's
                self.completion = getattr(model, "source_model", None) or model

        @tf.function(input_signature=[
            tf.TensorSpec([None, None, None, 3], tf.float32, name="image"),
            tf.TensorSpec([None, None, None, 1], tf.float32, name="mask")])
        def complete(self, image, mask):
            shape = tf.shape(image)
            checks = [
                tf.debugging.assert_equal(
                    tf.shape(mask)[:3], shape[:3],
                    message="complete: mask must have the image's batch size, height and "
                            "width"),
                tf.debugging.assert_equal(
                    shape[1:3] % 4, tf.zeros([2], tf.int32),
                    message="complete: image height and width must be multiples of 4 "
                            "(resize first; serving_default accepts any size)"),
            ]
            with tf.control_dependencies(checks):
                hole = tf.cast(mask >= HOLE_THRESHOLD, tf.float32)
                completed = complete_batch(image, hole)
            return {"completed": tf.cast(completed, tf.float32)}

        @tf.function(input_signature=[
            tf.TensorSpec([None], tf.string, name="image_bytes"),
            tf.TensorSpec([None], tf.string, name="mask_bytes")])
        def serving_default(self, image_bytes, mask_bytes):
            tf.debugging.assert_equal(
                tf.size(image_bytes), tf.size(mask_bytes),
                message="serving_default: image_bytes and mask_bytes need as many elements")

            def one(args):
                encoded_image, encoded_mask = args
                image = tf.io.decode_image(encoded_image, channels=3, expand_animations=False)
                mask = tf.io.decode_image(encoded_mask, channels=0, expand_animations=False)
                check = tf.debugging.assert_equal(
                    tf.shape(mask)[:2], tf.shape(image)[:2],
                    message="mask_bytes: mask size (height, width) differs from image_bytes "
                            "size")
                with tf.control_dependencies([check]):
                    image_f = tf.image.convert_image_dtype(image, tf.float32)
                    gray = mask_gray_tf(tf.image.convert_image_dtype(mask, tf.float32))
                hole = tf.cast(gray >= HOLE_THRESHOLD, tf.float32)
                out = complete_one(image_f, hole)
                out = tf.where(hole > 0, to_uint8_tf(out), image)
                return tf.io.encode_png(out)

            completed = tf.map_fn(one, (image_bytes, mask_bytes),
                                  fn_output_signature=tf.TensorSpec([], tf.string))
            return {"completed_bytes": completed}

        @tf.function(input_signature=[
            tf.TensorSpec([None, None, None, 3], tf.float32, name="image"),
            tf.TensorSpec([None, None, None, 1], tf.float32, name="mask")])
        def serving_float(self, image, mask):
            check = tf.debugging.assert_equal(
                tf.shape(mask)[:3], tf.shape(image)[:3],
                message="serving_float: mask must have the image's batch size, height and "
                        "width")
            with tf.control_dependencies([check]):
                hole = tf.cast(mask >= HOLE_THRESHOLD, tf.float32)

            def one(args):
                one_image, one_hole = args
                out = complete_one(one_image, one_hole)
                return one_image * (1.0 - one_hole) + out * one_hole

            completed = tf.map_fn(one, (image, hole),
                                  fn_output_signature=tf.TensorSpec([None, None, 3],
                                                                    tf.float32))
            return {"completed": completed}

    return GLCICModule()
