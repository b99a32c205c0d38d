"""The subcommands of ``minires`` that outgrew :mod:`minires.cli`: ``train``, ``eval`` and ``gradflow``.

:mod:`minires.cli` is the front (the parser, :data:`~minires.cli.COMMANDS`, the error
handling); each module here holds one subcommand's flags, the assembly of its settings
and its run. :mod:`.args` holds the argument types and the user-error class they share.
"""
