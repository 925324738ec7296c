"""Metric learning on Keras 3: distances, losses, samplers, encoders, training,
retrieval evaluation, calibration and the versioned model registry.

This package does no I/O beyond reading datasets and writing model files, and
imports none of ``workers`` or ``producers``.
"""
