"""Which WorkSource the export runs from: the seam where the planner's scheduler plugs in.

Today every run takes ``KindByKind`` (each kind in the plan's order, all
admitted). The deadline planner (issue 11) replaces this with its scheduler:
items of every kind merged by tier and least laxity, admission against the
cutoff, descoping with reasons, re-planned from measured rates.
"""

from __future__ import annotations

from collections.abc import Sequence

from orchestrator.export.exporters.base import Exporter
from orchestrator.export.work import KindByKind, WorkSource
from orchestrator.run.steps import RunContext


def work_source(run: RunContext, exporters: Sequence[Exporter]) -> WorkSource:
    """The source of work for this run's export; ``exporters`` come in the plan's order."""
    return KindByKind(exporters)
