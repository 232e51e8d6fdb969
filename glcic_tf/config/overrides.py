"""Dotted-key overrides and the typed reading of JSON and command-line values.

`override(config, {"schedule.batch_size": 8})` applies dotted keys to a config's dict and
rebuilds it; `from_mapping` builds any section (or the whole config) from a mapping, rejecting
unknown keys and values of the wrong type, and converting where that is lossless (a JSON list
to a tuple, 8.0 to 8). Both raise `ConfigError`s that name the key.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import TYPE_CHECKING, Any, Mapping

from glcic_tf.config.sections import ConfigError

if TYPE_CHECKING:  # the config class builds itself with these functions
    from glcic_tf.config.experiment import GLCICConfig


def _field_types(cls) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _coerce(value: Any, annotation: Any, key: str) -> Any:
    """Checks (and, where lossless, converts) one JSON/CLI value against a field's type."""
    origin = typing.get_origin(annotation)
    if dataclasses.is_dataclass(annotation):
        if isinstance(value, annotation):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key} must be an object, got {value!r}")
        return from_mapping(annotation, value, prefix=key + ".")
    if origin is tuple:
        args = typing.get_args(annotation)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key} must be a list of {len(args)} values, got {value!r}")
        if len(value) != len(args):
            raise ConfigError(f"{key} must have {len(args)} values, got {len(value)}")
        return tuple(_coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if origin in (typing.Union, types.UnionType):
        errors = []
        for arg in typing.get_args(annotation):
            if arg is type(None):
                if value is None:
                    return None
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError("; ".join(errors) or f"{key}: unexpected value {value!r}")
    if annotation is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key} must be true or false, got {value!r}")
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{key} must be an integer, got {value!r}")
        return value
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key} must be a number, got {value!r}")
        return float(value)
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key} must be a string, got {value!r}")
        return value
    return value


def from_mapping(cls, values: Mapping[str, Any], prefix: str):
    """An instance of the dataclass `cls` from `values`, each value checked and converted
    by `_coerce` against its field's type; `prefix` (e.g. "schedule.") names the keys in
    errors. Raises ConfigError for unknown keys and wrong types."""
    hints = _field_types(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ConfigError(f"unknown config key(s) {', '.join(prefix + u for u in unknown)}; "
                          f"valid keys under {prefix or 'the top level'}: {sorted(names)}")
    kwargs = {k: _coerce(v, hints[k], prefix + k) for k, v in values.items()}
    return cls(**kwargs)


def override(config: GLCICConfig, overrides: Mapping[str, Any]) -> GLCICConfig:
    """Returns `config` with dotted-key overrides applied, e.g. {"schedule.batch_size": 8}.

    Raises:
      ConfigError: a key does not exist, a value has the wrong type, or the result is invalid.
    """
    values = config.to_dict()
    for key, value in overrides.items():
        parts = key.split(".")
        node = values
        for i, part in enumerate(parts):
            if not isinstance(node, dict) or part not in node:
                raise ConfigError(f"unknown config key {key!r} (no {'.'.join(parts[:i + 1])!r})")
            if i == len(parts) - 1:
                if isinstance(node[part], dict):
                    raise ConfigError(f"config key {key!r} is a section; override its fields")
                node[part] = value
            else:
                node = node[part]
    return type(config).from_dict(values)
