"""Progress bars for long work: a tqdm bar when asked, a silent stand-in otherwise.

Library calls are silent by default (``progress=False``); the command line passes
``None``, which shows a bar only on a terminal. tqdm is optional (``relprop[progress]``)
and imported only when a bar is shown.
"""

from __future__ import annotations

import importlib
import sys
from types import TracebackType
from typing import Any

__all__ = ["SilentProgress", "progress_bar"]

_EXTRA = "pip install 'relprop[progress]'"


class SilentProgress:
    """What :func:`progress_bar` returns when no bar is shown: tqdm's interface, no output."""

    def update(self, n: float = 1) -> None:
        """Count ``n`` more steps (nothing to show)."""

    def set_postfix(self, *args: object, **kwargs: object) -> None:
        """Set the text after the bar (nothing to show)."""

    def set_description(self, desc: str | None = None, refresh: bool = True) -> None:
        """Set the text before the bar (nothing to show)."""

    def close(self) -> None:
        """Finish (nothing to clean up)."""

    def __enter__(self) -> SilentProgress:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()


def _tqdm() -> Any:
    """tqdm's class (``tqdm.auto``: a widget in notebooks), or ``None`` if not installed."""
    try:
        return importlib.import_module("tqdm.auto").tqdm
    except ImportError:
        return None


def _on_terminal() -> bool:
    isatty = getattr(sys.stderr, "isatty", None)
    return bool(isatty is not None and isatty())


def progress_bar(progress: bool | None, total: int | None = None, desc: str = "") -> Any:
    r"""A progress bar over ``total`` steps, or a silent stand-in with the same interface.

    Both have ``update(n)``, ``set_postfix(...)``, ``set_description(...)``, ``close()``
    and work as context managers; the bar writes to stderr and disappears when closed.

    Parameters
    ----------
    progress
        ``True``: show a tqdm bar (tqdm must be installed); ``False``: silent; ``None``:
        a bar only when stderr is a terminal and tqdm is installed (the command line's
        default).
    total
        Number of steps, or ``None`` if unknown (the bar then only counts).
    desc
        Text shown before the bar.

    Returns
    -------
    tqdm or SilentProgress

    Raises
    ------
    ImportError
        For ``progress=True`` without tqdm; the message names the extra that installs it.
    TypeError
        If ``progress`` is not ``True``, ``False`` or ``None``.

    Examples
    --------
    >>> with progress_bar(False, total=3, desc="rows") as bar:
    ...     for _ in range(3):
    ...         bar.update(1)
    >>> type(bar).__name__
    'SilentProgress'
    """
    if progress is not None and not isinstance(progress, bool):
        raise TypeError(
            f"progress must be True (show a bar), False (silent) or None (a bar on a "
            f"terminal); got {progress!r}."
        )
    if progress is False:
        return SilentProgress()
    tqdm = _tqdm()
    if progress is None:
        if tqdm is None or not _on_terminal():
            return SilentProgress()
    elif tqdm is None:
        raise ImportError(f"progress=True needs the optional tqdm package: {_EXTRA}.")
    return tqdm(total=total, desc=desc, leave=False)
