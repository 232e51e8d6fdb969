"""Imports a `pipelines/*.py` script as a module, so tests call its `main(parse_args(...))`."""

import importlib.util
import os

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_pipeline(name: str):
    """The module of `pipelines/{name}.py` (scripts are not a package, so load by path)."""
    path = os.path.join(REPO, "pipelines", f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"{name}_cli", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
