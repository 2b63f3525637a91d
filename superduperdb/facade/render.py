"""Compact HTML of documents for notebooks (``Cursor._repr_html_``).

Arrays and tensors show as ``array(float32, (384,))``, images as small inline
PNG thumbnails, long text and nested values truncated; every value is escaped.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Iterable
from typing import Any

TEXT_LIMIT = 80
THUMBNAIL = 48  # pixels


def compact(value: Any) -> str:
    """One cell's HTML."""
    kind = type(value)
    module = kind.__module__
    if value is None:
        return ""
    if module == "numpy" and kind.__name__ == "ndarray" or module.startswith("torch") and hasattr(value, "shape"):
        name = "array" if module == "numpy" else "tensor"
        dtype = str(value.dtype).removeprefix("torch.")
        return f"<code>{name}({html.escape(dtype)}, {tuple(value.shape)})</code>"
    if module.startswith("PIL") and hasattr(value, "thumbnail"):
        return _thumbnail(value)
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (bytes, bytearray)):
        return f"<code>bytes({len(value)})</code>"
    text = value if isinstance(value, str) else repr(value) if isinstance(value, (dict, list, tuple)) else str(value)
    if len(text) > TEXT_LIMIT:
        text = text[: TEXT_LIMIT - 1] + "\u2026"
    return html.escape(text)


def _thumbnail(image: Any) -> str:
    try:
        small = image.copy()
        small.thumbnail((THUMBNAIL, THUMBNAIL))
        if small.mode not in ("RGB", "RGBA", "L", "LA"):
            small = small.convert("RGBA")
        buf = io.BytesIO()
        small.save(buf, format="PNG")
    except Exception:  # an image that cannot be thumbnailed shows its size instead
        return html.escape(f"image{tuple(getattr(image, 'size', ()))}")
    data = base64.b64encode(buf.getvalue()).decode()
    return (f'<img src="data:image/png;base64,{data}" alt="image {image.size[0]}x{image.size[1]}" '
            f'style="max-height:{THUMBNAIL}px"/>')


def cursor_html(docs: list[dict], *, rows: int, caption: str, models: Iterable[str] = ()) -> str:
    """A table of the first ``rows`` documents (``docs`` may hold one more: then "more" is said)."""
    from ..store.frames import OUTPUT_COLUMN, column_namer, row

    more = len(docs) > rows
    shown = [row(d, list(models), "columns", column_namer(OUTPUT_COLUMN)) for d in docs[:rows]]
    columns: dict[str, None] = {}
    for r in shown:
        columns.update(dict.fromkeys(r))
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{compact(r.get(c))}</td>" for c in columns) + "</tr>" for r in shown)
    note = (f"first {rows} documents; more follow" if more else f"{len(shown)} document{'s' if len(shown) != 1 else ''}")
    return (f'<div class="superduperdb-cursor"><div><code>{caption}</code> ({note})</div>'
            f'<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>')
