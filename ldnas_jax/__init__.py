"""ldnas_jax."""
