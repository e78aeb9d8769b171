"""Configuration: every stage's section + a preset + a ``--config`` file + ``--set`` overrides.

The framework owns the mechanics and two shared sections (``run``, ``scene``); each stage package
declares its own section next to its code (a dataclass of :func:`setting` fields, given to the
framework as ``Stage.config``), and the application assembles the schema with :func:`config_class`.
The sections' fields are the only place a default lives (internal settings objects are built from
a resolved config, never given defaults of their own), and each field's help text is what
``docs/configuration.md`` is generated from. A preset (``img2mesh/configs/<preset>.yaml``, read with
``importlib.resources``) holds only what it changes. Everything is validated on load, and a wrong
key, type or value is a :class:`UsageError` naming the dotted key.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, Optional, Sequence, Union

from img2mesh.errors import UsageError

PRESETS = ("default", "smoke", "fast", "quality", "demo")
PRESET_FOLDER = "configs"  # inside the package: smoke.yaml, fast.yaml, quality.yaml, demo.yaml (what each changes)


def setting(default: Any = dataclasses.MISSING, help: str = "", *, factory: Any = None,
            minimum: Optional[float] = None, maximum: Optional[float] = None) -> Any:
    """A config field: its default (or ``factory`` for lists), one line of help, and an optional
    range the framework checks (``minimum``/``maximum``, inclusive; "auto" and null pass)."""
    metadata = {"help": help, "minimum": minimum, "maximum": maximum}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


class Section:
    """Base of a config section; :meth:`validate` holds checks beyond one key's type and range.

    ``moved`` names keys the section once had and where they live now, so that a stale config file or
    ``--set`` is told the new key instead of only "unknown".
    """

    moved: ClassVar[dict[str, str]] = {}

    def validate(self, prefix: str) -> None:
        """Raise a UsageError naming ``prefix + key`` for a value the section cannot use."""


@dataclass
class RunConfig(Section):
    seed: int = setting(0, "one seed for every random draw of a run (0 to 2^32 - 1, what every library's "
                           "generator takes)", minimum=0, maximum=2**32 - 1)
    device: str = setting("auto", "auto | cpu | cuda | cuda:N")

    def validate(self, prefix: str) -> None:
        value = self.device
        if not (value in ("auto", "cpu", "cuda") or (value.startswith("cuda:") and value[5:].isdigit())):
            raise UsageError(f"config key {prefix}device: {value!r} is not one of auto, cpu, cuda or cuda:N")


@dataclass
class SceneConfig(Section):
    bound: float = setting(0.6, "half-size of the cube the object lives in (world units; SyncDreamer's objects fit "
                                "in 0.5, the official NeuS renders inside 0.6): NeuS samples, the occupancy grid, the "
                                "hash grid, the marching-cubes box and the scoring hull span [-bound, bound]^3")

    def validate(self, prefix: str) -> None:
        if not 0.0 < self.bound <= 2.0:
            raise UsageError(f"config key {prefix}bound: must be above 0 (and at most 2), got {self.bound}")


@dataclass
class Config:
    """Every setting of a run: the framework's sections here, the stages' sections added by
    :func:`config_class`. The defaults in the sections are the only ones."""

    run: RunConfig = dataclasses.field(default_factory=RunConfig)
    scene: SceneConfig = dataclasses.field(default_factory=SceneConfig)

    def to_dict(self) -> dict[str, Any]:
        """The resolved configuration as plain data (what the manifest stores)."""
        return dataclasses.asdict(self)

    def get(self, dotted: str) -> Any:
        """Value at a dotted key such as ``generate.steps`` (or a whole section)."""
        value: Any = self
        for part in dotted.split("."):
            value = getattr(value, part)
        return dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value


def config_class(sections: Sequence[tuple[str, type]], module: str = __name__, name: str = "Config") -> type:
    """The schema: :class:`Config` with one field per ``(name, section dataclass)``, in that order.

    ``module`` and ``name`` say where the class can be found again by name (pickling it, for Ray,
    looks it up there).
    """
    fields = []
    for section_name, section in sections:
        if section_name in ("run", "scene") or not dataclasses.is_dataclass(section):
            raise TypeError(f"config section {section_name!r}: a dataclass under a name of its own")
        fields.append((section_name, section, dataclasses.field(default_factory=section)))
    schema = dataclasses.make_dataclass(name, fields, bases=(Config,))
    schema.__module__, schema.__qualname__ = module, name
    return schema


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(str(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join("null" if a is type(None) else _type_name(a) for a in typing.get_args(tp))
    if origin is list:
        return f"list of {_type_name(typing.get_args(tp)[0])}"
    return getattr(tp, "__name__", str(tp))


def type_name(section: type, key: str) -> str:
    """The accepted values of one field of a section, in words (the configuration reference's column)."""
    return _type_name(typing.get_type_hints(section)[key])


def _coerce(key: str, value: Any, tp: Any) -> Any:
    """Check ``value`` against the annotation ``tp``; ints are accepted for floats."""
    origin = typing.get_origin(tp)
    bad = UsageError(f"config key {key}: expected {_type_name(tp)}, got {value!r}")
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for inner in (a for a in args if a is not type(None)):
            try:
                return _coerce(key, value, inner)
            except UsageError:
                continue
        raise bad
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise bad
        return value
    if origin is list:
        if not isinstance(value, list):
            raise bad
        (item,) = typing.get_args(tp)
        return [_coerce(f"{key}[{i}]", v, item) for i, v in enumerate(value)]
    if tp is bool:
        if not isinstance(value, bool):
            raise bad
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise bad
        return value
    raise TypeError(f"unsupported config type {tp!r} for {key}")  # a schema bug, not user input


def _check_range(key: str, value: Any, field: dataclasses.Field) -> None:
    """The field's ``minimum``/``maximum``, on numbers and on every number of a list."""
    numbers = value if isinstance(value, list) else [value]
    low, high = field.metadata.get("minimum"), field.metadata.get("maximum")
    for number in numbers:
        if isinstance(number, bool) or not isinstance(number, (int, float)):
            continue  # "auto", null, text: their type was checked
        if low is not None and number < low:
            raise UsageError(f"config key {key}: must be at least {low:g}, got {number:g}")
        if high is not None and number > high:
            raise UsageError(f"config key {key}: must be at most {high:g}, got {number:g}")


def _build(cls: type, data: Any, prefix: str) -> Any:
    if not isinstance(data, dict):
        raise UsageError(f"config key {prefix.rstrip('.') or '<root>'}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in data:
        if key not in fields:
            raise UsageError(f"unknown config key {prefix}{key}")
    values = {}
    for name, field in fields.items():
        dotted = f"{prefix}{name}"
        if name not in data:
            raise UsageError(f"config key {dotted} is missing")
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            values[name] = _build(tp, data[name], f"{dotted}.")
        else:
            values[name] = _coerce(dotted, data[name], tp)
            _check_range(dotted, values[name], field)
    built = cls(**values)
    if isinstance(built, Section):
        built.validate(prefix)
    return built


def preset_text(name: str) -> str:
    """The YAML of a preset shipped inside the package (what it changes from the defaults)."""
    from importlib.resources import files

    return files("img2mesh").joinpath(PRESET_FOLDER, f"{name}.yaml").read_text(encoding="utf-8")


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"config file {path} does not exist") from None
    except IsADirectoryError:
        raise UsageError(f"config file {path} is a folder; give a YAML file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read config file {path}: {exc}") from None


def _parse_yaml(text: str, name: str) -> dict[str, Any]:
    import yaml  # lazy: keeps `img2mesh --help` fast

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise UsageError(f"{name} is not valid YAML{where}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UsageError(f"{name} must hold a mapping of sections, not {type(data).__name__}")
    return data


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split ``key.sub=value`` into its key path and its YAML-parsed value."""
    import yaml

    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise UsageError(f"--set {text!r}: expected KEY=VALUE with a dotted key, e.g. generate.steps=25")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        raise UsageError(f"--set {text!r}: the value is not valid YAML") from None
    return key.split("."), value


def unknown_key(schema: type, path: list[str]) -> UsageError:
    """The error for a key the schema does not have, naming where it moved when a section says so."""
    section: Any = schema
    for part in path[:-1]:
        hints = typing.get_type_hints(section) if dataclasses.is_dataclass(section) else {}
        section = hints.get(part)
    moved = getattr(section, "moved", {}) if dataclasses.is_dataclass(section) else {}
    dotted = ".".join(path)
    if path[-1] in moved:
        return UsageError(f"config key {dotted} is now {moved[path[-1]]}")
    return UsageError(f"unknown config key {dotted}")


def _apply_override(data: dict[str, Any], path: list[str], value: Any, schema: type) -> None:
    node = data
    for i, part in enumerate(path[:-1]):
        child = node.get(part)
        if not isinstance(child, dict):
            raise unknown_key(schema, path[: i + 1])
        node = child
    if path[-1] not in node:
        raise unknown_key(schema, path)
    node[path[-1]] = value


def load_config(
    schema: type,
    preset: str = "default",
    config_file: Optional[Path] = None,
    overrides: Optional[list[str]] = None,
    values: Optional[dict[str, Any]] = None,
) -> Any:
    """Resolve the configuration of ``schema`` (a :func:`config_class`): defaults, preset, file,
    ``--set`` overrides, then ``values``.

    ``values`` maps dotted keys to already-typed values (the CLI's dedicated flags such as
    ``--seed``), applied last because a dedicated flag is the most specific request.
    """
    if preset not in PRESETS:
        raise UsageError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    data = dataclasses.asdict(schema())
    layers = [] if preset == "default" else [(f"preset {preset}", preset_text(preset))]
    if config_file is not None:
        layers.append((f"config file {config_file}", _read_text(Path(config_file))))
    for name, text in layers:
        update = _parse_yaml(text, name)
        # Validate the layer's keys on their own so an unknown key is named, not merged silently.
        _check_known(update, data, [], schema)
        data = _merge(data, update)
    for text in overrides or []:
        path, value = parse_override(text)
        _apply_override(data, path, value, schema)
    for key, value in (values or {}).items():
        _apply_override(data, key.split("."), value, schema)
    return _build(schema, data, "")


def _check_known(update: dict[str, Any], base: dict[str, Any], path: list[str], schema: type) -> None:
    for key, value in update.items():
        if key not in base:
            raise unknown_key(schema, [*path, key])
        if isinstance(value, dict) and isinstance(base[key], dict):
            _check_known(value, base[key], [*path, key], schema)


def leaf_fields(section: type, prefix: str = "") -> list[tuple[str, type, dataclasses.Field]]:
    """Every leaf of a schema or section: (dotted key, the section class that holds it, its field)."""
    leaves = []
    hints = typing.get_type_hints(section)
    for field in dataclasses.fields(section):
        tp = hints[field.name]
        if dataclasses.is_dataclass(tp):
            leaves += leaf_fields(tp, f"{prefix}{field.name}.")
        else:
            leaves.append((f"{prefix}{field.name}", section, field))
    return leaves


def config_keys(schema: type) -> list[str]:
    """Every dotted leaf key of the schema, in declaration order."""
    return [key for key, _, _ in leaf_fields(schema)]
