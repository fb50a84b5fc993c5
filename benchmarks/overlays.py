"""Side-by-side heatmap overlays: eager PyTorch | a runtime, for each real radiograph, drawn the
way the node draws a heatmap (ReLU, letterbox removed, normalised to its peak), with the
half-peak region outlined: what the equivalence check's IoU compares."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from dicomnode.model.classifier import _image_heatmap

SIDE = 256  # long side of each panel (px)


def _panel(image: np.ndarray, grid: np.ndarray, title: str) -> Image.Image:
    heat = _image_heatmap(np.maximum(grid, 0.0), (int(image.shape[0]), int(image.shape[1])))
    scale = SIDE / max(image.shape)
    size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
    grey = Image.fromarray((np.clip(image, 0, 1) * 255).astype(np.uint8)).resize(size)
    heat_img = Image.fromarray((heat * 255).astype(np.uint8))
    heat_img = heat_img.resize(size, Image.Resampling.BILINEAR)
    base = np.asarray(grey.convert("RGB"), np.float32)
    h = np.asarray(heat_img, np.float32)[..., None] / 255.0
    red = np.array([255.0, 40.0, 0.0], np.float32)
    out = Image.fromarray((base * (1 - 0.5 * h) + red * 0.5 * h).astype(np.uint8))
    half = Image.fromarray(((np.asarray(heat_img) >= 128) * 255).astype(np.uint8))
    edge = half.filter(ImageFilter.FIND_EDGES)
    out.paste((255, 255, 0), mask=edge)  # the half-peak region's outline
    ImageDraw.Draw(out).text((4, 4), title, fill=(255, 255, 0))
    return out


def write_overlays(
    folder: Path,
    *,
    inputs: list[np.ndarray],
    reference: tuple[np.ndarray, np.ndarray],
    outputs: dict[str, tuple[np.ndarray, np.ndarray]],
    count: int,
) -> list[Path]:
    """One PNG per runtime: a row per radiograph (the first `count` outputs), eager | runtime."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, (_, cams) in outputs.items():
        if name == "torch eager fp32":
            continue
        rows = [(_panel(img, reference[1][i], "eager fp32"), _panel(img, cams[i], name))
                for i, img in enumerate(inputs[:count])]  # fmt: skip
        width = max(a.width + b.width for a, b in rows) + 8
        sheet = Image.new("RGB", (width, sum(max(a.height, b.height) + 8 for a, b in rows)))
        y = 0
        for a, b in rows:
            sheet.paste(a, (0, y))
            sheet.paste(b, (a.width + 8, y))
            y += max(a.height, b.height) + 8
        path = folder / f"{re.sub(r'[^a-z0-9]+', '-', name.lower()).strip('-')}.png"
        sheet.save(path)
        written.append(path)
    return written
