"""Inference: a trained student loaded for use (``student``: torch or ONNX), photos framed and aged
(``predict``: ``AgeEstimator``, the rows of ``agedistill predict``), export to ONNX (``export``),
the shipped model and its card (``ship``), and a student as a teacher member (``member``).

Nothing is imported here, so that ``from agedistill import AgeEstimator`` with the shipped ONNX
model loads neither torch, timm nor torchvision.
"""
