"""One parser for per-class (or per-value) settings: SOLID_DISTANCES, BLUR_DISTANCES,
VALUE_CLASSES and any later table keyed by class id or raster value.

Accepted forms (the help texts show them):

- a JSON object or mapping: ``{"1": 2, "3": 0.5}`` / ``{"1": "water"}``;
- ``id=value`` pairs separated by ``,`` ``;`` or new lines (``:`` works as ``=``):
  ``1=water, 2=forest`` / ``1=2, 3=0.5``;
- one value for every class: ``2`` (numbers only; returned as a one-element list);
- a list by class id (numbers only): ``[2, 0, 1]`` or ``2, 0, 1`` (class 1, 2, 3 …).

Standard library only (the QGIS process parses Processing parameters with it).
"""

from __future__ import annotations

import json
import math
import re

from .errors import UserError

FORMS_NUMBERS = 'e.g. 1=2, 3=0.5 (class id = value), {"1": 2}, one value for all (2) or a list ' \
                "by class id (2, 0, 1)"
FORMS_NAMES = 'e.g. 1=water, 2=forest or {"1": "water", "2": "forest"}'


def _bad(label: str, what: str, numbers: bool) -> UserError:
    return UserError(f"{label} {what}.", f"Write {FORMS_NUMBERS if numbers else FORMS_NAMES}.")


def _number(label: str, raw, numbers: bool) -> float:
    if isinstance(raw, bool):
        raise _bad(label, f"holds {raw!r}, not a number", numbers)
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise _bad(label, f"holds {raw!r}, not a number", numbers) from None
    if not math.isfinite(value):
        raise _bad(label, f"holds {raw!r}, not a finite number", numbers)
    return value


def parse_per_class(value, label: str, numbers: bool = True) -> dict | list:
    """``value`` (text, mapping, list or number) as ``{key text: value}`` or a list of numbers;
    ``numbers``: values are numbers (distances) rather than names. {} when empty.

    Raises :class:`UserError` naming ``label`` and the accepted forms."""
    if value is None or value == "" or value == [] or value == {}:
        return {}
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if not numbers:
            raise _bad(label, f"is the number {value!r}, not a table", numbers)
        return [_number(label, value, numbers)]
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return {}
        if text[0] in "{[":
            try:
                value = json.loads(text)
            except json.JSONDecodeError as exc:
                raise _bad(label, f"is not valid JSON ({exc.msg})", numbers) from None
        elif "=" in text or ":" in text:
            value = {}
            for pair in (p for p in re.split(r"[,;\n]", text) if p.strip()):
                match = re.match(r"\s*([^=:]+?)\s*[=:]\s*(.*?)\s*$", pair)
                if not match:
                    raise _bad(label, f"has {pair.strip()!r}, which is not id=value", numbers)
                value[match.group(1)] = match.group(2)
        else:
            value = [t for t in re.split(r"[,;\s]+", text) if t]
            if not numbers:
                raise _bad(label, f"is {text!r}, which has no id=name pairs", numbers)
    if isinstance(value, dict):
        out: dict = {}
        for key, raw in value.items():
            k = str(key).strip()
            try:
                float(k)
            except ValueError:
                raise _bad(label, f"has the key {k!r}, not a number", numbers) from None
            if numbers:
                out[k] = _number(label, raw, numbers)
                if out[k] < 0:
                    raise _bad(label, f"holds {raw!r}: use 0 or more", numbers)
            else:
                name = str(raw).strip()
                if not name:
                    raise _bad(label, f"gives {k} no name", numbers)
                out[k] = name
        return out
    if isinstance(value, (list, tuple)):
        if not numbers:
            raise _bad(label, "is a list, not id=name pairs", numbers)
        values = [_number(label, v, numbers) for v in value]
        if any(v < 0 for v in values):
            raise _bad(label, "holds a negative value: use 0 or more", numbers)
        return values
    raise _bad(label, f"is {value!r}", numbers)
