"""Small HTML helpers the report page and the stages' report panels share (escaping, figures, files)."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any, Optional


def text(value: Any) -> str:
    """``value`` escaped for HTML text and attribute values."""
    return html.escape(str(value), quote=True)


def rel(path: Path, root: Path) -> str:
    """``path`` relative to the run folder, as a link (the page lives at the run folder's top)."""
    return path.relative_to(root).as_posix()


def figure(run_dir: Path, path: Path, caption: str, css: str = "pic", extra: str = "") -> str:
    """An image with its caption (``css``: pic, thumb, strip or views)."""
    return (f"<figure><img class='{css}{extra}' src='{text(rel(path, run_dir))}' alt='{text(caption)}'>"
            f"<figcaption>{text(caption)}</figcaption></figure>")


def load_json(path: Path) -> Optional[Any]:
    """A JSON file's content, or None when it is missing or unreadable."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def file_size(path: Path) -> str:
    """A file's size in B, kB or MB."""
    size = path.stat().st_size
    return f"{size / 1e6:.1f} MB" if size >= 1e5 else f"{size / 1e3:.0f} kB" if size >= 1e3 else f"{size} B"


def section(title: str, body: str) -> str:
    """A titled panel; empty when there is nothing in it."""
    return f"<h2>{text(title)}</h2>{body}" if body else ""
