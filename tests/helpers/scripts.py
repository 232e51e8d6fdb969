"""Imports a repository script (`pipelines/*.py`, `serving/*.py`) as a module, so tests call
its `main(parse_args(...))` in-process; and waits on a script run as a subprocess."""

import importlib.util
import os
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def load_script(relative: str):
    """The module of the script at `relative` (scripts are not a package, so load by path)."""
    path = os.path.join(REPO, relative)
    name = os.path.splitext(os.path.basename(relative))[0]
    spec = importlib.util.spec_from_file_location(f"{name}_cli", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_pipeline(name: str):
    """The module of `pipelines/{name}.py`."""
    return load_script(os.path.join("pipelines", f"{name}.py"))


def wait_until(proc, log, done, what: str, seconds: float = 240, poll: float = 0.05) -> None:
    """Polls `done()` until it holds while `proc` (writing to the file `log`) runs; fails the
    test, with the log's tail, if the process ends first or `seconds` pass (then kills it)."""
    deadline = time.monotonic() + seconds
    while not done():
        if proc.poll() is not None:
            pytest.fail(f"the process ended before {what}:\n{log.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"no {what} in {seconds} s:\n{log.read_text()[-3000:]}")
        time.sleep(poll)
