"""A PNG preview of an uploaded file's pixels, before it is analysed.

Browsers cannot show DICOM (nor TIFF, nor 16-bit greys faithfully), and decoding DICOM in the
page would need a JavaScript codec for every transfer syntax the node takes (JPEG 2000,
JPEG-LS, RLE, deflated) plus the Modality LUT, VOI and MONOCHROME1 handling of
`preprocess.to_grayscale`. So the page posts such a file here and shows what the node itself
will see: the same decoders, the same display pipeline. (PNG, JPEG and BMP the page shows by
itself, without a round trip.)

The checks are the analysis's: the caller reads the upload within `api.max_upload_mb`, DICOM
goes through admission's checks (`admission.check_file`: the node's configured
`max_dataset_mb`, once inflated too, before pydicom inflates a deflated dataset; sequence
depth; UIDs), a picture may not decode to more than `max_dataset_mb`, and `to_grayscale` /
`load_image` refuse multi-frame, colour DICOM or absurdly large images before decoding them.
Nothing is written: the bytes are decoded in memory and the PNG returned.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image
from pydicom import dcmread

from dicomnode.imaging import preprocess
from dicomnode.imaging.dicom_errors import READ_ERRORS
from dicomnode.imaging.files import ImageTooLarge
from dicomnode.ingest.admission import check_file
from dicomnode.library_warnings import summarised
from dicomnode.uploads.kinds import AnalysisError, UploadKind, as_part10, sniff

#: Long side of a preview, in pixels (the page shows it at most 320 px wide).
PREVIEW_SIZE = 512


@summarised("uploaded preview")
def upload_preview(data: bytes, *, max_dataset_bytes: int, max_size: int = PREVIEW_SIZE) -> bytes:
    """The displayed image of an uploaded file (DICOM, or a picture) as a greyscale PNG, long
    side at most `max_size`; `max_dataset_bytes`: the node's configured limit.

    Raises AnalysisError: 415 for a ZIP or anything that is no image, 413 for a file over
    `max_dataset_bytes` (once inflated or decoded), 422 with the reason for a file admission
    refuses otherwise or pixels that cannot be shown. A DICOM file that is no radiograph
    (a CT) still gets a preview: what it is, is the analysis's answer, with its reason."""
    if not data:
        raise AnalysisError(400, "empty_file")
    kind = sniff(data)
    if kind is None or kind == UploadKind.ZIP:
        raise AnalysisError(415, "preview_unsupported")
    if kind == UploadKind.DICOM:
        image = _dicom(data, max_size, max_dataset_bytes)
    else:
        image = _picture(data, max_dataset_bytes)
    picture = Image.fromarray(np.round(image * 255).astype(np.uint8), "L")
    picture.thumbnail((max_size, max_size), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG", compress_level=4)
    return buffer.getvalue()


def _dicom(data: bytes, max_size: int, max_dataset_bytes: int) -> np.ndarray:
    try:
        encoded = as_part10(data)
    except AnalysisError as exc:
        raise AnalysisError(exc.status, "preview_unavailable", **exc.params) from exc
    checked = check_file(encoded, max_dataset_bytes=max_dataset_bytes)
    if checked.header is None:
        raise AnalysisError.refused(checked.status, checked.reason, code="preview_unavailable")
    try:
        ds = dcmread(io.BytesIO(encoded))
        return preprocess.to_grayscale(ds, min_size=max_size)
    except preprocess.NotClassifiable as exc:
        raise AnalysisError(422, "preview_unavailable", reason=exc.reason) from exc
    except READ_ERRORS as exc:
        reason = f"not a readable DICOM file ({type(exc).__name__})"
        raise AnalysisError(422, "preview_unavailable", reason=reason) from exc


def _picture(data: bytes, max_dataset_bytes: int) -> np.ndarray:
    try:
        return preprocess.load_image(data, max_decoded_bytes=max_dataset_bytes)
    except ImageTooLarge as exc:
        raise AnalysisError(413, "preview_unavailable", reason=exc.reason) from exc
    except preprocess.NotClassifiable as exc:
        raise AnalysisError(422, "preview_unavailable", reason=exc.reason) from exc
