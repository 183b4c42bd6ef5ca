"""The `edgekit` command line: `main.py` wires commands, one module per command."""
