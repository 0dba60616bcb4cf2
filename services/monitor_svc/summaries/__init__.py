"""Summaries of monitors over a range: :mod:`.queries` for an owner's monitors kind by kind, :mod:`.overview` for
many monitors at once (SummarizeMonitors)."""
