"""The ``bench`` command line (entry point :func:`bench.cli.main.main`)."""
