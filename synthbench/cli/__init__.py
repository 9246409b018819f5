"""The ``synthbench`` command line (Typer). Commands live one concern per module in ``commands/``."""
