"""visctl: look inside PyTorch vision models and their data from one command line."""

__version__ = "0.1.0"
