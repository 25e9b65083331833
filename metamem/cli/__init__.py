"""Command-line interface: one module per command (see :mod:`metamem.cli.main`)."""
