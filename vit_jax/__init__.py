"""vit_jax: scaling experiments with vision transformers in JAX / Flax."""
