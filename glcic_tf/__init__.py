"""glcic_tf: Globally and Locally Consistent Image Completion (Iizuka et al. 2017) in TF/Keras 3.

The subpackages follow a photo's path (docs/architecture.md has the map):

  config      frozen dataclass configs and named presets
  data        image files -> TFRecords (Beam) -> validated (TFDV) -> tf.data batches with holes
  networks    the paper's Table 1: completion network, context discriminators
  training    Algorithm 1's three phases, the run directory, the memory check
  inference   completing images, batch-norm folding, SavedModel export, the shipped model
  evaluation  metrics, classical baselines, held-out scores, learning curves
  serving     TensorFlow Serving's REST API (embedded server), clients, the /ui page
  torch7      the authors' released Torch7 networks
  benchmarks  speed and memory measurements (`make bench`)
  console     what the commands print (library noise hidden unless --verbose)

Submodules are imported on demand (`from glcic_tf.networks import models`); importing the
package does nothing else: no TensorFlow start-up, no environment changes, no files written.
"""

__version__ = "0.1.0"
