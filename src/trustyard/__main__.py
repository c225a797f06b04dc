"""`python -m trustyard` runs the CLI."""

from trustyard.cli import main

main()
