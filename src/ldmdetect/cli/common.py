"""What every ``ldmdetect`` command shares besides its option types (``cli/options.py``): the
defaults read from the settings' owners, the one-line user errors and exit statuses, and the
worker and engine helpers. Nothing here imports torch or the engine at import time:
``ldmdetect --help`` stays fast, and each command imports what it runs."""

from __future__ import annotations

import dataclasses
import functools
import importlib
import inspect
import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import typer


def default_of(owner: Any, name: str) -> Any:
    """The default of setting ``name`` where it is defined: a dataclass field (its default or
    default factory) or a function's keyword argument. KeyError when ``owner`` has none."""
    if dataclasses.is_dataclass(owner):
        field = {f.name: f for f in dataclasses.fields(owner)}.get(name)
        if field is not None and field.default is not dataclasses.MISSING:
            return field.default
        if field is not None and field.default_factory is not dataclasses.MISSING:
            return field.default_factory()
    else:
        parameter = inspect.signature(owner).parameters.get(name)
        if parameter is not None and parameter.default is not inspect.Parameter.empty:
            return parameter.default
    raise KeyError(f"{getattr(owner, '__name__', owner)} has no default for {name!r}")


class ConfigDefaults(Mapping[str, Any]):
    """A command's option defaults, read from the config dataclass or function that owns each
    setting, so that the CLI states none of them again (click's ``default_map``).

    ``owner`` is ``"module:Name"``; ``names`` are options named like the owner's settings;
    ``renamed`` maps other options to ``setting`` or ``(setting, convert)``. The owner's module
    is imported on the first lookup, when the command runs or prints its help: the top-level
    ``ldmdetect --help`` imports no torch. Options read from here keep ``None`` as their
    signature default.
    """

    def __init__(
        self,
        owner: str,
        *names: str,
        **renamed: str | tuple[str, Callable[[Any], Any]],
    ) -> None:
        self.owner = owner
        self.settings: dict[str, tuple[str, Callable[[Any], Any] | None]] = {
            name: (name, None) for name in names
        }
        for option, target in renamed.items():
            self.settings[option] = (target, None) if isinstance(target, str) else target

    def resolve_owner(self) -> Any:
        module, _, attribute = self.owner.partition(":")
        return functools.reduce(getattr, attribute.split("."), importlib.import_module(module))

    def build(self, params: Mapping[str, Any], **given: Any) -> Any:
        """The owner, a config dataclass, made from a command's ``params`` (``ctx.params``):
        every option named like one of its settings, then ``given`` (renamed or converted
        options, and settings no option sets), so a command does not name each setting again.
        """
        named = {
            option: params[option]
            for option, (setting, convert) in self.settings.items()
            if setting == option and convert is None
        }
        return self.resolve_owner()(**(named | given))

    def __getitem__(self, option: str) -> Any:
        setting, convert = self.settings[option]
        value = default_of(self.resolve_owner(), setting)
        return convert(value) if convert is not None else value

    def __contains__(self, option: object) -> bool:  # no import needed to answer
        return option in self.settings

    def __iter__(self) -> Iterator[str]:
        return iter(self.settings)

    def __len__(self) -> int:
        return len(self.settings)

    def __or__(self, other: ConfigDefaults) -> _MergedDefaults:
        return _MergedDefaults((self, other))


class _MergedDefaults(Mapping[str, Any]):
    """Several owners' defaults for one command."""

    def __init__(self, parts: tuple[ConfigDefaults, ...]) -> None:
        self.parts = parts

    def __getitem__(self, option: str) -> Any:
        for part in self.parts:
            if option in part:
                return part[option]
        raise KeyError(option)

    def __contains__(self, option: object) -> bool:
        return any(option in part for part in self.parts)

    def __iter__(self) -> Iterator[str]:
        return (option for part in self.parts for option in part)

    def __len__(self) -> int:
        return sum(len(part) for part in self.parts)


def defaults(mapping: Mapping[str, Any]) -> dict[str, Any]:
    """A command's ``context_settings`` that read its option defaults from ``mapping``."""
    return {"default_map": mapping}


def command(app: typer.Typer, settings: Mapping[str, Any]) -> Callable[[Callable], Callable]:
    """Register a function on ``app`` as every configurable command is declared: its option
    defaults read from ``settings`` (:func:`defaults`) and the errors a user can fix turned
    into one line (:func:`user_errors`)."""

    def register(fn: Callable) -> Callable:
        return app.command(context_settings=defaults(settings))(user_errors(fn))

    return register


# --------------------------------------------------------------------------------------------
# Errors, exit statuses and the lines every command prints alike


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print ``error: message`` in red on stderr; the exit to raise (status 2: a usage error)."""
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(code)


def user_errors(fn):
    """Turn the errors a user can fix into one clear line and exit status 2, not a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from ldmdetect.io.hub import SourceUnavailable
        from ldmdetect.io.images import ImageDecodeError

        try:
            return fn(*args, **kwargs)
        except (SourceUnavailable, ImageDecodeError, FileNotFoundError, ValueError) as err:
            raise fail(str(err)) from None

    return wrapper


def finish(errors: dict[str, str], summary: str) -> None:
    """Name every skipped file, print the summary; exit status 1 when any file failed."""
    for path, reason in errors.items():
        typer.secho(f"skipped {path}: {reason}", fg=typer.colors.YELLOW, err=True)
    typer.echo(summary)
    if errors:
        raise typer.Exit(1)


def echo_not_images(paths: Iterable[str | Path]) -> None:
    """Name each file a folder search passed over for its extension (stderr)."""
    for path in paths:
        typer.secho(f"skipped {path}: not an image file by its extension", err=True)


def num_workers(value: int | None) -> int:
    """--workers, or the loader's default for this machine."""
    from ldmdetect.engine.loader import default_workers

    return default_workers() if value is None else value


def engine_name(engine: str) -> str:
    """--engine, checked: local or ray."""
    if engine not in ("local", "ray"):
        raise ValueError(f"--engine {engine!r}: expected local or ray")
    return engine


def ray_engine():
    """``ldmdetect.engine.ray_engine``, or exit with the line that says which extra to install."""
    from ldmdetect.engine import ray_engine as engine

    try:
        engine.import_ray()
    except ImportError as err:
        raise fail(str(err)) from None
    return engine


def feature_settings(
    options: list[str] | None, prompt_template: str | None, captioner: str | None = None
) -> dict:
    """``["lare.timestep=100"]`` -> ``{"lare": {"timestep": 100}}``."""
    settings: dict = {}
    for option in options or []:
        key, sep, raw = option.partition("=")
        if not sep or not key:
            raise ValueError(f"--feature {option!r}: expected KEY=VALUE")
        try:
            value = json.loads(raw)
        except ValueError:
            value = raw
        *parents, leaf = key.split(".")
        node = settings
        for parent in parents:
            node = node.setdefault(parent, {})
        node[leaf] = value
    if prompt_template is not None:
        settings["prompt_template"] = prompt_template
    if captioner is not None:
        from ldmdetect.generative.captioners import parse_captioner

        settings["captioner"] = parse_captioner(captioner).spec  # refuses unknown specs early
    return settings
