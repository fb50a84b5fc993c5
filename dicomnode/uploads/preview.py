"""A PNG preview of an uploaded DICOM file's pixels, before it is analysed.

Browsers cannot show DICOM, and decoding it in the page would need a JavaScript codec for
every transfer syntax the node takes (JPEG 2000, JPEG-LS, RLE, deflated) plus the Modality LUT,
VOI and MONOCHROME1 handling of `preprocess.to_grayscale`. So the page posts the file here
and shows what the node itself will see: the same decoder, the same display pipeline.

The checks are the analysis's: the caller reads the upload within `api.max_upload_mb`, a
deflated file is refused before pydicom inflates it (`admission.inflation_refusal`), and
`to_grayscale` refuses multi-frame, colour or absurdly large images before decoding them.
Nothing is written: the bytes are decoded in memory and the PNG is returned.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image
from pydicom import dcmread

from dicomnode.imaging import preprocess
from dicomnode.imaging.dicom_errors import READ_ERRORS
from dicomnode.ingest.admission import inflation_refusal
from dicomnode.library_warnings import summarised
from dicomnode.uploads.analysis import AnalysisError, UploadKind, sniff
from dicomnode.uploads.offline import MAX_INFLATED_BYTES

#: Long side of a preview, in pixels (the page shows it at most 320 px wide).
PREVIEW_SIZE = 512


@summarised("uploaded preview")
def dicom_preview(data: bytes, *, max_size: int = PREVIEW_SIZE) -> bytes:
    """The displayed image of DICOM `data` as a greyscale PNG, long side at most `max_size`.

    Raises AnalysisError: 415 for anything but DICOM (the page previews pictures itself),
    413 for a deflate bomb, 422 with the reason for pixels that cannot be shown. A DICOM
    file that is no radiograph (a CT) still gets a preview: what it is, is the analysis's
    answer, with its reason."""
    if not data:
        raise AnalysisError(400, "empty_file")
    if sniff(data) != UploadKind.DICOM:
        raise AnalysisError(415, "preview_not_dicom")
    part10 = data[128:132] == b"DICM"
    refusal = inflation_refusal(data, MAX_INFLATED_BYTES) if part10 else None
    if refusal is not None:
        raise AnalysisError(413, "preview_unavailable", reason=refusal[1])
    try:
        ds = dcmread(io.BytesIO(data), force=not part10)
        image = preprocess.to_grayscale(ds, min_size=max_size)
    except preprocess.NotClassifiable as exc:
        raise AnalysisError(422, "preview_unavailable", reason=exc.reason) from exc
    except READ_ERRORS as exc:
        reason = f"not a readable DICOM file ({type(exc).__name__})"
        raise AnalysisError(422, "preview_unavailable", reason=reason) from exc
    picture = Image.fromarray(np.round(image * 255).astype(np.uint8), "L")
    picture.thumbnail((max_size, max_size), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG", compress_level=4)
    return buffer.getvalue()
