"""The package version (its own module so that any layer can read it without importing
the package root, which imports the public API of every layer)."""

__version__ = "0.1.0"
