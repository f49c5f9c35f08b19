"""The model card shown under the model of every classify dialog: rows of (label, value) and the
classes in their colours, as rich text for a QTextBrowser. Each dialog chooses its family's rows.
"""

from __future__ import annotations

import html


def size_rows(card: dict) -> list[tuple[str, str]]:
    """The rows every family's card has: bands, patch size (px) and pixel size (map units)."""
    rows = [("Bands", str(card.get("bands", "?"))),
            ("Patch size", f"{card.get('patch_size', '?')} px")]
    px = card.get("pixel_size")
    if px:
        rows.append(("Pixel size", f"{float(px[0]):g} × {float(px[-1]):g}"))
    return rows


def card_html(rows: list[tuple[str, object]], classes: list[dict], mark: str = "■") -> str:
    """``rows`` ((label, value); empty values left out) and ``classes`` ({id, name, color}, in
    id order, drawn with ``mark`` in their colour) as an HTML table each."""
    body = "".join(f"<tr><td><b>{html.escape(str(k))}</b></td><td>{html.escape(str(v))}</td></tr>"
                   for k, v in rows if v != "")
    listed = "".join(
        f"<tr><td><span style='color:{html.escape(c.get('color') or '#777')}; "
        f"font-size:large'>{mark}</span></td><td>{html.escape(str(c.get('id', '')))}</td>"
        f"<td>{html.escape(str(c.get('name', c.get('id'))))}</td></tr>"
        for c in sorted(classes, key=lambda c: int(c.get("id", 0))))
    return (f"<table cellpadding='2'>{body}</table><p><b>Classes</b></p>"
            f"<table cellpadding='1'>{listed}</table>")
