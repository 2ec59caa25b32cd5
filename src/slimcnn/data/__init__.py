"""Data loaders: classification (:mod:`slimcnn.data.classification`), super-resolution and detection.

Submodules are imported on use so that one task's dependencies never slow down another's.
"""
