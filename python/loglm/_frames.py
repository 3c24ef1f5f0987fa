"""DataFrames that still answer to the column names of earlier releases.

loglm's DataFrames use the loghub column style (``LineId``, ``Content``, ``EventId``,
``SessionId``, ``Label``, ``Score``...). Where a frame used other names before, its
class maps the old names to the new ones, so ``df["label"]`` and ``df.label`` keep
working; everything else (``df.columns``, ``to_csv``, ``to_dict``) shows the new names.
Imported lazily (pandas is not imported by ``import loglm``).
"""
from __future__ import annotations

from typing import Any, Dict

import pandas as pd

__all__ = ["AliasedFrame", "SessionReportFrame"]


class AliasedFrame(pd.DataFrame):
    """A :class:`pandas.DataFrame` reading the old column names of ``_aliases``
    (old -> new) as the new ones; frames derived from it keep the aliases."""

    _aliases: Dict[str, str] = {}

    @property
    def _constructor(self) -> Any:
        return type(self)

    def _new_name(self, key: Any) -> Any:
        if isinstance(key, str) and key in self._aliases and key not in self.columns:
            return self._aliases[key]
        if isinstance(key, list) and any(isinstance(k, str) and k in self._aliases for k in key):
            return [self._new_name(k) for k in key]
        return key

    def __getitem__(self, key: Any) -> Any:
        return super().__getitem__(self._new_name(key))

    def __getattr__(self, name: str) -> Any:
        aliases = type(self)._aliases
        if name in aliases and not name.startswith("_"):
            return self[aliases[name]]
        return super().__getattr__(name)


class SessionReportFrame(AliasedFrame):
    """:meth:`loglm.CollaborativeDetector.report`: ``SessionId``, ``Label``, ``Score``,
    ``Route``, ``Novelty``, ``Reason`` (read as ``session``, ``label``, ``score``,
    ``route``, ``novelty``, ``reason`` too, its earlier names)."""

    _aliases = {"session": "SessionId", "label": "Label", "score": "Score", "route": "Route",
                "novelty": "Novelty", "reason": "Reason"}
