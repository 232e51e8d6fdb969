"""Session fixtures built once per `make test`, also when pytest-xdist runs several workers.

Each xdist worker is its own process with its own session, so a session fixture would be built
once per worker. `built_once` gives every worker the same folder under the run's shared temporary
root: the first worker to ask builds it (holding a lock), the others wait for it and read what it
wrote. Without xdist it is a plain `tmp_path_factory.mktemp` folder.
"""

import contextlib
import fcntl
import os
import shutil


@contextlib.contextmanager
def built_once(tmp_path_factory, name):
    """Yields (folder, build): `build` is True in the one process that must fill `folder`.

    The others block until it has finished (a failed build is retried by the next worker).
    """
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        yield tmp_path_factory.mktemp(name), True
        return
    root = tmp_path_factory.getbasetemp().parent  # one per run, shared by its workers
    folder, done = root / name, root / f"{name}.done"
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            build = not done.exists()
            if build:
                shutil.rmtree(folder, ignore_errors=True)
                folder.mkdir()
            yield folder, build
            if build:
                done.touch()
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
