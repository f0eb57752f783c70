"""Exceptions raised inside the user's code (model, loss, metric), said in one line that names which failed."""

from __future__ import annotations

from contextlib import contextmanager

import torch


class UserCodeError(ValueError):
    """An exception from the user's model, loss or metric; ``__cause__`` is the original, with its traceback."""


@contextmanager
def calling(failed: str):
    """Run user code; an exception from it becomes a ``UserCodeError`` in one line: ``failed`` (who failed, e.g.
    "loss_fn failed"), the exception's type (torch's RuntimeErrors go without) and its first line.

    Out-of-memory errors pass through as they are (callers halve their chunks and retry), and so do
    errors already attributed.
    """
    try:
        yield
    except (torch.OutOfMemoryError, UserCodeError):
        raise
    except Exception as error:
        first = (str(error).strip().splitlines() or [""])[0]
        kind = "" if type(error) is RuntimeError else f"{type(error).__name__}: "
        raise UserCodeError(f"{failed}: {kind}{first}".rstrip(": ")) from error
