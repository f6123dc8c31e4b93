"""The ``spikec`` command line: one module per subcommand, wired by :mod:`spikec.cli.main`."""
