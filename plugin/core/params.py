"""Parameter specifications attached to job dataclass fields.

A job field declared with :func:`spec` carries everything the Processing algorithm, the dialog and
the CLI need to expose it (name, label, type, range, choices, help), so each parameter is described
once.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

# Kinds of parameter understood by the adapters (Processing, dialogs, CLI).
KINDS = (
    "int", "float", "bool", "str", "enum",
    "file_in", "file_out", "folder_in", "folder_out", "raster_out", "vector_out",
    "raster_in", "vector_in", "vector_or_file_in", "raster_list", "vector_list", "project_in",
    "project_out",
    "model_in", "model_out",
    "str_list", "int_list", "float_list", "dict",
)


@dataclass(frozen=True)
class ParamSpec:
    """How one job field is shown and validated outside the core."""

    name: str                      # Processing parameter name, e.g. "PATCH_SIZE"
    label: str
    kind: str
    help: str = ""
    choices: tuple[str, ...] = ()  # for kind == "enum": the allowed values
    minimum: float | None = None
    maximum: float | None = None
    optional: bool = False
    advanced: bool = False
    file_filter: str = ""          # e.g. "GeoTIFF (*.tif *.tiff)"
    choice_labels: tuple[str, ...] = ()  # for kind == "enum": what users see, by choice
    decimals: int | None = None    # for kind == "float": decimals shown (Processing)

    def choice_label(self, value: str) -> str:
        """The label shown for enum ``value`` (the value itself when it has none)."""
        labels = dict(zip(self.choices, self.choice_labels))
        return labels.get(value, value)

    def choice_for(self, text: str) -> str | None:
        """The enum value ``text`` names (the value itself or its label, any case), or None."""
        for value in self.choices:
            if text.strip().lower() in (value.lower(), self.choice_label(value).lower()):
                return value
        return None


def spec(
    default: Any,
    name: str,
    label: str,
    kind: str,
    help: str = "",
    choices: Sequence[str] = (),
    minimum: float | None = None,
    maximum: float | None = None,
    optional: bool = False,
    advanced: bool = False,
    file_filter: str = "",
    choice_labels: Sequence[str] | dict[str, str] = (),
    decimals: int | None = None,
) -> Any:
    """A dataclass field carrying a :class:`ParamSpec` in its metadata.

    ``choice_labels``: the labels users see for an enum's ``choices`` (a sequence in the same
    order, or a mapping choice → label); ``decimals``: decimals Processing shows for a float.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown parameter kind {kind!r}")
    if isinstance(choice_labels, dict):
        choice_labels = [choice_labels.get(c, c) for c in choices]
    meta = {"param": ParamSpec(name, label, kind, help, tuple(choices), minimum, maximum,
                               optional, advanced, file_filter, tuple(choice_labels),
                               decimals)}
    if isinstance(default, (list, dict, set)):
        value = default
        return field(default_factory=lambda: type(value)(value), metadata=meta)
    return field(default=default, metadata=meta)


def param_fields(job_cls: type) -> list[tuple[dataclasses.Field, ParamSpec]]:
    """The fields of a job class that carry a parameter spec, in the order dialogs, Processing
    and job files show them: declaration order, except that the names in the class's
    ``trailing_fields`` (fields a base class declares for every subclass, e.g. the outputs and
    settings every trainer has) come last, in that order."""
    fields = [(f, f.metadata["param"]) for f in dataclasses.fields(job_cls)
              if "param" in f.metadata]
    last = list(getattr(job_cls, "trailing_fields", ()))
    if last:
        fields.sort(key=lambda fp: last.index(fp[0].name) + 1 if fp[0].name in last else 0)
    return fields


def check_value(spec_: ParamSpec, value: Any) -> str | None:
    """A problem with ``value`` for ``spec_`` (a sentence naming it and the fix), or None."""
    if value is None or value == "":
        if spec_.optional or spec_.kind in ("str", "file_out", "model_out", "folder_out",
                                            "raster_out", "vector_out"):
            return None
        return f"{spec_.label} ({spec_.name}) is required: set a value."
    if spec_.kind == "enum" and spec_.choices and value not in spec_.choices:
        return (f"{spec_.label} ({spec_.name}) is {value!r}: choose one of "
                f"{', '.join(spec_.choices)}.")
    if spec_.kind in ("int", "float") and not isinstance(value, bool):
        if spec_.minimum is not None and value < spec_.minimum:
            return f"{spec_.label} ({spec_.name}) is {value}: use {spec_.minimum:g} or more."
        if spec_.maximum is not None and value > spec_.maximum:
            return f"{spec_.label} ({spec_.name}) is {value}: use {spec_.maximum:g} or less."
    return None
