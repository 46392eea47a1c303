"""Errors users see: one line, naming the problem. The CLI turns them into exit code 2."""
class RestyError(Exception):
    """Base class of every error Resty raises on purpose for bad input."""
class ArgumentError(RestyError, ValueError):
    """An argument out of its allowed values (a count, a name, a size)."""
class ImageError(RestyError, ValueError):
    """An image could not be read, is too large, or has an unsupported form."""
class WeightsError(RestyError, ValueError):
    """A weight file is missing, unreadable, of the wrong shape, or unavailable offline."""
class OutputExistsError(RestyError, FileExistsError):
    """An output exists and overwriting was not asked for."""
class OutputWriteError(RestyError, OSError):
    """An output could not be written (a full disk, a quota, permissions); the old file is intact."""
class BackendUnavailableError(RestyError, ImportError):
    """A framework backend was asked for but is not installed."""
class TrainingError(RestyError, RuntimeError):
    """Optimisation or training diverged (NaN or infinite loss)."""


def one_line(text: object) -> str:
    """``text`` as one line (runs of whitespace, line breaks included, become one space): every
    message a user sees is printed as a single line."""
    return " ".join(str(text).split()) if text is not None else ""


def run_script(main, prog: str) -> "NoReturn":  # noqa: F821
    """``sys.exit(main())`` for a script (the examples): Resty's errors and bad-input errors
    become one ``PROG: error: ...`` line and exit status 2 instead of a traceback, as in the
    ``resty`` command (RESTY_DEBUG=1 shows the traceback)."""
    import os
    import sys
    try:
        code = main()
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        sys.exit(130)
    except (RestyError, ValueError, OSError) as exc:
        if os.environ.get("RESTY_DEBUG"):
            raise
        msg = one_line(exc) or type(exc).__name__
        print(f"{prog}: error: {msg}", file=sys.stderr)
        sys.exit(2)
    sys.exit(code)
