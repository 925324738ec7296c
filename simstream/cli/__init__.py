"""The `simstream` command line: one Typer app, a module per command family."""
