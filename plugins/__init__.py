"""Built-in plugins; each registers through the `bench.plugins` entry-point group (pyproject.toml)."""
