"""Completing images with a trained network, in the order the data flows: images and masks
(`images`), the network's size (`sizing`), the TensorFlow ops shared with the SavedModel
(`ops`), post-processing (`postprocessing`, `poisson`), full-resolution regions (`regions`),
the `Completer` (`completer`) and folders of files (`files`); the SavedModel export (`export`,
`signatures`), the model shipped in the repository (`shipped`) and its before/after picture
(`before_after`)."""
