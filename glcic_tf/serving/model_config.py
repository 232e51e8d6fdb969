"""Which models the embedded server serves: `ModelConfig`, and TF Serving's model config file.

A model is a name in URLs, a base path holding integer version directories, a version policy
(which of the versions on disk to load) and version labels. `parse_model_config_file` reads
the same ModelServerConfig text proto `tensorflow_model_server --model_config_file` reads
(serving/models.config), so one file configures both servers.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Mapping, Sequence


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """One served model, as an entry of TF Serving's model_config_list.

    Attributes:
      name: the model name in URLs.
      base_path: directory holding integer version subdirectories.
      policy: "latest" (the `num_versions` highest versions), "all" or "specific".
      num_versions: with policy "latest".
      versions: with policy "specific".
      labels: version labels (`/labels/stable`) -> version.
    """

    name: str
    base_path: str
    policy: str = "latest"
    num_versions: int = 1
    versions: tuple[int, ...] = ()
    labels: Mapping[str, int] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        if not self.name or "/" in self.name or ":" in self.name:
            raise ValueError(f"model name must be non-empty without '/' or ':', got {self.name!r}")
        if not self.base_path:
            raise ValueError(f"model {self.name!r}: base_path is empty")
        if self.policy not in ("latest", "all", "specific"):
            raise ValueError(f"model {self.name!r}: policy must be latest, all or specific, "
                             f"got {self.policy!r}")
        if self.policy == "latest" and self.num_versions < 1:
            raise ValueError(f"model {self.name!r}: num_versions must be >= 1, "
                             f"got {self.num_versions}")
        if self.policy == "specific" and not self.versions:
            raise ValueError(f"model {self.name!r}: policy 'specific' needs versions")

    def aspired(self, available: Sequence[int]) -> set[int]:
        """The versions this policy wants loaded, given those present on disk."""
        if self.policy == "all":
            return set(available)
        if self.policy == "specific":
            return set(available) & set(self.versions)
        return set(sorted(available, reverse=True)[:self.num_versions])


def parse_model_config_file(path: str) -> list[ModelConfig]:
    """Reads a TF Serving ModelServerConfig text proto (serving/models.config).

    Only model_platform "tensorflow" is served. Relative base paths are taken relative to the
    current directory, as tensorflow_model_server does.

    Raises:
      ValueError: the file does not parse or describes something this server cannot serve.
    """
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    with open(path, encoding="utf-8") as f:
        text = f.read()
    try:
        config = text_format.Parse(text, model_server_config_pb2.ModelServerConfig())
    except text_format.ParseError as e:
        raise ValueError(f"{path}: not a ModelServerConfig text proto: {e}") from e
    if config.WhichOneof("config") != "model_config_list":
        raise ValueError(f"{path}: expected a model_config_list")
    models = []
    for m in config.model_config_list.config:
        if m.model_platform not in ("", "tensorflow"):
            raise ValueError(f"{path}: model {m.name!r}: model_platform must be 'tensorflow', "
                             f"got {m.model_platform!r}")
        choice = m.model_version_policy.WhichOneof("policy_choice") or "latest"
        models.append(ModelConfig(
            name=m.name, base_path=os.path.abspath(m.base_path), policy=choice,
            num_versions=max(1, m.model_version_policy.latest.num_versions),
            versions=tuple(m.model_version_policy.specific.versions),
            labels=dict(m.version_labels)))
    if not models:
        raise ValueError(f"{path}: model_config_list has no models")
    names = [m.name for m in models]
    if len(set(names)) != len(names):
        raise ValueError(f"{path}: duplicate model names in {names}")
    return models
