"""exitplan's engine: inventory, plan, export, probe, replay, verify, report.

Nothing in this package imports the CLI or terminal styling; progress leaves
the engine as events (see ``orchestrator.events``).
"""

__version__ = "0.1.0"
