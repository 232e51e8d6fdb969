"""The model manager: which versions of which models are loaded, swapped in and unloaded.

Models live under a base path as TF Serving expects (BASE/VERSION/saved_model.pb). A background
thread polls the base paths every `poll_wait_seconds`; a new version is loaded while the old one
keeps serving, then swapped in (TF Serving's "latest 1" policy with availability preservation).
A version directory without saved_model.pb (still being written) is ignored; a version that
fails to load is reported with state END and its error, and retried when its files change.
`ModelManager.status` answers GetModelStatus; `ModelManager.servable` resolves the model,
version or label a request names to a loaded `Servable`.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
from typing import Any, Callable, Sequence

from glcic_tf.serving.errors import ServingError, error_from_exception, invalid_argument
from glcic_tf.serving.model_config import ModelConfig
from glcic_tf.serving.servable import Servable

logger = logging.getLogger("glcic_tf.serving")

# ModelVersionStatus.State names.
START, LOADING, AVAILABLE, UNLOADING, END = "START", "LOADING", "AVAILABLE", "UNLOADING", "END"


def list_versions(base_path: str) -> dict[int, str]:
    """Complete version directories under a base path: {version: path}.

    A version is a subdirectory named by a non-negative integer that contains saved_model.pb
    (or .pbtxt); anything else (a half-copied version, a temp dir) is ignored.
    """
    try:
        names = os.listdir(base_path)
    except (FileNotFoundError, NotADirectoryError):
        return {}
    out = {}
    for name in names:
        if not name.isdigit():
            continue
        path = os.path.join(base_path, name)
        if any(os.path.isfile(os.path.join(path, f))
               for f in ("saved_model.pb", "saved_model.pbtxt")):
            out[int(name)] = path
    return out


def _fingerprint(path: str) -> tuple:
    """Changes when a version's files are rewritten; a failed load is retried only then."""
    stats = []
    for rel in ("saved_model.pb", "saved_model.pbtxt", os.path.join("variables",
                                                                    "variables.index")):
        try:
            st = os.stat(os.path.join(path, rel))
            stats.append((rel, st.st_mtime_ns, st.st_size))
        except OSError:
            pass
    return tuple(stats)


@dataclasses.dataclass
class _Version:
    state: str
    path: str
    fingerprint: tuple = ()
    error_code: str = "OK"
    error_message: str = ""
    servable: Servable | None = None


class ModelManager:
    """Loads, swaps and unloads versions of the configured models; thread-safe.

    Args:
      models: the models to serve.
      poll_wait_seconds: seconds between scans of the base paths by the background thread
        (`start()`); 0 scans once, at start.
      loader: builds a servable from (name, version, path); `Servable` by default.
    """

    def __init__(self, models: Sequence[ModelConfig], poll_wait_seconds: float = 1.0,
                 loader: Callable[[str, int, str], Any] = Servable):
        if poll_wait_seconds < 0:
            raise ValueError(f"poll_wait_seconds must be >= 0, got {poll_wait_seconds}")
        self.models = {m.name: m for m in models}
        if len(self.models) != len(models):
            raise ValueError(f"duplicate model names in {[m.name for m in models]}")
        self.poll_wait_seconds = poll_wait_seconds
        self._loader = loader
        self._lock = threading.Lock()
        self._versions: dict[str, dict[int, _Version]] = {m.name: {} for m in models}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._warned_empty: set[str] = set()

    # --- loading -------------------------------------------------------------------------------

    def poll_once(self) -> None:
        """Scans every base path once; loads new aspired versions, then unloads old ones."""
        for model in self.models.values():
            self._poll_model(model)

    def _poll_model(self, model: ModelConfig) -> None:
        on_disk = list_versions(model.base_path)
        if not on_disk and model.name not in self._warned_empty:
            logger.warning("No versions of model %s found under base path %s", model.name,
                           model.base_path)
            self._warned_empty.add(model.name)
        aspired = model.aspired(list(on_disk))
        for version in sorted(aspired, reverse=True):  # newest first: it serves "latest"
            path = on_disk[version]
            fingerprint = _fingerprint(path)
            with self._lock:
                record = self._versions[model.name].get(version)
                if record is not None and (record.state == AVAILABLE or (
                        record.state == END and record.error_code != "OK"
                        and record.fingerprint == fingerprint)):
                    continue  # loaded, or failed before with these very files
                self._versions[model.name][version] = _Version(LOADING, path, fingerprint)
            logger.info("Loading model %s version %d from %s", model.name, version, path)
            try:
                servable = self._loader(model.name, version, path)
            except Exception as e:  # noqa: BLE001 - any load failure is reported in the status
                err = error_from_exception(e)
                code = err.code if err.code != "INTERNAL" else "UNKNOWN"
                logger.error("Failed to load model %s version %d: %s", model.name, version,
                             err.message)
                with self._lock:
                    self._versions[model.name][version] = _Version(
                        END, path, fingerprint, code, f"Failed to load {path}: {err.message}")
                continue
            with self._lock:
                self._versions[model.name][version] = _Version(AVAILABLE, path, fingerprint,
                                                               servable=servable)
            logger.info("Model %s version %d is AVAILABLE", model.name, version)
        # Unload what is no longer aspired, but never the last available version while no
        # aspired one is available (TF Serving's availability-preserving policy).
        with self._lock:
            versions = self._versions[model.name]
            any_aspired_up = any(v in aspired and r.state == AVAILABLE
                                 for v, r in versions.items())
            for v, r in versions.items():
                keep = not any_aspired_up and v in on_disk
                if r.state == AVAILABLE and v not in aspired and not keep:
                    logger.info("Unloading model %s version %d", model.name, v)
                    versions[v] = _Version(END, r.path, r.fingerprint)

    def start(self) -> None:
        """Loads what is on disk now, then keeps polling in a daemon thread."""
        self.poll_once()
        if self.poll_wait_seconds > 0 and self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._poll_loop, name="glcic-model-poller",
                                            daemon=True)
            self._thread.start()

    def _poll_loop(self) -> None:
        while not self._stop.wait(self.poll_wait_seconds):
            try:
                self.poll_once()
            except Exception:  # noqa: BLE001 - keep polling; the error is logged
                logger.exception("Polling the model base paths failed")

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None

    # --- lookups -------------------------------------------------------------------------------

    def _label_version(self, name: str, label: str) -> int:
        model = self.models.get(name)
        if model is None or label not in model.labels:
            raise invalid_argument("Unrecognized servable version label: ", label)
        return model.labels[label]

    def status(self, name: str, version: int | None = None,
               label: str | None = None) -> dict[str, Any]:
        """GetModelStatusResponse as JSON: every known version, newest first."""
        if label is not None:
            version = self._label_version(name, label)
        with self._lock:
            versions = dict(self._versions.get(name, {}))
        if version is not None:
            if version not in versions:
                raise ServingError("NOT_FOUND",
                                   f"Could not find version {version} of model {name}")
            versions = {version: versions[version]}
        elif not versions:
            raise ServingError("NOT_FOUND", f"Could not find any versions of model {name}")
        return {"model_version_status": [
            {"version": str(v), "state": r.state,
             "status": {"error_code": r.error_code, "error_message": r.error_message}}
            for v, r in sorted(versions.items(), reverse=True)]}

    def servable(self, name: str, version: int | None = None,
                 label: str | None = None) -> Servable:
        """The servable a request addresses: latest available, a version or a label."""
        if label is not None:
            version = self._label_version(name, label)
        with self._lock:
            versions = self._versions.get(name, {})
            if version is None:
                up = [v for v, r in versions.items() if r.state == AVAILABLE]
                if up:
                    return versions[max(up)].servable
                raise ServingError("NOT_FOUND", f"Servable not found for request: Latest({name})")
            record = versions.get(version)
            if record is not None and record.state == AVAILABLE:
                return record.servable
        raise ServingError("NOT_FOUND",
                           f"Servable not found for request: Specific({name}, {version})")

    def available(self) -> dict[str, list[int]]:
        with self._lock:
            return {n: sorted(v for v, r in vs.items() if r.state == AVAILABLE)
                    for n, vs in self._versions.items()}
