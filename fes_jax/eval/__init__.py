"""Spotting post-processing and evaluation: MEGC F1, frame accuracy, edit score, CSV I/O."""
