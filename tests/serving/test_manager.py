"""The model manager (`glcic_tf.serving.manager`) with a fake loader (no SavedModel, no
server): versions found on disk, swapped in, failures reported and retried, policies, labels."""

import os

import pytest

from glcic_tf.serving.errors import ServingError
from glcic_tf.serving.manager import ModelManager
from glcic_tf.serving.model_config import ModelConfig


class FakeServable:
    def __init__(self, name, version, path):
        if os.path.exists(os.path.join(path, "BROKEN")):
            raise ValueError(f"cannot load {path}")
        self.name, self.version, self.path = name, version, path


def _version(base, v, broken=False):
    os.makedirs(os.path.join(base, str(v)), exist_ok=True)
    with open(os.path.join(base, str(v), "saved_model.pb"), "wb") as f:
        f.write(b"x")
    if broken:
        open(os.path.join(base, str(v), "BROKEN"), "w").close()


def test_manager_swaps_versions_and_reports_failures(tmp_path):
    base = str(tmp_path / "m")
    loads = []

    def loader(name, version, path):
        loads.append(version)
        return FakeServable(name, version, path)

    manager = ModelManager([ModelConfig("m", base)], 0, loader)
    manager.poll_once()
    with pytest.raises(ServingError, match=r"Could not find any versions of model m"):
        manager.status("m")
    _version(base, 1)
    os.makedirs(os.path.join(base, "7", "variables"))  # half-written: ignored
    os.makedirs(os.path.join(base, "tmp"))  # not a version
    manager.poll_once()
    assert manager.servable("m").version == 1
    _version(base, 2, broken=True)
    manager.poll_once()
    manager.poll_once()  # same broken files: not retried
    assert loads == [1, 2]
    status = manager.status("m")["model_version_status"]
    assert [(s["version"], s["state"]) for s in status] == [("2", "END"), ("1", "AVAILABLE")]
    assert status[0]["status"]["error_code"] != "OK"
    assert "cannot load" in status[0]["status"]["error_message"]
    assert manager.servable("m").version == 1  # the old version keeps serving
    os.remove(os.path.join(base, "2", "BROKEN"))
    with open(os.path.join(base, "2", "saved_model.pb"), "wb") as f:
        f.write(b"fixed")  # new files: retried
    manager.poll_once()
    assert manager.servable("m").version == 2
    assert manager.available() == {"m": [2]}
    assert manager.status("m", version=1)["model_version_status"][0]["state"] == "END"
    with pytest.raises(ServingError, match=r"Specific\(m, 1\)"):
        manager.servable("m", version=1)
    with pytest.raises(ServingError, match=r"Latest\(other\)"):
        manager.servable("other")


def test_manager_policies_and_labels(tmp_path):
    base = str(tmp_path / "m")
    for v in (1, 2, 3):
        _version(base, v)
    manager = ModelManager([ModelConfig("m", base, policy="latest", num_versions=2,
                                        labels={"stable": 2})], 0, FakeServable)
    manager.poll_once()
    assert manager.available() == {"m": [2, 3]}
    assert manager.servable("m", label="stable").version == 2
    with pytest.raises(ServingError, match="Unrecognized servable version label"):
        manager.servable("m", label="canary")
    specific = ModelManager([ModelConfig("m", base, policy="specific", versions=(1,))], 0,
                            FakeServable)
    specific.poll_once()
    assert specific.available() == {"m": [1]}
    with pytest.raises(ValueError, match="policy must be"):
        ModelConfig("m", base, policy="newest")
