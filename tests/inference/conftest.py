"""The inference tests' shared Completer: one per session, so its tf.functions trace once."""

import pytest


@pytest.fixture(scope="session")
def completer(tiny_run):
    """`Completer.from_model` of the session's `tiny_run` (float32 Keras network). Read-only:
    tests that change an attribute (e.g. `warn`) build their own."""
    from glcic_tf.inference.completer import Completer

    _, config, model = tiny_run
    return Completer.from_model(config, model)
