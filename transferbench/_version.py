"""The package version (a leaf module: everything may import it without cycles)."""

__version__ = "0.5.0"
