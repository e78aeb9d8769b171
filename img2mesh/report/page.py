"""``OUT/report.html``: one page to judge a run, opened from disk with no network and no server.

The page is a frame around the stages' own panels (``Stage.report``, in stage order): on top, each
mesh the run published (``OUT/mesh.glb``, ``OUT/sample_K/mesh.glb``) in an interactive 3D view
(Google's ``<model-viewer>``, vendored in ``img2mesh/report/vendor``) and the warnings the stages
logged; then every stage's panel; last, the seconds per stage. Images and videos are relative links,
so a copied OUT folder still works. A ``file://`` page may not fetch files, so each GLB travels
base64-encoded in a script beside the page (``report_files/``), from which the viewer reads it.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

from img2mesh import __version__
from img2mesh.pipeline.contract import Stage
from img2mesh.pipeline.manifest import now_iso
from img2mesh.pipeline.summary import REPORT_NAME, read_manifest
from img2mesh.utils.files import atomic_copy, atomic_write_text, sha256_file
from img2mesh.utils.html import text

FILES_DIR = "report_files"  # beside report.html: the viewer script and the embedded models
VENDOR = Path(__file__).parent / "vendor"
VIEWER_SCRIPT = "model-viewer-umd.min.js"

STYLE = """
body{font:15px/1.45 system-ui,sans-serif;margin:0 auto;max-width:1200px;padding:16px 24px;color:#222}
h1{font-size:22px;margin:8px 0}h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #ddd}
.bad{color:#b00020;font-weight:600}.ok{color:#1b7e28;font-weight:600}.muted{color:#777}.warn{color:#8a5a00}
.noise{background:#b00020;color:#fff;padding:10px 14px;font-size:17px;font-weight:600;border-radius:4px}
.row{display:flex;flex-wrap:wrap;gap:16px;align-items:flex-start}
figure{margin:0}figcaption{font-size:13px;color:#555}
.checker{background:repeating-conic-gradient(#ddd 0 25%,#fff 0 50%) 0 0/16px 16px}
img.thumb{width:128px;height:128px;object-fit:contain;border:1px solid #ccc}
img.pic{max-width:360px;max-height:360px;border:1px solid #ccc}
img.strip{width:100%;border:1px solid #ccc}img.views{width:560px;max-width:100%;border:1px solid #ccc}
ul.files{columns:2}
.chosen{outline:3px solid #1b7e28;outline-offset:3px}
table{border-collapse:collapse}td,th{padding:3px 12px;border-bottom:1px solid #eee;text-align:left}
model-viewer{width:100%;height:520px;background:#f4f4f4;border:1px solid #ccc}
"""

# Counts the viewers that loaded their model (the browser test reads window.img2meshReport).
SCRIPT = """
window.img2meshReport = {expected: 0, loaded: 0, errors: []};
for (const viewer of document.querySelectorAll('model-viewer[data-model]')) {
  window.img2meshReport.expected += 1;
  viewer.addEventListener('load', () => { window.img2meshReport.loaded += 1; });
  viewer.addEventListener('error', (event) => {
    window.img2meshReport.errors.push(viewer.dataset.model + ': ' + (event.detail && event.detail.type));
  });
  const data = (window.IMG2MESH_MODELS || {})[viewer.dataset.model];
  if (data) { viewer.src = 'data:model/gltf-binary;base64,' + data; }
  else { window.img2meshReport.errors.push(viewer.dataset.model + ': embedded model missing'); }
}
"""


def published_meshes(run_dir: Path, stages: Sequence[Stage], records: dict[str, Any]) -> list[str]:
    """The GLBs the run published at the top of OUT (relative paths), the last stage's claim winning."""
    found: dict[str, str] = {}
    for stage in stages:
        for name in records.get(stage.name, {}).get("published", []) or []:
            if name.endswith(".glb") and (run_dir / name).is_file():
                found[name] = stage.name
    return sorted(found, key=lambda name: (name.count("/"), name))


def _viewer_section(names: list[str]) -> str:
    parts = []
    for name in names:
        title = "Mesh" if "/" not in name else f"Mesh of {name.split('/')[0]}"
        parts.append(f"<h2>{text(title)}</h2><model-viewer data-model='{text(name)}' alt='{text(name)}' camera-controls "
                     f"touch-action='pan-y' shadow-intensity='0.6' exposure='1.1'></model-viewer>"
                     f"<p class='muted'>{text(name)}: drag to orbit, scroll to zoom.</p>")
    return "".join(parts) or "<h2>Mesh</h2><p class='muted'>no mesh yet</p>"


def _warnings_section(stages: Sequence[Stage], records: dict[str, Any]) -> str:
    items = [f"<li><b>{text(stage.name)}</b>: {text(message)}</li>"
             for stage in stages for message in records.get(stage.name, {}).get("warnings", []) or []]
    return f"<h2>Warnings</h2><ul class='warn'>{''.join(items)}</ul>" if items else ""


def _timing_section(stages: Sequence[Stage], records: dict[str, Any]) -> str:
    rows = []
    names = [s.name for s in stages if s.name in records] + [n for n in records if n not in {s.name for s in stages}]
    for name in names:
        record = records[name]
        seconds = record.get("seconds") if record.get("status") != "off" else None
        status = record.get("status", "?")
        css = "ok" if status == "done" else "bad" if status in ("failed", "interrupted") else "muted"
        rows.append(f"<tr><td>{text(name)}</td><td class='{css}'>{text(status)}</td>"
                    f"<td>{'' if seconds is None else f'{seconds:.1f} s'}</td>"
                    f"<td class='bad'>{text(record.get('error') or '')}</td></tr>")
    total = sum(r.get("seconds") or 0 for r in records.values() if r.get("status") != "off")
    return ("<h2>Time per stage</h2><table><tr><th>stage</th><th>status</th><th>time</th><th></th></tr>"
            + "".join(rows) + f"<tr><th>total</th><th></th><th>{total:.1f} s</th><th></th></tr></table>")


def _embed_models(run_dir: Path, names: list[str]) -> list[str]:
    """``report_files/models.js`` holding each GLB base64-encoded; the script names the page loads."""
    files = run_dir / FILES_DIR
    files.mkdir(exist_ok=True)
    viewer = files / VIEWER_SCRIPT
    source = VENDOR / VIEWER_SCRIPT
    if not viewer.is_file() or sha256_file(viewer) != sha256_file(source):
        atomic_copy(source, viewer)
    lines = ["window.IMG2MESH_MODELS = {"]
    for name in names:
        encoded = base64.b64encode((run_dir / name).read_bytes()).decode("ascii")
        lines.append(f"  {json.dumps(name)}: \"{encoded}\",")
    lines.append("};")
    atomic_write_text(files / "models.js", "\n".join(lines) + "\n")
    return [f"{FILES_DIR}/{VIEWER_SCRIPT}", f"{FILES_DIR}/models.js"]


def _panel(stage: Stage, run_dir: Path, records: dict[str, Any]) -> str:
    """A stage's panel; a panel that fails shows one line instead of breaking the page."""
    if stage.report is None or records.get(stage.name, {}).get("status") == "off":
        return ""
    try:
        return stage.report(run_dir, records)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return f"<h2>{text(stage.name)}</h2><p class='bad'>this panel could not be drawn ({text(exc)})</p>"


def write_report(run_dir: Path, stages: Sequence[Stage], error: Optional[str] = None) -> Path:
    """Write (or refresh) ``run_dir/report.html`` from what the run folder holds; its path."""
    run_dir = Path(run_dir)
    manifest = read_manifest(run_dir)
    records = manifest.stages
    source = (manifest.data.get("input") or {}).get("path", str(run_dir))
    meshes = published_meshes(run_dir, stages, records)
    scripts = _embed_models(run_dir, meshes) if meshes else []
    if not meshes:
        (run_dir / FILES_DIR / "models.js").unlink(missing_ok=True)  # a mesh of an earlier run is gone
    last = stages[-1].name if stages else None
    status = (f"<p class='bad'>failed: {text(error)}</p>" if error else
              "<p class='ok'>finished</p>" if last and records.get(last, {}).get("status") in ("done", "off") else
              "<p class='muted'>not finished yet: run the same command again to go on</p>")
    untrained = manifest.data.get("random_weights") or []
    banner = (f"<p class='noise' id='random-weights'>Random weights ({text(', '.join(untrained))}): untrained "
              f"networks stood in for the models, so this mesh is noise, not a reconstruction of the photo.</p>"
              if untrained else "")
    body = [
        f"<h1>img2mesh: {text(Path(source).name)}</h1>",
        banner,
        status,
        f"<p class='muted'>{text(source)} · img2mesh {text(manifest.data.get('img2mesh_version') or __version__)} · "
        f"device {text(manifest.data.get('device') or '?')} · report written {text(now_iso())}</p>",
        _viewer_section(meshes),
        _warnings_section(stages, records),
        *(_panel(stage, run_dir, records) for stage in stages),
        _timing_section(stages, records) if records else "",
    ]
    page = html_page(f"img2mesh: {Path(source).name}", body, scripts)
    path = run_dir / REPORT_NAME
    atomic_write_text(path, page)
    return path


def html_page(title: str, body: Iterable[str], scripts: Iterable[str]) -> str:
    """A whole page: ``body`` parts, then the ``scripts`` (relative paths) and the viewer hook-up."""
    tags = "".join(f"<script src='{text(s)}'></script>" for s in scripts)
    return (f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{text(title)}</title>"
            f"<meta name='viewport' content='width=device-width,initial-scale=1'><style>{STYLE}</style></head>"
            f"<body>{''.join(body)}{tags}<script>{SCRIPT}</script></body></html>\n")
