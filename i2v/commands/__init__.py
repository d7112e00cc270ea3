"""One module per `i2v` subcommand. Each has ``HELP`` (one line), ``EXAMPLES`` (shown by --help),
``add_arguments(parser)`` and ``run(args) -> int``. :mod:`i2v.cli` lists them in one dict literal."""
