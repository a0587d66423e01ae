"""The one error hierarchy: every error fsmond raises on purpose is an FsmondError.

Subclasses also inherit the builtin they resemble, so callers that only know
the builtin (ValueError, OSError, TimeoutError) still catch them.
"""


class FsmondError(Exception):
    """Base of every error fsmond raises on purpose."""


class ConfigError(ValueError, FsmondError):
    """A configuration value is wrong: the message names the key, the value and why."""

    exit_status = 78  # EX_CONFIG from sysexits.h


class KernelFormatError(ValueError, FsmondError):
    """Text or bytes from the kernel did not have the expected shape."""


class KernelFeatureError(OSError, FsmondError):
    """The running kernel lacks an interface a backend needs (too old, or not permitted)."""


class TransitionError(RuntimeError, FsmondError):
    """The engine was asked for a state transition its table does not allow."""


class NotFoundError(LookupError, FsmondError):
    """No mount, file system or watch matches the request."""


class InvalidArgsError(ValueError, FsmondError):
    """A client's argument is malformed (a D-Bus call, a command line)."""


class AccessDeniedError(PermissionError, FsmondError):
    """The caller may not do this (only root may change watches or reload)."""
