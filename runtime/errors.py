"""The runtime's own exceptions, in a leaf module that every runtime module may import without an import cycle.

Both are ``FtadaptError``s: the CLI prints them as one line and exits 1, and their messages name the fix.
"""
from __future__ import annotations

from ftadapt.errors import FtadaptError


class BackendUnavailable(FtadaptError):
    """A backend that cannot run here (module missing, no GPU, unsupported version); the message names the fix."""


class EngineError(FtadaptError):
    """A TensorRT engine that cannot be built, loaded or trusted; the message says what to do."""


__all__ = ["BackendUnavailable", "EngineError"]
