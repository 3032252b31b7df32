"""fes_jax: facial expression spotting (MaE / ME) and micro-expression recognition in JAX."""

__version__ = "0.1.0"
