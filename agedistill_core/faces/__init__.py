"""Face detection and cropping (SPEC section 2).

``DETECTORS`` maps a name to a factory returning a detector: a callable
``rgb uint8 (H, W, 3) -> list[Detection]``.  ``extract_face`` picks the best
detection, grows it to the square + margin framing and resamples it.
"""
from agedistill_core.faces.crop import Detection, FaceCrop, extract_face, square_box, crop_square
from agedistill_core.faces.detectors import DETECTORS, make_detector

__all__ = ["DETECTORS", "Detection", "FaceCrop", "crop_square", "extract_face", "make_detector", "square_box"]
