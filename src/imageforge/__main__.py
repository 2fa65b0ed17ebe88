"""`python -m imageforge` runs the CLI."""

from imageforge.cli.main import main

if __name__ == "__main__":
    main()
