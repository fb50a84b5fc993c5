"""preprocess: real radiographs (pydicom-data, deid-data) in, display-ready greyscale out."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.pixels import apply_voi_lut
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    DigitalIntraOralXRayImageStorageForPresentation,
    DigitalMammographyXRayImageStorageForPresentation,
    DigitalXRayImageStorageForProcessing,
    GrayscaleSoftcopyPresentationStateStorage,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
    SecondaryCaptureImageStorage,
)

from dicomnode import MANUFACTURER
from dicomnode.imaging.preprocess import (
    MAX_PIXELS,
    NotClassifiable,
    eligibility,
    heatmap_to_image,
    load_image,
    to_grayscale,
    to_model_input,
)
from tests.support import data

ROOT = "1.2.826.0.1.3680043.8.498.4711"
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def read(name: str) -> pydicom.Dataset:
    """A fresh copy of a test file (tests edit it)."""
    return pydicom.dcmread(data.testdata(name))


def roundtrip(ds: Dataset) -> Dataset:
    """Write and read back, as the node reads a spooled file."""
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return pydicom.dcmread(io.BytesIO(buf.getvalue()))


def with_pixels(ds: Dataset, pixels: np.ndarray) -> Dataset:
    ds.PixelData = np.ascontiguousarray(pixels, dtype=pixels.dtype).tobytes()
    return ds


@pytest.fixture(scope="module")
def rg3() -> np.ndarray:
    return to_grayscale(read(data.RG3_UNCR))


@pytest.fixture(scope="module")
def rg3_stored() -> np.ndarray:
    return read(data.RG3_UNCR).pixel_array.copy()


# --- to_grayscale on real radiographs -------------------------------------------------------


def test_rg3_is_float32_in_unit_range_at_full_size(rg3):
    assert rg3.shape == (1760, 1760) and rg3.dtype == np.float32 and rg3.flags.c_contiguous
    assert rg3.min() >= 0.0 and rg3.max() <= 1.0
    assert np.mean(rg3 == 1.0) > 0.01  # the window clips: collimated borders are white
    assert 0.2 < float(rg3.std()) < 0.5


@pytest.mark.parametrize(
    ("compressed", "uncompressed"),
    [(data.RG3_J2KR, data.RG3_UNCR), (data.RG1_J2KR, data.RG1_UNCR)],
)
def test_jpeg2000_lossless_equals_uncompressed_pixel_for_pixel(compressed, uncompressed):
    assert np.array_equal(to_grayscale(read(compressed)), to_grayscale(read(uncompressed)))


@pytest.mark.parametrize(
    ("lossy", "reference"), [(data.RG1_J2KI, data.RG1_UNCR), (data.RG3_J2KI, data.RG3_UNCR)]
)
def test_lossy_jpeg2000_is_close_to_the_original(lossy, reference):
    diff = np.abs(to_grayscale(read(lossy)) - to_grayscale(read(reference)))
    assert 0 < float(diff.mean()) < 0.01


@pytest.mark.parametrize("syntax", [RLELossless, JPEGLSLossless, JPEG2000Lossless])
def test_recompressed_radiograph_decodes_to_the_same_image(syntax, rg3):
    ds = read(data.RG3_UNCR)
    ds.compress(syntax)
    back = roundtrip(ds)
    assert back.file_meta.TransferSyntaxUID == syntax
    assert np.array_equal(to_grayscale(back), rg3)


def test_deflated_transfer_syntax(rg3):
    ds = read(data.RG3_UNCR)
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    back = roundtrip(ds)
    assert back.file_meta.TransferSyntaxUID == DeflatedExplicitVRLittleEndian
    assert np.array_equal(to_grayscale(back), rg3)


@pytest.mark.parametrize(
    "name", ["JPEG-LL.dcm", "JPGExtended.dcm", "JPGLosslessP14SV1_1s_1f_8b.dcm"]
)
def test_jpeg_lossless_and_extended_decode(name):
    ds = read(name)
    image = to_grayscale(ds)
    assert image.shape == (ds.Rows, ds.Columns)
    assert image.min() == 0.0 and image.max() == 1.0 and image.std() > 0.05


def test_dx_from_deid_data():
    ds = pydicom.dcmread(data.cat_dx())
    image = to_grayscale(ds)
    assert image.shape == (2614, 3072) and image.min() >= 0.0 and image.max() <= 1.0
    # Window 2048/4096 over 12 bits is almost the identity: MONOCHROME2 is not inverted.
    expected = (ds.pixel_array.astype(np.float32) - 0.5) / 4095
    assert np.allclose(image, np.clip(expected, 0, 1), atol=1e-3)


def test_dataset_without_transfer_syntax_is_decoded_as_native(rg3):
    ds = read(data.RG3_UNCR)
    ds.file_meta = FileMetaDataset()
    assert np.array_equal(to_grayscale(ds), rg3)
    assert "TransferSyntaxUID" not in ds.file_meta  # the caller's dataset is untouched


# --- photometric, windows, padding ------------------------------------------------------------


def test_monochrome1_is_inverted_after_windowing(rg3):
    ds = read(data.RG3_UNCR)
    ds.PhotometricInterpretation = "MONOCHROME2"
    assert np.allclose(to_grayscale(ds), 1.0 - rg3, atol=1e-6)
    assert not np.allclose(to_grayscale(ds), rg3, atol=0.1)


@pytest.mark.parametrize("function", ["LINEAR", "LINEAR_EXACT", "SIGMOID"])
def test_float32_window_matches_pydicom(function):
    ds = read(data.RG3_UNCR)
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.WindowCenter, ds.WindowWidth = 420, 300
    ds.VOILUTFunction = function
    ours = to_grayscale(ds)
    reference = apply_voi_lut(ds.pixel_array, ds) / (2**ds.BitsStored - 1)
    assert np.abs(ours - reference).max() < 1e-4 and float(ours.std()) > 0.2


def test_only_the_first_window_is_used():
    single = read(data.RG3_UNCR)
    several = read(data.RG3_UNCR)
    several.WindowCenter, several.WindowWidth = [550, 300], [1024, 100]
    assert np.array_equal(to_grayscale(several), to_grayscale(single))


def test_rescale_is_applied_before_the_window(rg3):
    ds = read(data.RG3_UNCR)
    ds.RescaleSlope, ds.RescaleIntercept = 2, -100
    ds.WindowCenter, ds.WindowWidth = 2 * 550 - 100, 2 * 1024 - 1  # same window, new units
    assert np.abs(to_grayscale(ds) - rg3).max() < 2e-3


def test_voi_lut_sequence_wins_over_the_window(rg3_stored):
    ds = read(data.RG3_UNCR)
    ds.PhotometricInterpretation = "MONOCHROME2"
    item = Dataset()
    item.LUTDescriptor = [1024, 0, 12]
    item.LUTData = [min(4095, 8 * v) for v in range(1024)]  # x8 and saturates at 512
    ds.VOILUTSequence = [item]
    image = to_grayscale(ds)
    expected = np.minimum(rg3_stored.astype(np.float32) * 8, 4095) / 4095
    assert np.allclose(image, expected, atol=1e-6)


def test_malformed_voi_lut_is_refused_with_a_reason():
    ds = read(data.RG3_UNCR)
    item = Dataset()
    item.LUTDescriptor = [1024, 0, 7]  # 7 bits per entry is not allowed
    item.LUTData = list(range(1024))
    ds.VOILUTSequence = [item]
    assert reason_of(ds) == "VOI LUT could not be applied"


def test_no_window_uses_a_robust_percentile_window(rg3_stored):
    ds = read(data.RG3_UNCR)
    del ds.WindowCenter, ds.WindowWidth
    image = to_grayscale(ds)
    # MONOCHROME1: the brightest 0.5 % of stored values clip to black; stored 0 (41 % of this
    # image: the collimated border) is the low percentile and clips to white.
    assert 0.002 < np.mean(image == 0.0) < 0.02
    assert abs(np.mean(image == 1.0) - np.mean(rg3_stored == 0)) < 0.01
    # A few extreme pixels do not move the window.
    spiked = rg3_stored.copy()
    spiked[:3, :3] = 1023
    spiked[-3:, -3:] = 0
    ds = with_pixels(ds, spiked)
    assert np.abs(to_grayscale(ds)[10:-10, 10:-10] - image[10:-10, 10:-10]).max() < 0.02


def test_pixel_padding_is_black_and_left_out_of_the_window(rg3_stored):
    padded = rg3_stored.copy()
    padded[:, :500] = 1023  # a large padded band at the stored maximum
    ds = with_pixels(read(data.RG3_UNCR), padded)
    del ds.WindowCenter, ds.WindowWidth
    unpadded = to_grayscale(ds)
    ds.PixelPaddingValue = 1023
    image = to_grayscale(ds)
    assert np.all(image[:, :500] == 0.0)
    # Left in the percentiles, the band stretches the window up to 1023, so almost nothing in
    # the body reaches black (MONOCHROME1); left out, the body's brightest 0.5 % clip again.
    assert 0.002 < np.mean(image[:, 500:] == 0.0) < 0.02
    assert np.mean(unpadded[:, 500:] == 0.0) < 0.001


def test_pixel_padding_range_limit(rg3_stored):
    ds = read(data.RG3_UNCR)
    ds.PixelPaddingValue, ds.PixelPaddingRangeLimit = 300, 200  # either order is a range
    image = to_grayscale(ds)
    inside = (rg3_stored >= 200) & (rg3_stored <= 300)
    assert inside.any() and np.all(image[inside] == 0.0)
    assert np.all(image[~inside & (rg3_stored < 1000)] > 0.0)


def test_signed_pixels_with_signed_padding():
    ds = read("CT_small.dcm")  # signed, rescaled, Pixel Padding Value -2000 (SS)
    stored = ds.pixel_array.copy()
    stored[:8, :8] = -2000
    ds = with_pixels(ds, stored)
    image = to_grayscale(ds)
    assert np.all(image[:8, :8] == 0.0) and image.max() == 1.0


# --- rejections -------------------------------------------------------------------------------


def reason_of(ds: Dataset) -> str:
    with pytest.raises(NotClassifiable) as info:
        to_grayscale(ds)
    reason = info.value.reason
    assert str(info.value) == reason
    for secret in (str(ds.get("PatientName", "")), str(ds.get("SOPInstanceUID", ""))):
        assert not secret or secret not in reason
    return reason


def test_multi_frame_is_refused():
    ds = read(data.RG3_UNCR)
    ds.NumberOfFrames = 2
    assert "multi-frame" in reason_of(ds)


def test_colour_is_refused():
    assert "colour" in reason_of(read("SC_rgb.dcm"))
    ds = read(data.RG3_UNCR)
    ds.PhotometricInterpretation = "PALETTE COLOR"
    assert "PALETTE COLOR" in reason_of(ds)


def test_missing_pixel_data_is_refused():
    ds = read(data.RG3_UNCR)
    del ds.PixelData
    assert reason_of(ds) == "no pixel data"


def test_short_pixel_data_is_refused():
    ds = read(data.RG3_UNCR)
    ds.PixelData = ds.PixelData[: len(ds.PixelData) // 2]
    assert "too short" in reason_of(ds)


def test_undecodable_pixel_data_is_refused_with_the_codec_named():
    ds = read(data.RG3_J2KR)
    ds.PixelData = encapsulate([b"\xff\x4f\xff\x51" + b"\x00" * 200])
    assert (
        reason_of(ds)
        == "pixel data could not be decoded (JPEG 2000 Image Compression (Lossless Only))"
    )
    assert "could not be decoded" in reason_of(read("JPEG-lossy.dcm"))  # a real broken file


def test_huge_image_is_refused_before_decoding():
    ds = read(data.RG3_UNCR)
    ds.Rows = ds.Columns = int(np.sqrt(MAX_PIXELS)) + 1
    assert "too large" in reason_of(ds)


def test_missing_geometry_is_refused():
    ds = read(data.RG3_UNCR)
    del ds.Rows
    assert "rows" in reason_of(ds)


# --- eligibility ---------------------------------------------------------------------------------


def test_cr_and_dx_are_eligible():
    assert eligibility(read(data.RG3_UNCR), uid_root=ROOT) is None
    dx = pydicom.dcmread(data.cat_dx(), stop_before_pixels=True)
    assert eligibility(dx, uid_root=ROOT) is None
    dx.SOPClassUID = DigitalXRayImageStorageForProcessing
    assert eligibility(dx, uid_root=ROOT) is None


def test_ct_and_mr_are_not_radiographs():
    assert eligibility(pydicom.dcmread(data.ct_small()), uid_root=ROOT) == (
        "modality CT is not a radiograph"
    )
    assert eligibility(read("MR_small.dcm"), uid_root=ROOT) == "modality MR is not a radiograph"


def test_mammography_and_dental_are_outside_the_intended_use():
    ds = pydicom.dcmread(data.cat_dx(), stop_before_pixels=True)
    ds.SOPClassUID = DigitalMammographyXRayImageStorageForPresentation
    assert eligibility(ds, uid_root=ROOT) == "mammography is outside the intended use"
    ds = read(data.RG3_UNCR)
    ds.Modality = "MG"
    assert eligibility(ds, uid_root=ROOT) == "mammography is outside the intended use"
    ds.SOPClassUID, ds.Modality = DigitalIntraOralXRayImageStorageForPresentation, "IO"
    assert "outside the intended use" in eligibility(ds, uid_root=ROOT)


def test_secondary_capture_only_when_radiographic():
    ds = read(data.RG3_UNCR)
    ds.SOPClassUID = SecondaryCaptureImageStorage
    assert eligibility(ds, uid_root=ROOT) is None  # Modality CR
    ds.ConversionType = "SYN"
    assert "synthetic" in eligibility(ds, uid_root=ROOT)
    ds.ConversionType, ds.Modality = "WSD", "OT"
    assert (
        eligibility(ds, uid_root=ROOT) == "secondary capture with modality OT is not a radiograph"
    )
    assert "secondary capture" in eligibility(read("SC_rgb.dcm"), uid_root=ROOT)


def test_presentation_states_and_unknown_classes_are_skipped():
    ds = Dataset()
    ds.SOPClassUID, ds.Modality = GrayscaleSoftcopyPresentationStateStorage, "PR"
    assert eligibility(ds, uid_root=ROOT) == "modality PR is not a radiograph"
    ds.SOPClassUID, ds.Modality = "1.2.3.4.5.6", "CR"
    reason = eligibility(ds, uid_root=ROOT)
    assert reason and "1.2.3.4.5.6" not in reason and "not a supported" in reason


def test_own_output_is_never_classified():
    ds = read(data.RG3_UNCR)
    ds.Manufacturer = MANUFACTURER
    assert eligibility(ds, uid_root=ROOT) == "own output"
    ds = read(data.RG3_UNCR)
    ds.SOPInstanceUID = ROOT + ".12345"
    assert eligibility(ds, uid_root=ROOT) == "own output"
    assert eligibility(ds, uid_root=ROOT + ".") == "own output"
    ds.SOPInstanceUID = ROOT + "9.12345"  # a different root that merely shares digits
    assert eligibility(ds, uid_root=ROOT) is None
    assert eligibility(ds, uid_root="") is None


def test_odd_headers_give_a_reason_not_an_exception():
    assert eligibility(Dataset(), uid_root=ROOT) == "no SOP Class UID"
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.1"
    ds.add_new(0x00080070, "LO", b"\xff\xfe\x00garbage")  # undecodable Manufacturer
    ds.add_new(0x00080060, "CS", None)
    assert eligibility(ds, uid_root=ROOT) is None
    ds.file_meta = FileMetaDataset()
    del ds.SOPClassUID
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    assert eligibility(ds, uid_root=ROOT) == "CT Image Storage is not a supported radiograph class"


# --- load_image ---------------------------------------------------------------------------------


def encode(array: np.ndarray, fmt: str, **params) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, fmt, **params)
    return buf.getvalue()


@pytest.fixture(scope="module")
def ramp8() -> np.ndarray:
    return np.tile(np.arange(256, dtype=np.uint8), (40, 1))[:, :200]


def test_png_8_bit(ramp8):
    image = load_image(encode(ramp8, "PNG"))
    assert image.dtype == np.float32 and np.array_equal(image, ramp8 / np.float32(255))


def test_png_16_bit(tmp_path):
    ramp16 = np.tile(np.arange(0, 65536, 257, dtype=np.uint16), (30, 1))
    path = tmp_path / "ramp16.png"
    path.write_bytes(encode(ramp16, "PNG"))
    image = load_image(path)
    assert np.allclose(image, ramp16 / 65535, atol=1e-6)
    assert image.max() == 1.0 and len(np.unique(image)) == 256


def test_tiff_16_bit_and_bmp_colour(ramp8):
    ramp16 = (ramp8.astype(np.uint16) * 257).astype(np.uint16)
    assert np.allclose(load_image(encode(ramp16, "TIFF")), ramp8 / 255, atol=1e-6)
    rgb = np.stack([ramp8] * 3, axis=-1)
    assert np.allclose(load_image(encode(rgb, "BMP")), ramp8 / 255, atol=1 / 255)


def test_jpeg_with_exif_orientation(ramp8):
    img = Image.fromarray(ramp8)  # 40 rows x 200 columns
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90° clockwise for display
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=95, exif=exif)
    image = load_image(buf.getvalue())
    assert image.shape == (200, 40)
    assert float(image[:10].mean()) < 0.1 and float(image[-10:].mean()) > 0.7  # ramp 0..199


def test_dicom_by_content_with_and_without_preamble(tmp_path, rg3):
    path = tmp_path / "no-suffix"
    path.write_bytes(data.testdata(data.RG3_UNCR).read_bytes())
    assert np.array_equal(load_image(path), rg3)
    ds = read(data.RG3_UNCR)
    ds.preamble = None
    buf = io.BytesIO()
    pydicom.dcmwrite(buf, ds)  # no preamble, so no "DICM" at offset 128
    raw = buf.getvalue()
    assert raw[128:132] != b"DICM" and raw[:2] == b"\x02\x00"
    assert np.array_equal(load_image(raw), rg3)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"", "empty"),
        (b"hello, this is a text file\n" * 20, "not an image"),
        (b"\x00" * 128 + b"DICM" + b"\x01\x02", "DICOM file without pixel data"),
    ],
)
def test_non_images_are_refused(payload, reason):
    with pytest.raises(NotClassifiable, match=reason):
        load_image(payload)


def test_truncated_and_unsupported_images_are_refused(ramp8):
    png = encode(np.random.default_rng(0).integers(0, 255, (300, 300), dtype=np.uint8), "PNG")
    with pytest.raises(NotClassifiable, match="truncated or corrupt"):
        load_image(png[: len(png) // 2])
    with pytest.raises(NotClassifiable, match="GIF images are not supported"):
        load_image(encode(ramp8, "GIF"))
    with pytest.raises(FileNotFoundError):
        load_image(Path("/nonexistent/file.png"))


# --- model geometry -------------------------------------------------------------------------------


@pytest.mark.parametrize(("shape", "size"), [((200, 400), 64), ((400, 200), 64), ((75, 50), 96)])
def test_letterbox_keeps_aspect_and_pads_black(shape, size):
    x = to_model_input(np.ones(shape, np.float32), input_size=size, mean=MEAN, std=STD)
    assert x.shape == (3, size, size) and x.dtype == np.float32
    long_side = max(shape)
    content_h, content_w = round(shape[0] * size / long_side), round(shape[1] * size / long_side)
    top, left = (size - content_h) // 2, (size - content_w) // 2
    for c in range(3):
        white, black = (1 - MEAN[c]) / STD[c], -MEAN[c] / STD[c]
        inside = x[c, top : top + content_h, left : left + content_w]
        assert np.allclose(inside, white, atol=1e-5)
        mask = np.ones((size, size), bool)
        mask[top : top + content_h, left : left + content_w] = False
        assert mask.any() and np.allclose(x[c][mask], black, atol=1e-6)


def test_downscaling_is_antialiased():
    stripes = np.zeros((800, 800), np.float32)
    stripes[:, ::2] = 1.0  # 1-pixel stripes: aliasing would give bands of 0 and 1
    x = to_model_input(stripes, input_size=100, mean=(0, 0, 0), std=(1, 1, 1))
    assert np.abs(x[0, 5:-5, 5:-5] - 0.5).max() < 0.05


def test_model_input_validates_its_arguments():
    with pytest.raises(ValueError):
        to_model_input(np.ones((3, 3, 3), np.float32), input_size=32, mean=MEAN, std=STD)
    with pytest.raises(ValueError):
        to_model_input(np.ones((8, 8), np.float32), input_size=32, mean=MEAN, std=(1, 0, 1))


def test_heatmap_keeps_the_image_aspect():
    grid = np.random.default_rng(1).random((12, 12)).astype(np.float32)
    assert heatmap_to_image(grid, (1000, 500)).shape == (512, 256)
    assert heatmap_to_image(grid, (1760, 1760)).shape == (512, 512)
    assert heatmap_to_image(grid, (90, 60)).shape == (90, 60)  # never larger than the image
    out = heatmap_to_image(grid, (300, 900))
    assert out.shape == (171, 512) and out.dtype == np.float32
    assert grid.min() - 1e-6 <= out.min() and out.max() <= grid.max() + 1e-6


def test_heatmap_hot_spot_top_left_of_the_content_maps_to_the_image_top_left():
    # A tall image fills columns 3..8 of a 12x12 grid; the letterbox bars are columns 0-2, 9-11.
    grid = np.zeros((12, 12), np.float32)
    grid[0, 3] = 1.0
    out = heatmap_to_image(grid, (1000, 500))
    row, col = np.unravel_index(np.argmax(out), out.shape)
    assert row < out.shape[0] / 12 and col < out.shape[1] / 6
    bars_only = np.zeros((12, 12), np.float32)
    bars_only[:, :3] = bars_only[:, 9:] = 1.0  # evidence in the padding is cropped away
    assert heatmap_to_image(bars_only, (1000, 500))[:, 50:-50].max() < 1e-6


def test_letterbox_and_heatmap_round_trip():
    """A bright blob goes through to_model_input, a 12x12 'feature grid', and back."""
    image = np.zeros((600, 1000), np.float32)
    yy, xx = np.mgrid[:600, :1000]
    image[(yy - 150) ** 2 + (xx - 750) ** 2 < 60**2] = 1.0
    x = to_model_input(image, input_size=384, mean=(0, 0, 0), std=(1, 1, 1))
    grid = x[0].reshape(12, 32, 12, 32).mean(axis=(1, 3))
    out = heatmap_to_image(grid, image.shape)
    assert out.shape == (307, 512)
    row, col = np.unravel_index(np.argmax(out), out.shape)
    assert abs(row / out.shape[0] - 0.25) < 0.07 and abs(col / out.shape[1] - 0.75) < 0.07


def _cr_of_size(rows: int, columns: int) -> pydicom.Dataset:
    ds = read(data.RG3_UNCR)
    ds.Rows, ds.Columns = rows, columns
    return ds


@pytest.mark.parametrize(
    ("rows", "columns", "skipped"),
    [(16, 16, True), (255, 255, True), (255, 1024, True), (1024, 255, True), (256, 256, False)],
)
def test_radiographs_smaller_than_min_size_are_skipped_with_size_and_threshold(
    rows, columns, skipped
):
    reason = eligibility(_cr_of_size(rows, columns), uid_root=ROOT, min_size=256)
    if skipped:
        assert reason == (
            f"image too small to be a diagnostic radiograph ({rows}x{columns} px; the model "
            "card's min_image_size is 256 px per side)"
        )
    else:
        assert reason is None


def test_size_rule_comes_after_the_class_rules_and_zero_disables_it():
    ct = pydicom.dcmread(data.ct_small())  # 128 x 128: still "not a radiograph"
    assert eligibility(ct, uid_root=ROOT, min_size=256) == "modality CT is not a radiograph"
    assert eligibility(_cr_of_size(16, 16), uid_root=ROOT, min_size=0) is None
    no_geometry = _cr_of_size(16, 16)
    del no_geometry.Rows  # left to decoding, which fails it with its own reason
    assert eligibility(no_geometry, uid_root=ROOT, min_size=256) is None


def test_a_retired_class_is_named_as_retired_in_the_reason():
    ds = read(data.RG3_UNCR)  # Modality CR, but an ultrasound SOP class
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.6"
    assert eligibility(ds, uid_root=ROOT) == (
        "Ultrasound Image Storage (retired) is not a supported radiograph class"
    )
