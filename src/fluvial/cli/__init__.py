"""The ``fluvial`` command line: the only place that reads argv and the environment.

``main.py`` builds the parser from the subcommands registered with
:func:`fluvial.cli.app.subcommand` (one module per family: ingest, run, views,
log, schema); ``progress.py`` draws progress bars on a terminal.
"""
