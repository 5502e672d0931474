"""The version of tsens, in a module of its own: every module that records it (the provenance of
tables) reads it here, never from the package face."""

__version__ = "0.1.0"
