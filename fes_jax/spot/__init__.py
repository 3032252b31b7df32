"""Spotting expressions in your own video with a trained fold (``tools/spot_video.py``).

``spot_video(video, checkpoint, out)``: frames (video file or numbered frame folder) ->
landmarks (dlib, or a file) -> SW-MRO features with the run's preprocess settings -> the
restored model in eval mode -> intervals with the run's eval settings; writes the MEGC CSV,
a plot, the probabilities and a summary. See fes_jax/spot/video.py.
"""

__all__ = ["default_out_dir", "spot_video"]


def __getattr__(name):
  # Lazy: the flow worker processes import fes_jax.spot.features only (no JAX).
  if name in __all__:
    from fes_jax.spot import video  # pylint: disable=import-outside-toplevel

    return getattr(video, name)
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
