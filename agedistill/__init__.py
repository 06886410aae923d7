"""agedistill: age estimation with a small distilled student.

    from agedistill import AgeEstimator

    est = AgeEstimator()                      # the shipped student (ONNX, no torch needed)
    for face in est.predict("photo.jpg"):     # a path or an RGB uint8 array
        print(face.box, face.score, face.age, face.status)

``AgeEstimator`` is what ``agedistill predict`` runs (same framing, same numbers); see
``agedistill_core.inference.predict.AgeEstimator`` for its options.
"""
from agedistill_core.inference.predict import AgeEstimator, FaceRow

Face = FaceRow  # one face (or one photo without a usable face): path, face, box, score, age, status, reason

__all__ = ["AgeEstimator", "Face", "FaceRow"]
