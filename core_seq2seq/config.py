"""YAML configs as nested dataclasses: every key typed and documented; an unknown key is an error.

Other stages build their configs with the same ``from_dict`` so that every YAML file in decade
fails the same clear way (``ConfigError: configs/x.yaml: train.lr_warmup: unknown key; did you
mean 'warmup_steps'?``).
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A bad config; the message names the file and the key."""


def from_dict(cls: type[T], data: dict | None, where: str = "") -> T:
    """Build dataclass ``cls`` from a (YAML) dict, recursing into dataclass-typed fields.

    A nested section given in part starts from its field's default (``field(default_factory=lambda:
    DecodeSettings(method="sample"))`` keeps ``method: sample`` when the YAML sets only ``num_samples``).
    Items of a list field start from the class's ``ITEM_DEFAULTS[field]`` (a dict) when it has one.
    A key listed in the class's ``MOVED`` (``{old key: where it lives now}``) is refused with that hint.
    """
    data = data or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'config'}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    names = set(fields)
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        path = f"{where}.{key}" if where else str(key)
        moved = getattr(cls, "MOVED", {}).get(key)
        if key not in names and moved:
            raise ConfigError(f"{path}: this key moved; write it as {moved}")
        if key not in names:
            close = difflib.get_close_matches(str(key), sorted(names), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; known keys: {', '.join(sorted(names))}"
            raise ConfigError(f"{path}: unknown key{hint}")
        factory = fields[key].default_factory
        if dataclasses.is_dataclass(hints[key]) and isinstance(value, dict) and factory is not dataclasses.MISSING:
            default, plain = dataclasses.asdict(factory()), dataclasses.asdict(hints[key]())
            value = {**{k: v for k, v in default.items() if v != plain[k]}, **value}
        item_defaults = getattr(cls, "ITEM_DEFAULTS", {}).get(key)
        if item_defaults and isinstance(value, list):
            value = [{**item_defaults, **v} if isinstance(v, dict) else v for v in value]
        kwargs[key] = _convert(hints[key], value, path)
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where}: {e}" if where else str(e)) from None


def _convert(hint: Any, value: Any, path: str) -> Any:
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value, path)
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(arg, value, path)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{path}: bad value {value!r}")
    if origin in (list, tuple):
        if not isinstance(value, list):
            raise ConfigError(f"{path}: expected a list, got {value!r}")
        return [_convert(args[0], v, f"{path}[{i}]") for i, v in enumerate(value)] if args else value
    if origin is dict or hint is Any:
        return value
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint in (int, float, str, bool) and not (isinstance(value, hint) and not (hint is int and isinstance(value, bool))):
        raise ConfigError(f"{path}: expected {hint.__name__}, got {value!r}")
    return value


def load_yaml(path: str | Path) -> dict:
    """Safely load a YAML mapping; errors name the file."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: config file not found")
    if path.is_dir():
        raise ConfigError(f"{path}: is a directory, expected a YAML config file")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: invalid YAML: {e}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: invalid UTF-8 at byte {e.start}") from None
    except OSError as e:  # unreadable (permissions), a special file that fails
        raise ConfigError(f"{path}: cannot read the config ({e.strerror or e})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


def load_config(cls: type[T], path: str | Path, section: str | None = None) -> T:
    """Load ``path`` (or one top-level ``section`` of it) into dataclass ``cls``."""
    data = load_yaml(path)
    if section is not None:
        data = data.get(section) or {}
    try:
        return from_dict(cls, data, section or "")
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


def to_dict(obj: Any) -> dict:
    return dataclasses.asdict(obj)


# Field metadata for a setting added to a config class after runs were made with it:
# ``x: int = field(default=0, metadata=KEYED_WHEN_SET)`` leaves ``x`` out of ``key_dict`` (and so out of
# every hash and cached stage's key) while it holds its default, so adding a setting never reruns the
# finished work of older runs; set to anything else, it is part of the key as usual.
KEYED_WHEN_SET = {"key": "when_set"}


def key_dict(obj: Any) -> Any:
    """``asdict`` for hashing: nested dataclasses, lists and dicts, minus ``KEYED_WHEN_SET`` fields
    that hold their default."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        out = {}
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            if f.metadata.get("key") == "when_set":
                default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
                if value == default:
                    continue
            out[f.name] = key_dict(value)
        return out
    if isinstance(obj, (list, tuple)):
        return type(obj)(key_dict(v) for v in obj)
    if isinstance(obj, dict):
        return {k: key_dict(v) for k, v in obj.items()}
    return obj


def config_hash(obj: Any) -> str:
    """A short stable hash of a config (dataclass or dict): what makes an artifact what it is."""
    return hashlib.sha256(json.dumps(key_dict(obj), sort_keys=True, default=str).encode()).hexdigest()[:16]


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply ``--set a.b=value`` pairs (values parsed as YAML) to a nested config dict."""
    for override in overrides:
        key, sep, value = override.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {override!r}: expected KEY=VALUE")
        node = data
        *parents, leaf = key.split(".")
        for p in parents:
            child = node.setdefault(p, {})
            if not isinstance(child, dict):
                raise ConfigError(f"--set {override!r}: {p} is not a section")
            node = child
        node[leaf] = yaml.safe_load(value)
    return data


PAIR_PLACEHOLDERS = ("{src}", "{tgt}", "{pair}")


def expand_pair(data: dict, where: str = "") -> dict:
    """One file for both directions: a top-level ``pair: en-de`` fills ``{src}``, ``{tgt}`` and
    ``{pair}`` in every string value (``--set pair=de-en`` gives the other direction), and is then
    removed. A placeholder without a ``pair:`` key is an error naming the key that holds it."""
    prefix = f"{where}: " if where else ""
    pair = data.pop("pair", None)
    if pair is not None and (not isinstance(pair, str) or len(pair.split("-")) != 2 or not all(pair.split("-"))):
        raise ConfigError(f"{prefix}pair: expected SOURCE-TARGET language codes such as en-de, got {pair!r}")
    src, tgt = pair.split("-") if pair else ("", "")

    def fill(value: Any, key: str) -> Any:
        if isinstance(value, dict):
            return {k: fill(v, f"{key}.{k}" if key else str(k)) for k, v in value.items()}
        if isinstance(value, list):
            return [fill(v, f"{key}[{i}]") for i, v in enumerate(value)]
        if isinstance(value, str) and any(p in value for p in PAIR_PLACEHOLDERS):
            if pair is None:
                raise ConfigError(f"{prefix}{key}: {value!r} uses {{src}}/{{tgt}}/{{pair}} but the file has no "
                                  "top-level 'pair:' key (e.g. pair: en-de)")
            return value.replace("{src}", src).replace("{tgt}", tgt).replace("{pair}", pair)
        return value

    return fill(data, "")


def read_config(path: str | Path, overrides: typing.Sequence[str] = (), section: str | None = None) -> dict:
    """A YAML config as a dict, the way the stage CLIs read one: ``--set`` overrides applied
    (inside ``section`` when one is named, except ``pair=...`` in a file with a top-level ``pair:``),
    ``{src}``/``{tgt}`` filled from ``pair:``, and ``section`` taken out. Errors name the file."""
    data = load_yaml(path)
    # pair= goes to the top level when the file is written for both directions (a top-level pair:);
    # otherwise it is an ordinary key of the section (e.g. the sweep's own pair label).
    top = [o for o in overrides if section is None or (o.partition("=")[0] == "pair" and "pair" in data)]
    rest = [o for o in overrides if o not in top]
    data = expand_pair(apply_overrides(data, top), str(path))
    if section is None:
        return data
    if section not in data:
        raise ConfigError(f"{path}: no '{section}:' section (found: {', '.join(map(str, data)) or 'nothing'})")
    body = data[section] or {}
    if not isinstance(body, dict):
        raise ConfigError(f"{path}: '{section}:' must be a mapping")
    return apply_overrides(dict(body), rest)


def check_ranges(obj: Any, rules: dict[str, tuple]) -> None:
    """Range checks for a config dataclass, raised as ValueError naming the key (``from_dict`` adds
    the section and the file). A rule is ``(low, high)`` (inclusive, None: open) or a tuple of choices
    (``("in", a, b, ...)``)."""
    for key, rule in rules.items():
        value = getattr(obj, key)
        if rule and rule[0] == "in":
            if value not in rule[1:]:
                choices = ", ".join(str(c) if c != "" else '""' for c in rule[1:])  # "" (off) must show
                raise ValueError(f"{key} must be one of {choices}, got {value!r}")
            continue
        low, high = rule
        if (low is not None and value < low) or (high is not None and value > high):
            bounds = (f">= {low}" if high is None else f"<= {high}" if low is None else f"in [{low}, {high}]")
            raise ValueError(f"{key} must be {bounds}, got {value!r}")
