"""The package version (one home, read by the cache keys and the CLI)."""
__version__ = "0.1.0"
