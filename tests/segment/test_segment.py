"""Segment stage: reading and normalising photos, recentring, carvekit plumbing, bad inputs."""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from img2mesh.app import load_config
from img2mesh.console import ConsoleReporter
from img2mesh.errors import InputError
from img2mesh.pipeline.runner import Runner
from img2mesh.segment.read import load_image
from img2mesh.segment.recentre import recentre
from img2mesh.segment.stage import STAGE as SEGMENT


def rgba_canvas(width: int, height: int, box: tuple[int, int, int, int], colour=(200, 30, 60)) -> Image.Image:
    """Transparent image with an opaque rectangle covering x0..x1-1, y0..y1-1, garbage RGB elsewhere."""
    img = np.zeros((height, width, 4), np.uint8)
    img[:, :, :3] = 17  # RGB under alpha 0 must not leak into the result
    x0, y0, x1, y1 = box
    img[y0:y1, x0:x1, :3] = colour
    img[y0:y1, x0:x1, 3] = 255
    return Image.fromarray(img, "RGBA")


def opaque_bbox(img: Image.Image) -> tuple[int, int, int, int]:
    alpha = np.asarray(img)[:, :, 3] >= 128
    ys, xs = np.nonzero(alpha)
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


# --- recentring ------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["wide", "tall"])
@pytest.mark.parametrize("crop, tag", [(200, "crop200"), (-1, "nocrop")])
def test_recentre_reproduces_official_prepare_inputs(conformance, name, crop, tag):
    from safetensors.numpy import load_file

    reference = load_file(conformance / "vectors" / "preprocess.safetensors")[f"prepare_inputs/{name}/{tag}/input_image"]
    got = recentre(Image.open(conformance / "inputs" / f"{name}.png"), crop).on_white() * 2 - 1
    assert np.array_equal(got, reference)  # bit for bit


@pytest.mark.parametrize("width, height, box, size, offset", [
    # wide object: 101x51 px bounding box -> cropped 100x50 (exclusive edge) -> scale 2
    (300, 200, (40, 70, 141, 121), (200, 100), (28, 78)),
    # tall object
    (150, 300, (20, 30, 71, 131), (100, 200), (78, 28)),
])
def test_recentre_places_object_to_the_pixel(width, height, box, size, offset):
    result = recentre(rgba_canvas(width, height, box), crop_size=200)
    assert result.scale == 2.0 and result.size == size and result.offset == offset
    assert opaque_bbox(result.rgba) == (offset[0], offset[1], offset[0] + size[0], offset[1] + size[1])
    white = result.on_white()
    assert np.all(white[0, 0] == 1.0) and np.all(white[-1, -1] == 1.0)  # background is white
    centre = white[offset[1] + size[1] // 2, offset[0] + size[0] // 2]
    assert np.allclose(centre * 255, (200, 30, 60))


def test_recentre_without_crop_pads_to_square_and_resizes():
    # 128x64 image -> padded to 128x128 (object moves down 32 px) -> resized x2
    result = recentre(rgba_canvas(128, 64, (10, 20, 40, 50)), crop_size=-1)
    assert result.scale == 2.0
    assert opaque_bbox(result.rgba) == (20, (20 + 32) * 2, 80, (50 + 32) * 2)


def test_crop_size_is_configurable():
    result = recentre(rgba_canvas(300, 200, (40, 70, 141, 121)), crop_size=100)
    assert result.size == (100, 50) and result.offset == (78, 103)


# --- reading and normalising -----------------------------------------------------------------

def png_with_size(path: Path, width: int, height: int) -> Path:
    """A syntactically valid PNG whose header claims width x height."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))
    return path


def make_mixed_folder(folder: Path) -> dict[str, tuple[str, tuple[int, int]]]:
    """Every format and mode the stage accepts; returns name -> (expected mode, expected size)."""
    import cv2

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    expected = {}
    rgb = (rng.random((40, 60, 3)) * 255).astype(np.uint8)
    cv2.imwrite(str(folder / "deep16.png"), (rng.random((40, 60, 3)) * 65535).astype(np.uint16))
    expected["deep16.png"] = ("RGB", (60, 40))
    Image.fromarray((np.full((30, 50), 32768)).astype(np.uint16)).save(folder / "grey16.png")
    expected["grey16.png"] = ("RGB", (50, 30))
    Image.fromarray(rgb).convert("CMYK").save(folder / "cmyk.jpg")
    expected["cmyk.jpg"] = ("RGB", (60, 40))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    Image.fromarray(rgb).save(folder / "rotated.jpg", exif=exif)
    expected["rotated.jpg"] = ("RGB", (40, 60))
    rgba_canvas(64, 48, (10, 8, 50, 40)).save(folder / "cutout.webp", lossless=True)
    expected["cutout.webp"] = ("RGBA", (64, 48))
    palette = rgba_canvas(64, 48, (10, 8, 50, 40)).quantize(colors=8, method=Image.Quantize.FASTOCTREE)
    palette.save(folder / "palette.png")
    expected["palette.png"] = ("RGBA" if "transparency" in Image.open(folder / "palette.png").info else "RGB", (64, 48))
    Image.fromarray(rgb).convert("L").save(folder / "grey.bmp")
    expected["grey.bmp"] = ("RGB", (60, 40))
    Image.fromarray(rgb).save(folder / "photo.tiff")
    expected["photo.tiff"] = ("RGB", (60, 40))
    la = Image.fromarray(rgb).convert("LA")
    la.putalpha(Image.fromarray(np.pad(np.full((20, 40), 255, np.uint8), ((10, 10), (10, 10)))))
    la.save(folder / "grey_alpha.png")
    expected["grey_alpha.png"] = ("RGBA", (60, 40))
    return expected


def test_every_accepted_format_normalises_to_8bit_rgb_or_rgba(tmp_path):
    expected = make_mixed_folder(tmp_path)
    for name, (mode, size) in expected.items():
        img = load_image(tmp_path / name, 10**8)
        assert (img.mode, img.size) == (mode, size), name
        assert np.asarray(img).dtype == np.uint8
    grey16 = np.asarray(load_image(tmp_path / "grey16.png", 10**8))
    assert abs(int(grey16[0, 0, 0]) - 128) <= 1  # 32768/65535 scaled, not clipped to 255


def test_cmyk_colours_survive(tmp_path):
    Image.new("RGB", (16, 16), (200, 40, 40)).convert("CMYK").save(tmp_path / "c.jpg", quality=100)
    pixel = np.asarray(load_image(tmp_path / "c.jpg", 10**6))[8, 8].astype(int)
    assert np.all(np.abs(pixel - (200, 40, 40)) < 12)


@pytest.mark.parametrize("make, message", [
    (lambda p: p.write_bytes(b"hello, not a picture"), "is not an image"),
    (lambda p: p.write_bytes(Path(p.parent / "ok.png").read_bytes()[:-40]), "unreadable or corrupt"),
    # Pillow itself refuses a zero-width header, so the message is the generic one.
    (lambda p: png_with_size(p, 0, 10), "too small to hold an object|is not an image"),
    (lambda p: Image.new("RGB", (1, 1), (20, 40, 60)).save(p), "1x1 pixels: too small to hold an object"),
    (lambda p: Image.new("RGBA", (300, 12), (20, 40, 60, 255)).save(p), "300x12 pixels: too small"),
    (lambda p: Image.new("1", (20000, 20000)).save(p), "max_pixels"),
    (lambda p: Image.new("RGBA", (32, 32), (255, 0, 0, 0)).save(p), "alpha channel that is empty"),
])
def test_bad_photos_are_refused_before_out_is_touched(tmp_path, make, message):
    rgba_canvas(64, 64, (10, 10, 50, 50)).save(tmp_path / "ok.png")
    bad = tmp_path / "bad.png"
    make(bad)
    with pytest.raises(InputError, match=message):
        load_image(bad, 10**8)
    out = tmp_path / "out"
    result = Runner([SEGMENT], load_config(), "cpu", ConsoleReporter(quiet=True)).run(bad, out)
    assert not result.ok and result.exit_code == 1
    assert not out.exists()  # nothing written, not even the log


# --- the stage in the pipeline ---------------------------------------------------------------

def run_segment(image: Path, out: Path, *overrides: str):
    cfg = load_config(overrides=["segment.seg_size=64", "segment.matting_size=64", *overrides])
    return Runner([SEGMENT], cfg, "cpu", ConsoleReporter(quiet=True)).run(image, out)


def test_rgba_input_skips_the_model_and_writes_outputs(tmp_path):
    photo = tmp_path / "photo.png"
    rgba_canvas(300, 200, (40, 70, 141, 121)).save(photo)
    out = tmp_path / "out"
    result = run_segment(photo, out)
    assert result.ok, result.error
    assert Image.open(out / "segment" / "rgba.png").size == (300, 200)
    on_white = Image.open(out / "segment" / "input.png")
    assert (on_white.mode, on_white.size) == ("RGB", (256, 256))
    assert Image.open(out / "segment" / "input_rgba.png").mode == "RGBA"
    info = json.loads((out / "img2mesh.json").read_text())["stages"]["segment"]["info"]
    assert info["alpha_source"] == "alpha" and info["bbox_xyxy"] == [40, 70, 140, 120]
    assert info["scale"] == 2.0 and info["object_size"] == [200, 100]
    assert info["mask_coverage"] == round(101 * 51 / (300 * 200), 6)
    assert info["touches_border"] is False


def test_object_touching_border_warns(tmp_path):
    photo = tmp_path / "photo.png"
    rgba_canvas(100, 100, (0, 20, 60, 80)).save(photo)
    out = tmp_path / "out"
    assert run_segment(photo, out).ok
    assert "touches the border" in (out / "img2mesh.log").read_text()


def test_opaque_photo_with_no_segment_is_taken_whole(tmp_path):
    photo = tmp_path / "photo.jpg"
    Image.new("RGB", (200, 100), (10, 200, 10)).save(photo)
    out = tmp_path / "out"
    result = run_segment(photo, out, "segment.use_alpha=always")
    assert result.ok, result.error
    assert opaque_bbox(Image.open(out / "segment" / "input_rgba.png")) == (28, 78, 227, 177)


def test_carvekit_with_untrained_weights_runs_and_finds_no_object(tmp_path):
    """Real carvekit networks (random weights) prove the plumbing; they see no object."""
    photo = tmp_path / "photo.jpg"
    Image.new("RGB", (96, 64), (120, 80, 40)).save(photo)
    out = tmp_path / "out"
    result = run_segment(photo, out, "segment.random_weights=true")
    assert not result.ok
    assert result.error == "no object found in photo.jpg; pass an RGBA image or --no-segment"
    assert not (out / "segment").exists()
    assert json.loads((out / "img2mesh.json").read_text())["stages"]["segment"]["status"] == "failed"


def test_background_remover_batches_and_is_kept_loaded():
    from img2mesh.pipeline.models import ModelCache
    from img2mesh.segment.matting import RemoverSettings, get_remover

    settings = RemoverSettings("cpu", True, 64, 64)
    models = ModelCache()
    remover = get_remover(settings, models)
    outputs = remover([Image.new("RGB", (80, 50), (1, 2, 3)), Image.new("RGB", (30, 70))])
    assert [(o.mode, o.size) for o in outputs] == [("RGBA", (80, 50)), ("RGBA", (30, 70))]
    assert get_remover(RemoverSettings("cpu", True, 64, 64), models) is remover  # same networks
    assert not any(p.requires_grad for network in remover._networks for p in network.parameters())
    assert not settings.fp16 and RemoverSettings("cuda:0", True, 64, 64).fp16


def test_missing_carvekit_weights_offline_say_what_to_do(tmp_path, monkeypatch):
    import carvekit.utils.download_models as dm

    from img2mesh.errors import WeightsError
    from img2mesh.segment.weights import remover_weight

    monkeypatch.setattr("carvekit.ml.files.checkpoints_dir", tmp_path / "ck")
    # The hosts "answer" so that carvekit's own downloader runs and fails; CI has no network at all,
    # where the probe alone would refuse before the downloader (the test below).
    monkeypatch.setattr("img2mesh.utils.weights.unreachable", lambda urls: None)

    def offline(name):
        raise ConnectionError("no network")

    monkeypatch.setattr(dm, "downloader", offline)
    with pytest.raises(WeightsError) as info:
        remover_weight("tracer_b7").download()
    message = str(info.value)
    assert "tracer_b7.pth" in message and "img2mesh weights download tracer_b7" in message
    assert str(tmp_path / "ck") in message and "ConnectionError" in message


def test_carvekit_hosts_unreachable_refuse_without_trying_the_downloader(tmp_path, monkeypatch):
    import carvekit.utils.download_models as dm

    from img2mesh.errors import WeightsError
    from img2mesh.segment.weights import remover_weight

    monkeypatch.setattr("carvekit.ml.files.checkpoints_dir", tmp_path / "ck")
    monkeypatch.setattr("img2mesh.utils.weights.unreachable", lambda urls: "no network: cdn.carve.photos")

    def must_not_run(name):
        raise AssertionError("the downloader ran although no host answers")

    monkeypatch.setattr(dm, "downloader", must_not_run)
    with pytest.raises(WeightsError) as info:
        remover_weight("tracer_b7").download()
    message = str(info.value)
    assert "no network: cdn.carve.photos" in message and str(tmp_path / "ck") in message


def test_mixed_folder_runs_through_segment_in_batch(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from img2mesh.cli import app

    make_mixed_folder(tmp_path / "photos")
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["run", str(tmp_path / "photos"), "-o", str(out), "--until", "segment",
                                      "--no-segment", "--device", "cpu", "-q"])
    assert result.exit_code == 0, result.output
    for name in ("deep16", "grey16", "cmyk", "rotated", "cutout", "palette", "grey", "photo", "grey_alpha"):
        assert (out / name / "segment" / "input.png").is_file(), name
    info = json.loads((out / "rotated" / "img2mesh.json").read_text())["stages"]["segment"]["info"]
    assert info["input_size"] == [40, 60]  # EXIF rotation applied
