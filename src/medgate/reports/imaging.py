"""Pixels for the pictures medgate writes: windowed source images, mask/heat-map blends, text.

Overlays and the one-page summary are secondary captures a viewer shows as they are, so they are
rendered here once: the source image through its modality and VOI LUTs to 8 bits, masks as
coloured fills with outlines, heat maps as a colour map, and text with a CJK font so that the
Chinese guidance renders (Debian's fonts-noto-cjk).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from pydicom import Dataset
from pydicom.pixels import apply_modality_lut, apply_voi_lut

from medgate.reports.errors import ReportError

CJK_FONT_CANDIDATES = (
    Path("/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc"),
    Path("/usr/share/fonts/opentype/noto/NotoSansCJK-Bold.ttc"),
    Path("/usr/share/fonts/truetype/noto/NotoSansCJK-Regular.ttc"),
)
OVERLAY_LABEL = "AI OVERLAY - NOT FOR DIAGNOSIS"

#: Segment colours (RGB), by segment number (cycled); distinguishable and colour-blind friendly.
SEGMENT_COLORS: tuple[tuple[int, int, int], ...] = (
    (230, 159, 0),
    (86, 180, 233),
    (0, 158, 115),
    (240, 228, 66),
    (0, 114, 178),
    (213, 94, 0),
    (204, 121, 167),
)


def segment_color(number: int) -> tuple[int, int, int]:
    return SEGMENT_COLORS[(number - 1) % len(SEGMENT_COLORS)]


@lru_cache(maxsize=16)
def cjk_font(size: int) -> ImageFont.FreeTypeFont:
    """The Noto Sans CJK font at ``size`` px; ReportError if fonts-noto-cjk is not installed."""
    for path in CJK_FONT_CANDIDATES:
        if path.exists():
            return ImageFont.truetype(str(path), size, index=0)
    raise ReportError(
        "no CJK font found (install Debian's fonts-noto-cjk): "
        + ", ".join(str(p) for p in CJK_FONT_CANDIDATES)
    )


def display_image(ds: Dataset, frame: int = 0) -> np.ndarray:
    """The source image as 8-bit grey (rows, cols), through its modality and VOI LUTs."""
    try:
        pixels = ds.pixel_array
    except Exception as exc:  # pydicom raises several types for missing/undecodable pixels
        raise ReportError(f"cannot decode the source image's pixel data: {exc}") from exc
    if ds.get("SamplesPerPixel", 1) != 1:
        rgb = pixels[frame] if pixels.ndim == 4 else pixels
        return np.asarray(Image.fromarray(rgb.astype(np.uint8)).convert("L"))
    if pixels.ndim == 3:
        pixels = pixels[frame]
    values = apply_modality_lut(pixels, ds).astype(np.float64)
    if "WindowCenter" in ds or "VOILUTSequence" in ds:
        values = apply_voi_lut(values, ds, index=0).astype(np.float64)
    low, high = np.percentile(values, [0.5, 99.5])
    if high <= low:
        high = low + 1.0
    grey = np.clip((values - low) / (high - low), 0.0, 1.0)
    if ds.get("PhotometricInterpretation") == "MONOCHROME1":
        grey = 1.0 - grey
    return (grey * 255.0 + 0.5).astype(np.uint8)


def _heat_colors(values: np.ndarray) -> np.ndarray:
    """A simple blue-to-red 'jet'-like colour map for values in [0, 1]; (..., 3) uint8."""
    v = np.clip(values, 0.0, 1.0)
    red = np.clip(1.5 - np.abs(4.0 * v - 3.0), 0.0, 1.0)
    green = np.clip(1.5 - np.abs(4.0 * v - 2.0), 0.0, 1.0)
    blue = np.clip(1.5 - np.abs(4.0 * v - 1.0), 0.0, 1.0)
    return (np.stack([red, green, blue], axis=-1) * 255.0).astype(np.uint8)


def _outline(mask: np.ndarray) -> np.ndarray:
    inner = mask.copy()
    inner[1:, :] &= mask[:-1, :]
    inner[:-1, :] &= mask[1:, :]
    inner[:, 1:] &= mask[:, :-1]
    inner[:, :-1] &= mask[:, 1:]
    return mask & ~inner


def blend(
    grey: np.ndarray,
    labels: np.ndarray | None = None,
    heatmap: np.ndarray | None = None,
    alpha: float = 0.35,
) -> np.ndarray:
    """RGB (rows, cols, 3) uint8: grey image with label fills + outlines and a heat map on top."""
    rgb = np.repeat(grey[..., None], 3, axis=-1).astype(np.float64)
    if heatmap is not None:
        if heatmap.shape != grey.shape:
            raise ReportError(f"heat map shape {heatmap.shape} != image shape {grey.shape}")
        heat = np.clip(np.nan_to_num(heatmap.astype(np.float64)), 0.0, 1.0)
        weight = (alpha + 0.2) * heat[..., None]
        rgb = rgb * (1.0 - weight) + _heat_colors(heat).astype(np.float64) * weight
    if labels is not None:
        if labels.shape != grey.shape:
            raise ReportError(f"mask shape {labels.shape} != image shape {grey.shape}")
        for number in (int(n) for n in np.unique(labels) if n != 0):
            region = labels == number
            color = np.array(segment_color(number), dtype=np.float64)
            rgb[region] = rgb[region] * (1.0 - alpha) + color * alpha
            rgb[_outline(region)] = color
    return np.clip(rgb + 0.5, 0, 255).astype(np.uint8)


def upscale(rgb: np.ndarray, min_size: int) -> Image.Image:
    """A PIL image scaled (nearest) so that its shorter side is at least ``min_size`` px."""
    image = Image.fromarray(rgb)
    factor = max(1, int(np.ceil(min_size / min(image.size))))
    if factor > 1:
        size = (image.width * factor, image.height * factor)
        image = image.resize(size, Image.Resampling.NEAREST)
    return image


def burn_text(image: Image.Image, lines: list[tuple[str, tuple[int, int, int]]]) -> Image.Image:
    """Draw ``lines`` (text, colour) in a dark band at the top-left; returns the same image."""
    draw = ImageDraw.Draw(image)
    size = max(12, image.height // 28)
    font = cjk_font(size)
    y: float = 4
    for text, color in lines:
        box = draw.textbbox((6, y), text, font=font)
        draw.rectangle((box[0] - 3, box[1] - 2, box[2] + 3, box[3] + 2), fill=(0, 0, 0))
        draw.text((6, y), text, font=font, fill=color)
        y = box[3] + 5
    return image


def wrap(text: str, font: ImageFont.FreeTypeFont, width: int) -> list[str]:
    """Split ``text`` into lines no wider than ``width`` px; CJK text breaks between characters."""
    lines: list[str] = []
    for paragraph in text.split("\n"):
        current = ""
        tokens = _tokens(paragraph)
        for token in tokens:
            candidate = current + token
            if current and font.getlength(candidate) > width:
                lines.append(current.rstrip())
                current = token.lstrip()
            else:
                current = candidate
        lines.append(current.rstrip())
    return lines


def _tokens(text: str) -> list[str]:
    """Latin words (with their trailing space) stay whole; every CJK character is a token."""
    tokens: list[str] = []
    word = ""
    for char in text:
        if ord(char) > 0x2E7F:  # CJK and full-width punctuation
            if word:
                tokens.append(word)
                word = ""
            tokens.append(char)
        elif char == " ":
            tokens.append(word + " ")
            word = ""
        else:
            word += char
    if word:
        tokens.append(word)
    return tokens
