"""``OUT/report.html``: one page to judge a run, opened from disk with no network and no server.

The page shows what the run folder holds: the input and its cut-out, the elevation (with the error
curve when estimated), every sample set's 16 views with its score and which one was reconstructed,
the turntable, the seconds per stage, and each ``mesh.glb`` in an interactive 3D view (Google's
``<model-viewer>``, vendored in ``img2mesh/report/vendor``). Images and videos are relative links,
so a copied OUT folder still works. A ``file://`` page may not fetch files, so each GLB travels
base64-encoded in a script beside the page (``report_files/``), from which the viewer reads it.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any, Iterable, Optional

from img2mesh import __version__
from img2mesh.pipeline.manifest import now_iso
from img2mesh.pipeline.summary import read_manifest
from img2mesh.utils.files import atomic_copy, atomic_write_text, sha256_file

REPORT_NAME = "report.html"
FILES_DIR = "report_files"  # beside report.html: the viewer script and the embedded models
VENDOR = Path(__file__).parent / "vendor"
VIEWER_SCRIPT = "model-viewer-umd.min.js"
STAGE_ORDER = ("segment", "elevation", "generate", "reconstruct", "mesh")

STYLE = """
body{font:15px/1.45 system-ui,sans-serif;margin:0 auto;max-width:1200px;padding:16px 24px;color:#222}
h1{font-size:22px;margin:8px 0}h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #ddd}
.bad{color:#b00020;font-weight:600}.ok{color:#1b7e28;font-weight:600}.muted{color:#777}
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


def text(value: Any) -> str:
    """``value`` escaped for HTML text and attribute values."""
    return html.escape(str(value), quote=True)


def _rel(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def _figure(run_dir: Path, path: Path, caption: str, css: str = "pic", extra: str = "") -> str:
    return (f"<figure><img class='{css}{extra}' src='{text(_rel(path, run_dir))}' alt='{text(caption)}'>"
            f"<figcaption>{text(caption)}</figcaption></figure>")


def _load_json(path: Path) -> Optional[Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _input_section(run_dir: Path) -> str:
    seg = run_dir / "segment"
    shown = [(seg / "input.png", "the input"), (seg / "rgba.png", "cut-out and mask, recentred: what SyncDreamer sees")]
    figures = [_figure(run_dir, p, c, extra=" checker" if p.name == "rgba.png" else "") for p, c in shown if p.is_file()]
    return "<h2>Input</h2><div class='row'>" + "".join(figures) + "</div>" if figures else ""


def _elevation_section(run_dir: Path) -> str:
    data = _load_json(run_dir / "elevation" / "elevation.json")
    if not isinstance(data, dict):
        return ""
    words = f"{data.get('elevation_deg', '?')}° ({text(data.get('source', '?'))})"
    if data.get("fallback_reason"):
        words += f" — <span class='bad'>{text(data['fallback_reason'])}</span>"
    curve = run_dir / "elevation" / "error_curve.png"
    figure = _figure(run_dir, curve, "reprojection error per elevation hypothesis") if curve.is_file() else ""
    return f"<h2>Elevation</h2><p>Input camera elevation: {words}</p><div class='row'>{figure}</div>"


def _samples_section(run_dir: Path, reconstructed: set[str]) -> str:
    folders = sorted(p for p in (run_dir / "generate").glob("sample_*") if p.is_dir())
    if not folders:
        return ""
    scores = _load_json(run_dir / "generate" / "scores.json") or {}
    by_sample = {f"sample_{s.get('sample')}": s for s in scores.get("samples", []) if isinstance(s, dict)}
    parts = ["<h2>Generated views</h2><div class='row'>"]
    for folder in folders:
        image = next((folder / n for n in ("grid.png", "strip.png") if (folder / n).is_file()), None)
        score = by_sample.get(folder.name, {})
        facts = [f"score {score['score']:.3f}"] if isinstance(score.get("score"), (int, float)) else []
        chosen = folder.name in reconstructed
        facts.append("<span class='ok'>reconstructed</span>" if chosen else "<span class='muted'>not reconstructed</span>")
        caption = f"{folder.name}: " + ", ".join(facts)
        if image is not None:
            css = "views" if image.name == "grid.png" else "strip"
            parts.append(f"<figure><img class='{css}{' chosen' if chosen else ''}' src='{text(_rel(image, run_dir))}' "
                         f"alt='{text(folder.name)}'><figcaption>{caption}</figcaption></figure>")
    return "".join(parts) + "</div>"


def _reconstructed_samples(manifest_stages: dict[str, Any]) -> set[str]:
    info = manifest_stages.get("reconstruct", {}).get("info", {})
    chosen = info.get("samples") if info.get("select") == "all" else [info.get("sample")]
    return {f"sample_{k}" for k in chosen or [] if k is not None}


def mesh_folders(run_dir: Path) -> list[Path]:
    """``OUT/mesh`` or, with ``--select all``, its ``sample_K`` folders: where each GLB is."""
    mesh = run_dir / "mesh"
    return [f for f in [mesh, *sorted(mesh.glob("sample_*"))] if (f / "mesh.glb").is_file()]


def _mesh_section(run_dir: Path, folders: list[Path]) -> str:
    parts = []
    for folder in folders:
        key = _rel(folder / "mesh.glb", run_dir)
        title = "Mesh" if folder.name == "mesh" else f"Mesh of {folder.name}"
        parts.append(f"<h2>{text(title)}</h2><model-viewer data-model='{text(key)}' alt='{text(key)}' camera-controls "
                     f"touch-action='pan-y' shadow-intensity='0.6' exposure='1.1'></model-viewer>"
                     f"<p class='muted'>{text(key)}: drag to orbit, scroll to zoom.</p>")
        media = []
        for name in ("turntable.mp4", "turntable.gif", "preview.png"):
            path = folder / name
            if not path.is_file():
                continue
            if name.endswith(".mp4"):
                media.append(f"<figure><video src='{text(_rel(path, run_dir))}' autoplay loop muted playsinline "
                             f"width='360'></video><figcaption>turntable</figcaption></figure>")
            elif not (name.endswith(".gif") and (folder / "turntable.mp4").is_file()):
                media.append(_figure(run_dir, path, name.split(".")[0]))
        parts.append("<div class='row'>" + "".join(media) + "</div>")
        files = [p for p in sorted(folder.iterdir()) if p.is_file() and p.suffix in (".glb", ".obj", ".ply")]
        parts.append("<ul class='files'>" + "".join(
            f"<li><a href='{text(_rel(p, run_dir))}'>{text(p.name)}</a> <span class='muted'>{_size(p)}</span>"
            f"{' — quads, for retopology' if p.name == 'mesh_quad.obj' else ''}</li>" for p in files) + "</ul>")
    return "".join(parts)


def _size(path: Path) -> str:
    size = path.stat().st_size
    return f"{size / 1e6:.1f} MB" if size >= 1e5 else f"{size / 1e3:.0f} kB" if size >= 1e3 else f"{size} B"


def _timing_section(stages: dict[str, Any]) -> str:
    rows = []
    names = [n for n in STAGE_ORDER if n in stages] + [n for n in stages if n not in STAGE_ORDER]
    for name in names:
        record = stages[name]
        seconds = record.get("seconds")
        status = record.get("status", "?")
        css = "ok" if status == "done" else "bad" if status in ("failed", "interrupted") else "muted"
        rows.append(f"<tr><td>{text(name)}</td><td class='{css}'>{text(status)}</td>"
                    f"<td>{'' if seconds is None else f'{seconds:.1f} s'}</td>"
                    f"<td class='bad'>{text(record.get('error') or '')}</td></tr>")
    total = sum(r.get("seconds") or 0 for r in stages.values())
    return ("<h2>Time per stage</h2><table><tr><th>stage</th><th>status</th><th>time</th><th></th></tr>"
            + "".join(rows) + f"<tr><th>total</th><th></th><th>{total:.1f} s</th><th></th></tr></table>")


def _embed_models(run_dir: Path, folders: list[Path]) -> list[str]:
    """``report_files/models.js`` holding each GLB base64-encoded; the script names the page loads."""
    files = run_dir / FILES_DIR
    files.mkdir(exist_ok=True)
    viewer = files / VIEWER_SCRIPT
    source = VENDOR / VIEWER_SCRIPT
    if not viewer.is_file() or sha256_file(viewer) != sha256_file(source):
        atomic_copy(source, viewer)
    lines = ["window.IMG2MESH_MODELS = {"]
    for folder in folders:
        encoded = base64.b64encode((folder / "mesh.glb").read_bytes()).decode("ascii")
        lines.append(f"  {json.dumps(_rel(folder / 'mesh.glb', run_dir))}: \"{encoded}\",")
    lines.append("};")
    atomic_write_text(files / "models.js", "\n".join(lines) + "\n")
    return [f"{FILES_DIR}/{VIEWER_SCRIPT}", f"{FILES_DIR}/models.js"]


def write_report(run_dir: Path, error: Optional[str] = None) -> Path:
    """Write (or refresh) ``run_dir/report.html`` from what the run folder holds; its path."""
    run_dir = Path(run_dir)
    manifest = read_manifest(run_dir)
    stages = manifest.stages
    source = (manifest.data.get("input") or {}).get("path", str(run_dir))
    folders = mesh_folders(run_dir)
    scripts = _embed_models(run_dir, folders) if folders else []
    if not folders:
        (run_dir / FILES_DIR / "models.js").unlink(missing_ok=True)  # a mesh of an earlier run is gone
    status = (f"<p class='bad'>failed: {text(error)}</p>" if error else
              "<p class='ok'>finished</p>" if stages.get("mesh", {}).get("status") == "done" else
              "<p class='muted'>not finished yet: run the same command again to go on</p>")
    body = [
        f"<h1>img2mesh: {text(Path(source).name)}</h1>",
        status,
        f"<p class='muted'>{text(source)} · img2mesh {text(manifest.data.get('img2mesh_version') or __version__)} · "
        f"device {text(manifest.data.get('device') or '?')} · report written {text(now_iso())}</p>",
        _mesh_section(run_dir, folders) if folders else "<h2>Mesh</h2><p class='muted'>no mesh yet</p>",
        _input_section(run_dir),
        _elevation_section(run_dir),
        _samples_section(run_dir, _reconstructed_samples(stages)),
        _timing_section(stages) if stages else "",
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
