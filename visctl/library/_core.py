"""The library's shared types, re-exported under ``visctl``."""

from visctl.results import Figure, Result
from visctl.session import RunOptions, Session

__all__ = ["Figure", "Result", "RunOptions", "Session"]
