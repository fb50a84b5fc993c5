"""The overlay: a Secondary Capture of the radiograph with the heatmap and a burned-in banner.

Any viewer shows a Secondary Capture, so this is where a radiologist sees the result without
SR support. Layout, top to bottom, at most `SC_MAX_SIZE` pixels on the long side:

    banner   "AI triage: fracture suspected 0.87 — not a diagnosis" (red / amber / green),
             prefixed "UNTRAINED DEMO — " for the demo model
    image    the radiograph in display orientation (as `preprocess.to_grayscale` gives it),
             the heatmap blended in as a jet-like colour map, transparent where low
    footer   model name and version, small

The banner sits above the image rather than on it, so no anatomy is hidden. The image keeps
its aspect and orientation (no rotation, no flip), so the source's Patient Orientation still
holds. RGB 8-bit, Explicit VR Little Endian, BurnedInAnnotation YES. Pure: values in, values
out.
"""

from __future__ import annotations

import contextlib
import io
import re
import textwrap
from functools import lru_cache
from typing import TYPE_CHECKING

import highdicom as hd
import numpy as np
from PIL import Image, ImageDraw
from pydicom import Dataset
from pydicom.uid import ExplicitVRLittleEndian

from dicomnode import MANUFACTURER
from dicomnode.model.card import ModelCard
from dicomnode.objects.captions import FontType, captions
from dicomnode.objects.captions import font as _font
from dicomnode.objects.codes import (
    SOURCE_IMAGE_FOR_PROCESSING,
    algorithm_equipment,
    software_versions,
)
from dicomnode.objects.series import SC_SERIES_DESCRIPTION, SC_SERIES_NUMBER
from dicomnode.objects.sources import blanked, output_header

if TYPE_CHECKING:
    from dicomnode.model.classifier import Prediction

#: Bound of the long side of the whole overlay (banner and footer included), in pixels.
SC_MAX_SIZE = 1024
#: Narrow images are centred on a canvas at least this wide, so the banner stays legible.
MIN_CANVAS_WIDTH = 768
BANNER_FONT_SIZE = 32
FOOTER_FONT_SIZE = 18
#: Heatmap values below this are fully transparent; opacity grows to HEATMAP_MAX_ALPHA at 1.
HEATMAP_FLOOR = 0.25
HEATMAP_MAX_ALPHA = 0.5

#: Banner background and text colour per outcome: red, amber, green.
BANNER_COLOURS: dict[str, tuple[tuple[int, int, int], tuple[int, int, int]]] = {
    "positive": ((200, 16, 16), (255, 255, 255)),
    "doubt": ((255, 176, 0), (0, 0, 0)),
    "negative": ((0, 128, 48), (255, 255, 255)),
}
_FOOTER_COLOURS = ((0, 0, 0), (200, 200, 200))
_PAD = 10

#: Body Part Examined values of unpaired structures: Laterality is then absent, not empty
#: (General Series, Type 2C; the set dciodvfy treats as unpaired).
UNPAIRED_BODY_PARTS = frozenset(
    {
        "ABDOMEN", "ABDOMENPELVIS", "BRAIN", "CHEST", "CHESTABDOMEN", "CHESTABDPELVIS",
        "COCCYX", "CSPINE", "FACE", "HEAD", "HEADNECK", "HEART", "JAW", "LIVER", "LSPINE",
        "NECK", "NOSE", "PELVIS", "SKULL", "SPINE", "SSPINE", "STERNUM", "TSPINE", "WHOLEBODY",
    }
)  # fmt: skip

#: highdicom checks these names and quotes them in a warning when they look odd (e.g. one
#: component): kept out of its constructor so no patient data reaches logs, set afterwards.
_PERSON_NAMES = ("PatientName", "ReferringPhysicianName")

_BIPED = re.compile(r"^[APRLHF]+$")
_QUADRUPED = re.compile(r"^(LE|RT|CR|CD|PR|DI|PA|PL|D|V|R|M|L)+$")


def banner_text(
    outcome: str, probability: float, *, trained: bool = True, language: str = "en"
) -> str:
    """The sentence burned into the banner for `outcome` ("positive", "doubt", "negative")."""
    return captions(language).banner(outcome, probability, trained=trained)


def footer_text(card: ModelCard, *, language: str = "en") -> str:
    """The small print under the image: which model made the overlay."""
    return captions(language).footer(display_name=card.display_name, version=card.version)


def render_overlay(
    image: np.ndarray, heatmap: np.ndarray, *, outcome: str, probability: float,
    card: ModelCard, language: str = "en",
) -> np.ndarray:  # fmt: skip
    """The overlay's pixels: uint8 RGB, (rows, columns, 3), long side ≤ `SC_MAX_SIZE`.

    The text is in `language` when the font found can draw it, else in English (a banner of
    empty boxes would tell the reader nothing)."""
    if image.ndim != 2 or min(image.shape) < 1:
        raise ValueError("image must be a non-empty 2-D grayscale array")
    banner_font, footer_font = _font(BANNER_FONT_SIZE, bold=True), _font(FOOTER_FONT_SIZE)
    language = drawable_language(language)
    banner = banner_text(outcome, probability, trained=card.trained, language=language)
    footer = footer_text(card, language=language)
    # Wrapping on the narrowest canvas gives the most lines: reserving that much height
    # bounds the whole overlay whatever width the image ends up with.
    reserve = _text_block_height(banner, banner_font, MIN_CANVAS_WIDTH) + _text_block_height(
        footer, footer_font, MIN_CANVAS_WIDTH
    )
    rows, columns = _fit(image.shape, SC_MAX_SIZE, SC_MAX_SIZE - reserve)
    width = max(columns, MIN_CANVAS_WIDTH)

    grey = _resize(_finite(image), rows, columns, _grey_filter(image.shape, rows))
    # The class activation map is smooth and coarse (the model's grid): bilinear is enough.
    heat = _resize(_finite(heatmap), rows, columns, Image.Resampling.BILINEAR)
    picture = _blend(grey, heat)

    banner_lines = _wrap(banner, banner_font, width)
    footer_lines = _wrap(footer, footer_font, width)
    banner_height = _text_block_height(banner, banner_font, width)
    footer_height = _text_block_height(footer, footer_font, width)
    canvas = Image.new("RGB", (width, banner_height + rows + footer_height), (0, 0, 0))
    canvas.paste(Image.fromarray(picture, "RGB"), ((width - columns) // 2, banner_height))
    draw = ImageDraw.Draw(canvas)
    background, ink = BANNER_COLOURS[str(outcome)]
    draw.rectangle((0, 0, width - 1, banner_height - 1), fill=background)
    _draw_lines(draw, banner_lines, banner_font, top=0, colour=ink, width=width, centre=True)
    footer_background, footer_ink = _FOOTER_COLOURS
    draw.rectangle((0, banner_height + rows, width - 1, canvas.height - 1), fill=footer_background)
    _draw_lines(
        draw, footer_lines, footer_font, top=banner_height + rows, colour=footer_ink, width=width
    )
    return np.asarray(canvas, dtype=np.uint8).copy()


def build_sc(
    *,
    source: Dataset,
    image: np.ndarray,
    prediction: Prediction,
    card: ModelCard,
    sop_instance_uid: str,
    series_instance_uid: str,
    instance_number: int,
    language: str = "en",
) -> hd.sc.SCImage:
    """The overlay of one radiograph as a Secondary Capture in the source's study.

    `image` is `preprocess.to_grayscale(source)`; `prediction.heatmap` has its aspect and
    orientation. Patient and study modules and Specific Character Set come from `source`,
    normalised by `dicomnode.objects.sources.output_header` (raises `SourceRejected` if it cannot be
    referenced at all).
    """
    source = output_header(source)
    pixels = render_overlay(
        image,
        prediction.heatmap,
        outcome=str(prediction.outcome),
        probability=float(prediction.probability),
        card=card,
        language=language,
    )
    laterality = source.get("Laterality") or source.get("ImageLaterality")
    unpaired = str(source.get("BodyPartExamined") or "").upper() in UNPAIRED_BODY_PARTS
    sc = hd.sc.SCImage.from_ref_dataset(
        ref_dataset=blanked(source, _PERSON_NAMES),
        pixel_array=pixels,
        photometric_interpretation="RGB",
        bits_allocated=8,
        coordinate_system="PATIENT",
        series_instance_uid=series_instance_uid,
        series_number=SC_SERIES_NUMBER,
        sop_instance_uid=sop_instance_uid,
        instance_number=instance_number,
        manufacturer=MANUFACTURER,
        # Type 2C: only for a paired (or unknown) part; an unpaired one must not have it.
        laterality=laterality if laterality in ("R", "L") and not unpaired else None,
        # Placeholder: the source's own value is set below (highdicom accepts only
        # single-letter orientations, DICOM also allows oblique ones such as "AL").
        patient_orientation=("L", "F"),
        transfer_syntax_uid=ExplicitVRLittleEndian,
        contributing_equipment=[algorithm_equipment(card)],
        series_description=SC_SERIES_DESCRIPTION,
        manufacturer_model_name=card.display_name,
    )
    sc.add_new("SoftwareVersions", "LO", software_versions(card))
    # A SOP class unknown to highdicom raises KeyError: from_ref_dataset copied the main ones.
    with contextlib.suppress(KeyError):
        sc.copy_patient_and_study_information(source)
    for keyword in _PERSON_NAMES:
        setattr(sc, keyword, source.get(keyword))
    sc.add_new("PatientOrientation", "CS", _patient_orientation(source))
    if source.get("AnatomicalOrientationType") == "QUADRUPED":
        sc.AnatomicalOrientationType = "QUADRUPED"
    body_part = str(source.get("BodyPartExamined") or "").upper()
    if body_part:
        sc.BodyPartExamined = body_part
    if "Laterality" not in sc and body_part not in UNPAIRED_BODY_PARTS:
        # Type 2C: a paired (or unknown) part whose side is unknown: present and empty.
        sc.add_new("Laterality", "CS", None)
    sc.BurnedInAnnotation = "YES"
    sc.ConversionType = "WSD"  # rendered on a workstation, not digitised from a video signal
    sc.DerivationDescription = (
        "AI fracture triage overlay: heatmap and result banner burned in; not a diagnosis"
    )
    reference = Dataset()
    reference.ReferencedSOPClassUID = source.SOPClassUID
    reference.ReferencedSOPInstanceUID = source.SOPInstanceUID
    reference.PurposeOfReferenceCodeSequence = [
        hd.sr.CodedConcept.from_code(SOURCE_IMAGE_FOR_PROCESSING)
    ]
    sc.SourceImageSequence = [reference]
    if source.get("LossyImageCompression") == "01":
        # Once lossy, always lossy: a derived image keeps the flag and its history.
        for keyword in ("LossyImageCompression", "LossyImageCompressionRatio",
                        "LossyImageCompressionMethod"):  # fmt: skip
            if keyword in source:
                setattr(sc, keyword, source[keyword].value)
    return sc


def render_png(sc: Dataset, *, max_size: int = 512) -> bytes:
    """A PNG thumbnail (long side ≤ `max_size`) of an 8-bit RGB or grayscale image dataset."""
    pixels = sc.pixel_array
    if pixels.dtype != np.uint8:
        raise ValueError("render_png expects 8-bit pixel data")
    picture = Image.fromarray(pixels, "RGB" if pixels.ndim == 3 else "L")
    picture.thumbnail((max_size, max_size), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def _patient_orientation(source: Dataset) -> list[str] | None:
    """The source's Patient Orientation if it is a valid two-value one, else empty (Type 2)."""
    value = source.get("PatientOrientation")
    if value is None or isinstance(value, str) or len(value) != 2:
        return None
    pattern = _QUADRUPED if source.get("AnatomicalOrientationType") == "QUADRUPED" else _BIPED
    values = [str(v) for v in value]
    return values if all(pattern.match(v) for v in values) else None


def _fit(shape: tuple[int, ...], max_columns: int, max_rows: int) -> tuple[int, int]:
    """(rows, columns) of `shape` scaled to fit the box, aspect kept (up- or down-scaled)."""
    rows, columns = shape[0], shape[1]
    scale = min(max_columns / columns, max_rows / rows)
    return max(1, round(rows * scale)), max(1, round(columns * scale))


def _finite(array: np.ndarray) -> np.ndarray:
    """float32 without NaN/inf (a full copy only when there is something to replace)."""
    array = np.asarray(array, dtype=np.float32)
    return array if np.isfinite(array).all() else np.nan_to_num(array)


def _grey_filter(shape: tuple[int, ...], rows: int) -> Image.Resampling:
    """Lanczos to enlarge; Hamming to shrink. A radiograph of 1760 px drawn at ~900 px is a
    shrink by less than 2, where no box reduction applies and Lanczos (6 taps per source pixel
    spacing) took 30 ms of the overlay's 42; Hamming takes 10 ms and differs from it by 0.07
    grey levels on average, < 1 level at the 99th percentile, up to 10 at isolated bone edges
    (measured on RG3 and RG1, 8 bits per channel)."""
    return Image.Resampling.HAMMING if rows < shape[0] else Image.Resampling.LANCZOS


def _resize(array: np.ndarray, rows: int, columns: int, resample: Image.Resampling) -> np.ndarray:
    """Resize a float image; when shrinking by 2x or more, a box reduction by the integer
    factor comes first (Pillow's `reducing_gap=1`), then `resample`: ~5x faster than Lanczos
    over the full image and within 0.04 (of 1) of it at high-contrast edges, 3e-4 on average
    (measured on RG3 1760 -> 880), invisible at 8 bits per channel."""
    if array.shape == (rows, columns):
        return array
    picture = Image.fromarray(np.ascontiguousarray(array, dtype=np.float32), "F")
    resized = picture.resize((columns, rows), resample, reducing_gap=1.0)
    return np.asarray(resized, np.float32)


def _heat_tables() -> tuple[list[int], list[int], list[int], list[int]]:
    """Lookup tables over 8-bit heat: a jet-like colour (R, G, B) and the overlay's opacity,
    transparent below HEATMAP_FLOOR and growing to HEATMAP_MAX_ALPHA at 1."""
    level = np.arange(256, dtype=np.float64) / 255.0
    red, green, blue = (np.clip(1.5 - np.abs(4.0 * level - c), 0.0, 1.0) for c in (3.0, 2.0, 1.0))
    alpha = HEATMAP_MAX_ALPHA * np.clip((level - HEATMAP_FLOOR) / (1.0 - HEATMAP_FLOOR), 0.0, 1.0)
    red8, green8, blue8, alpha8 = (
        np.round(table * 255.0).astype(np.uint8).tolist() for table in (red, green, blue, alpha)
    )
    return red8, green8, blue8, alpha8


_HEAT_TABLES = _heat_tables()


def _blend(grey: np.ndarray, heat: np.ndarray) -> np.ndarray:
    """Grey radiograph (values in [0, 1]) under the colour map of `heat` ([0, 1]), as uint8
    RGB. Done in 8 bits through lookup tables and Pillow's compositing (4x faster than float
    arithmetic over the whole picture; at most 2 levels from it)."""
    red, green, blue, alpha = _HEAT_TABLES
    grey8 = Image.fromarray(_to_uint8(grey), "L")
    heat8 = Image.fromarray(_to_uint8(heat), "L")
    colour = Image.merge("RGB", [heat8.point(red), heat8.point(green), heat8.point(blue)])
    picture = Image.composite(colour, grey8.convert("RGB"), heat8.point(alpha))
    return np.asarray(picture, dtype=np.uint8)


def _to_uint8(values: np.ndarray) -> np.ndarray:
    """[0, 1] floats (clipped) rounded to 0..255."""
    scaled = np.clip(values, 0.0, 1.0) * np.float32(255.0)
    scaled += np.float32(0.5)
    return scaled.astype(np.uint8)


@lru_cache(maxsize=8)
def drawable_language(language: str) -> str:
    """The language the overlay's text is drawn in: `language` when the fonts found have all
    its letters, else English (a banner of empty boxes would tell the reader nothing)."""
    fonts = (_font(BANNER_FONT_SIZE, bold=True), _font(FOOTER_FONT_SIZE))
    return language if captions(language).drawable(fonts) else "en"


def _line_height(font: FontType) -> int:
    bottom = font.getbbox("ÅgÝ|")[3]
    return int(bottom) + _PAD // 2


def _wrap(text: str, font: FontType, width: int) -> list[str]:
    """Greedy wrap of `text` to lines no wider than the canvas minus padding, breaking after
    a dash where it can ("UNTRAINED DEMO —" / "AI triage: … —" / "not a diagnosis")."""
    room = width - 2 * _PAD
    lines: list[str] = []
    for phrase in re.split(r"(?<=—) ", text):
        if lines and font.getlength(f"{lines[-1]} {phrase}") <= room:
            lines[-1] = f"{lines[-1]} {phrase}"
        elif font.getlength(phrase) <= room:
            lines.append(phrase)
        else:
            for word in phrase.split():
                if lines and font.getlength(f"{lines[-1]} {word}") <= room:
                    lines[-1] = f"{lines[-1]} {word}"
                else:
                    lines.append(word)
    # A single word wider than the canvas: cut it (never happens with the fixed sentences).
    return [part for line in lines for part in _cut(line, font, room)]


def _cut(line: str, font: FontType, room: int) -> list[str]:
    if font.getlength(line) <= room or len(line) < 2:
        return [line]
    chars = max(1, int(len(line) * room / font.getlength(line)))
    return [part for piece in textwrap.wrap(line, chars) for part in _cut(piece, font, room)]


def _text_block_height(text: str, font: FontType, width: int) -> int:
    return 2 * _PAD + len(_wrap(text, font, width)) * _line_height(font)


def _draw_lines(
    draw: ImageDraw.ImageDraw,
    lines: list[str],
    font: FontType,
    *,
    top: int,
    colour: tuple[int, int, int],
    width: int,
    centre: bool = False,
) -> None:
    y = top + _PAD
    for line in lines:
        x = (width - font.getlength(line)) / 2 if centre else _PAD
        draw.text((x, y), line, font=font, fill=colour)
        y += _line_height(font)
