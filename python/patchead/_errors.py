"""Exceptions: one patchead.Error subclass per pe_status of the C library.

Each also derives from the closest built-in exception, so `except OSError` or
`except ValueError` keeps working in code that does not know patchead.
The message is the library's one-line message (it names the file and the problem).
"""


class Error(Exception):
    """Base class of every error patchead raises. `.status` is the pe_status code."""
    status = 0
    status_name = "error"


class IoError(Error, OSError):
    """A file is missing, unreadable or unwritable (PE_ERR_IO)."""
    status, status_name = 1, "io"


class FormatError(Error, ValueError):
    """A corrupt or truncated file, bad JSON, bad header (PE_ERR_FORMAT)."""
    status, status_name = 2, "format"


class ShapeError(Error, ValueError):
    """An array or tensor with an unexpected shape (PE_ERR_SHAPE)."""
    status, status_name = 3, "shape"


class UnsupportedError(Error, ValueError):
    """Valid input that patchead does not handle, e.g. masking on a CNN (PE_ERR_UNSUPPORTED)."""
    status, status_name = 4, "unsupported"


class NoMemoryError(Error, MemoryError):
    """An allocation failed (PE_ERR_NOMEM)."""
    status, status_name = 5, "nomem"


class ArgumentError(Error, ValueError):
    """A bad argument: wrong dtype, unknown preset, value out of range (PE_ERR_ARG)."""
    status, status_name = 6, "argument"


class MismatchError(Error, ValueError):
    """E.g. a bank used with another backbone than it was fit with (PE_ERR_MISMATCH)."""
    status, status_name = 7, "mismatch"


class LimitError(Error, ValueError):
    """The input exceeds a documented limit, e.g. image size (PE_ERR_LIMIT)."""
    status, status_name = 8, "limit"


# indexed by pe_status (0 = PE_OK has no class)
BY_STATUS = (None, IoError, FormatError, ShapeError, UnsupportedError, NoMemoryError,
             ArgumentError, MismatchError, LimitError)
