"""edgekit: compress speech models to 1-8-bit packed weights, export, run and benchmark them."""

__version__ = "0.1.0"


class EdgekitError(Exception):
    """An error caused by the user's input (bad file, bad argument, missing tool).

    The CLI prints these as one line and exits with status 2; anything else is a bug.
    """
