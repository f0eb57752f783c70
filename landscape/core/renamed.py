"""Keyword arguments renamed in this release: the old names still work, with a DeprecationWarning."""

from __future__ import annotations

import functools
import warnings


def renamed(**old_to_new: str):
    """Decorate a function whose keywords ``old`` are now ``new``: ``old=`` is passed on as ``new=``
    with a DeprecationWarning (both at once is a TypeError). Kept for one release."""
    def decorate(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            for old, new in old_to_new.items():
                if old in kwargs:
                    if new in kwargs:
                        raise TypeError(f"{fn.__name__}() got both {old}= and its new name {new}=")
                    warnings.warn(f"{fn.__name__}({old}=...) is now {fn.__name__}({new}=...)", DeprecationWarning,
                                  stacklevel=2)
                    kwargs[new] = kwargs.pop(old)
            return fn(*args, **kwargs)

        return wrapper

    return decorate
