"""Errors users see: one line, naming the problem. The CLI turns them into exit code 2."""
class RestyError(Exception):
    """Base class of every error Resty raises on purpose for bad input."""
class ImageError(RestyError, ValueError):
    """An image could not be read, is too large, or has an unsupported form."""
class WeightsError(RestyError, ValueError):
    """A weight file is missing, unreadable, of the wrong shape, or unavailable offline."""
class OutputExistsError(RestyError, FileExistsError):
    """An output exists and overwriting was not asked for."""
class BackendUnavailableError(RestyError, ImportError):
    """A framework backend was asked for but is not installed."""
class TrainingError(RestyError, RuntimeError):
    """Optimisation or training diverged (NaN or infinite loss)."""
