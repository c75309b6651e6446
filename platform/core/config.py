"""Nested dataclass configs from plain dicts / YAML (unknown keys rejected), and the one set of
helpers for dotted keys (``"detector.epochs"``) over nested dicts.

Two class attributes a config dataclass may set (not fields): ``RUNTIME``, the name of its one
runtime section (CPUs, env runners, log folders: where a run happens, not what it learns), which
:func:`learned_options` leaves out of checkpoints; and ``MOVED``, ``{old key: new dotted key}`` for
options renamed or moved since checkpoints were saved with them, so those still load while unknown
keys are still refused."""
from __future__ import annotations

import dataclasses
import numbers
import os
import types
import typing
from typing import Any, TypeVar

import yaml

from rlad.core.errors import ConfigError

T = TypeVar("T")


def from_dict(cls: type[T], data: dict[str, Any] | None) -> T:
    """Build dataclass ``cls`` from ``data``; nested dataclass fields take nested dicts."""
    data = _moved(cls, dict(data or {}))
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(data) - set(fields)
    if unknown:
        raise ConfigError(f"{cls.__name__}: unknown option(s) {sorted(unknown)}; known: {sorted(fields)}")
    kwargs = {}
    for name, value in data.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint) and isinstance(value, dict):
            try:
                value = from_dict(hint, value)
            except ConfigError as exc:  # say where the nested mistake is: "SwiftHydraConfig.detector: MambaMoEConfig: ..."
                raise ConfigError(f"{cls.__name__}.{name}: {exc}") from None
        elif typing.get_origin(hint) is tuple and isinstance(value, list):
            value = tuple(value)
        elif not _number_fits(hint, value):
            raise ConfigError(f"{cls.__name__}: {name} must be {_hint_name(hint)}, got {value!r}")
        kwargs[name] = value
    try:
        return cls(**kwargs)
    except ValueError as exc:  # a config's own check of its values (__post_init__): the user's mistake
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"{cls.__name__}: {exc}") from exc


_NUMBERS = {int: numbers.Integral, float: numbers.Real}


def _number_fits(hint: Any, value: Any) -> bool:
    """Whether ``value`` may fill a field typed ``hint`` as far as numbers go: an ``int`` field
    takes integers, a ``float`` field any real number, a ``bool`` field True or False (never
    each other: YAML's ``yes`` is no epoch count); ``X | None`` also takes None. Other hints are
    not checked here, nor values of a union with other types (``int | str``) beyond None and bools."""
    options = _union_options(hint)
    numeric = {int, float, bool} & set(options)
    if not numeric:
        return True
    if value is None:
        return type(None) in options
    if isinstance(value, bool):
        return bool in options
    if not set(options) <= numeric | {type(None)}:
        return True
    return any(isinstance(value, _NUMBERS[o]) for o in options if o in _NUMBERS)


def _hint_name(hint: Any) -> str:
    return " or ".join("None" if o is type(None) else getattr(o, "__name__", str(o)) for o in _union_options(hint))


def _union_options(hint: Any) -> tuple[Any, ...]:
    """The types a hint allows: ``int | None`` -> ``(int, NoneType)``, ``int`` -> ``(int,)``."""
    return typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)


def _moved(cls: type, data: dict[str, Any]) -> dict[str, Any]:
    """``data`` with the keys of ``cls.MOVED`` under their new (dotted) names."""
    for old, new in getattr(cls, "MOVED", {}).items():
        if old not in data:
            continue
        *sections, leaf = new.split(".")
        tree = data
        for key in sections:
            section = tree.get(key)
            tree[key] = dataclasses.asdict(section) if dataclasses.is_dataclass(section) else dict(section or {})
            tree = tree[key]
        tree[leaf] = data.pop(old)  # given by its old name last (a checkpoint's, or an override): it wins
    return data


def learned_options(cfg: Any) -> dict[str, Any]:
    """``cfg`` as plain data without its runtime section (``RUNTIME``): what a checkpoint keeps.
    Loading fills that section with its defaults; the process that loads decides its resources."""
    data = dataclasses.asdict(cfg)
    data.pop(getattr(cfg, "RUNTIME", None), None)
    return data


def load_yaml(path: str | os.PathLike) -> dict[str, Any]:
    try:
        with open(path) as f:
            return yaml.safe_load(f) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read the YAML file ({exc})") from exc


def set_dotted(tree: dict[str, Any], dotted: str, value: Any, overwrite: bool = True) -> None:
    """``set_dotted(d, "detector.epochs", 2)`` sets ``d["detector"]["epochs"] = 2``, creating the
    sections on the way. With ``overwrite=False`` an existing leaf raises ``KeyError``."""
    *parents, leaf = dotted.split(".")
    for key in parents:
        tree = tree.setdefault(key, {})
        if not isinstance(tree, dict):
            raise ValueError(f"key {dotted!r}: {key!r} is not a nested section")
    if not overwrite and leaf in tree:
        raise KeyError(dotted)
    tree[leaf] = value


def get_dotted(tree: dict[str, Any], dotted: str) -> Any:
    """``get_dotted({"a": {"b": 1}}, "a.b") == 1``."""
    for key in dotted.split("."):
        tree = tree[key]
    return tree


def deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """A new dict: ``extra`` over ``base``, nested sections merged key by key."""
    out = dict(base)
    for key, value in extra.items():
        out[key] = deep_merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out
