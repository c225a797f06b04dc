"""`trustyard sign …`: the signing toolkit (placeholder until the signing issue lands)."""

import typer

app = typer.Typer(help="Sign and verify images (ir-sign compatible).", no_args_is_help=True)
