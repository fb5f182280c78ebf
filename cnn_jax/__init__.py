"""cnn_jax: careful CNN ablations in functional JAX."""

__version__ = "0.1.0"
