"""Synthetic long videos with exact ground truth, in the CAS(ME)^2 layout.

The astronaut photograph (scikit-image) is warped frame by frame through a piecewise-affine
mesh over its 68 landmarks: FACS-like action units with onset-apex-offset profiles (MaE and
ME, durations from the real CAS(ME)^2 statistics), blinks, head drift and turns, talking, lighting
flicker, sensor noise and JPEG. Entry points: ``generate.generate_dataset`` and
``tools/make_synthetic.py``; parameters in ``config.SynthConfig``.
"""
