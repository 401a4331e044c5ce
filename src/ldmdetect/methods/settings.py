"""A method's settings: the typed, frozen form of a detector config's ``feature`` dict.

Each method declares one frozen dataclass (:attr:`Method.Settings`), like timm's
``PretrainedCfg``: its defaults are written once, there; :meth:`MethodSettings.from_feature`
reads the JSON dict a detector's ``config.json`` holds (refusing keys the method does not
know, naming the method and the keys it knows), and :meth:`MethodSettings.to_feature` writes
it back in the same shape, so saved detectors keep loading as they are.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

_S = TypeVar("_S", bound="MethodSettings")


@dataclass(frozen=True)
class MethodSettings:
    """Base of every method's settings; the base itself has none (pixel-only methods).

    Fields holding a dataclass (LaRE's ``LareConfig``) are read from nested dicts. ``None``
    means "not resolved" for fields settled from the generator when a config is made (a
    VAE's latent channels): those are left out of :meth:`to_feature`, as they were left out
    of configs saved before they were recorded.
    """

    #: nested dataclass defaults for configs saved before a field existed:
    #: {field: {nested field: value}} (DIRE's ``fit_short_side`` was False before it existed)
    legacy_nested_defaults: ClassVar[dict[str, dict[str, Any]]] = {}

    @classmethod
    def from_feature(cls: type[_S], feature: Mapping[str, Any] | None, *, method: str) -> _S:
        """The settings a ``feature`` dict describes; unknown keys and bad values raise a
        ``ValueError`` naming the method and the field."""
        feature = dict(feature or {})
        known = [f.name for f in dataclasses.fields(cls)]
        _refuse_unknown(feature, known, method=method, where="")
        hints = typing.get_type_hints(cls)
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if f.name not in feature:
                continue
            value = feature[f.name]
            nested = _dataclass_in(hints[f.name])
            if nested is not None:
                if not isinstance(value, Mapping | nested):
                    raise ValueError(
                        f"method {method!r}: setting {f.name!r} must be a dict of "
                        f"{nested.__name__} fields, not {value!r}"
                    )
                if isinstance(value, Mapping):
                    value = _nested(
                        nested,
                        {**cls.legacy_nested_defaults.get(f.name, {}), **value},
                        method=method,
                        where=f"{f.name}.",
                    )
            else:
                value = _checked(value, hints[f.name], method=method, name=f.name)
            values[f.name] = value
        try:
            return cls(**values)
        except (TypeError, ValueError) as err:
            raise ValueError(f"method {method!r}: {err}") from err

    def to_feature(self) -> dict[str, Any]:
        """The JSON ``feature`` dict (lists for tuples, nested dicts for dataclasses)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is not None:
                out[f.name] = _jsonable(value)
        return out


def _refuse_unknown(values: Mapping[str, Any], known: list[str], *, method: str, where: str):
    unknown = sorted(set(values) - set(known))
    if unknown:
        listed = ", ".join(f"{where}{k}" for k in known) or "none"
        raise ValueError(
            f"method {method!r} has no setting {', '.join(repr(where + k) for k in unknown)}; "
            f"its settings are: {listed}"
        )


def _nested(cls: type, values: Mapping[str, Any], *, method: str, where: str) -> Any:
    known = [f.name for f in dataclasses.fields(cls)]
    _refuse_unknown(values, known, method=method, where=where)
    hints = typing.get_type_hints(cls)
    checked = {
        k: _checked(v, hints[k], method=method, name=f"{where}{k}") for k, v in values.items()
    }
    try:
        return cls(**checked)
    except (TypeError, ValueError) as err:
        raise ValueError(f"method {method!r}: setting {where.rstrip('.')!r}: {err}") from err


def _dataclass_in(hint: Any) -> type | None:
    """The dataclass a field's type names (``X`` or ``X | None``), else None."""
    for candidate in (hint, *typing.get_args(hint)):
        if isinstance(candidate, type) and dataclasses.is_dataclass(candidate):
            return candidate
    return None


_SIMPLE = (bool, int, float, str)


def _checked(value: Any, hint: Any, *, method: str, name: str) -> Any:
    """``value`` checked against a simple field type (bool, int, float, str, optional ones,
    tuples from JSON lists); other types pass as they are."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        if len(options) == 1:
            return _checked(value, options[0], method=method, name=name)
        return value
    if origin is tuple or hint is tuple:
        if not isinstance(value, list | tuple):
            raise ValueError(f"method {method!r}: setting {name!r} must be a list, not {value!r}")
        return tuple(value)
    if hint in _SIMPLE:
        ok = isinstance(value, hint) and not (hint is not bool and isinstance(value, bool))
        if hint is float and isinstance(value, int) and not isinstance(value, bool):
            ok = True
        if not ok:
            raise ValueError(
                f"method {method!r}: setting {name!r} must be {hint.__name__}, not {value!r}"
            )
    return value


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        if hasattr(value, "to_dict"):
            return value.to_dict()
        return {f.name: _jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, tuple | list):
        return [_jsonable(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _jsonable(v) for k, v in value.items()}
    return value
