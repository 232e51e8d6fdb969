"""glcic_tf: Globally and Locally Consistent Image Completion (Iizuka et al. 2017) in TF/Keras 3.

Submodules are imported on demand (`from glcic_tf import models`); importing the package does
nothing else: no TensorFlow start-up, no environment changes, no files written.
"""

__version__ = "0.1.0"
