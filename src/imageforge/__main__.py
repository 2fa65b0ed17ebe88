"""`python -m imageforge` runs the CLI."""

from imageforge.cli.main import main

main()
