"""The one progress-bar helper of the package (``tqdm.auto``: a widget in Jupyter, text in a
terminal). Every loop that shows progress asks :func:`progress_bar` for its bar."""
from __future__ import annotations

from typing import Any, Optional

__all__ = ["progress_bar"]


def progress_bar(enabled: Optional[bool], total: Optional[int], desc: str, unit: str = "it", *,
                 auto_over: Optional[int] = None, **kwargs: Any) -> Any:
    """A ``tqdm.auto.tqdm`` bar, or ``None`` when progress is off.

    ``enabled=None`` turns the bar on when ``auto_over`` is given and ``total >= auto_over``
    (off otherwise). ``kwargs`` go to tqdm. Callers do ``if bar is not None:
    bar.update(n)`` and close it in a ``finally``.
    """
    if enabled is None:
        enabled = auto_over is not None and total is not None and total >= auto_over
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, **kwargs)
