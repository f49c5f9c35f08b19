"""Wording shared by messages everywhere: plurals, and job messages as a dialog shows them.

Job checks (:meth:`Job.problems`) name each setting by its label and its Processing name, e.g.
"Output folder (OUTPUT_FOLDER) is required"; that reads well in Processing and the CLI. A dialog
shows the label only: :func:`for_dialog` drops the Processing names, or puts the label in their
place where the sentence has no label.
"""

from __future__ import annotations

import re

from .params import param_fields


def plural(count: int | float, word: str, many: str | None = None) -> str:
    """``1 patch``, ``2 patches``, ``0 bands``: the count with the right form of ``word``."""
    if many is None:
        many = word + ("es" if word.endswith(("s", "sh", "tch", "x", "z")) else "s")
    n = int(count) if float(count).is_integer() else count
    return f"{n:,} {word if n == 1 else many}"


def for_dialog(text: str, job_cls: type) -> str:
    """``text`` with the job's Processing names replaced by their field labels."""
    labels = {ps.name: ps.label for _f, ps in param_fields(job_cls)}
    if not labels:
        return text
    names = "|".join(sorted(map(re.escape, labels), key=len, reverse=True))
    # "Label (NAME)" / "(NAME, OTHER)": the label is there already
    text = re.sub(rf"\s*\((?:{names})(?:,\s*(?:{names}))*\)", "", text)
    # a bare NAME ("check INPUT"): its label, quoted
    return re.sub(rf"\b({names})\b", lambda m: f"“{labels[m.group(1)]}”", text)
