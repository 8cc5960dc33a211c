"""The ``lvt`` command line: one module per verb group, registered in :mod:`app.cli.main`."""
