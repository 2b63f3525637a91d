"""Small real datasets that load offline, for demos, notebooks and benchmarks."""

from __future__ import annotations

import inspect
import re


def numpy_docstrings(n: int | None = None, *, max_chars: int = 400) -> list[dict]:
    """Paragraphs of numpy's own docstrings: real technical English text.

    Each record is ``{'text', 'name', 'module', 'kind'}`` where ``kind`` is
    ``'summary'`` (the first paragraph) or ``'body'``. Deterministic order.

    Parameters
    ----------
    n : int, optional
        At most this many records (default: all, about 5,000).
    max_chars : int
        Paragraphs are cut to this length.

    Examples
    --------
    >>> records = numpy_docstrings(3)
    >>> sorted(records[0])
    ['kind', 'module', 'name', 'text']
    """
    import numpy

    seen: set[int] = set()
    records: list[dict] = []
    modules = [("numpy", numpy)] + [
        (f"numpy.{m}", getattr(numpy, m)) for m in ("linalg", "fft", "random", "ma", "polynomial", "char", "lib")
        if hasattr(numpy, m)
    ]
    for module_name, module in modules:
        for name in sorted(dir(module)):
            if name.startswith("_"):
                continue
            obj = getattr(module, name, None)
            doc = inspect.getdoc(obj) if obj is not None else None
            if not doc or id(obj) in seen or obj.__class__.__name__ == "module":
                continue
            seen.add(id(obj))
            paragraphs = [p.strip() for p in re.split(r"\n\s*\n", doc.split("\nParameters\n")[0])]
            for i, paragraph in enumerate(p for p in paragraphs if len(p) > 40 and not p.startswith(">>>")):
                text = " ".join(paragraph.split())[:max_chars]
                records.append({"text": text, "name": f"{module_name}.{name}", "module": module_name,
                                "kind": "summary" if i == 0 else "body"})
                if n is not None and len(records) >= n:
                    return records
    return records
