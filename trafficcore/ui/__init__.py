"""Data the dashboard shows, shaped for display; pure functions, no Streamlit.

Pages stay thin: they call these and draw. Keeping the shaping here makes it testable without a
browser and usable from notebooks. One small module per concern:

- `datasets`   the store's datasets, site points, map framing, cache fingerprints
- `clock`      issue times ("as of"), defaults and URL text
- `models`     which model answers (shipped, trained, or a baseline fitted on the fly)
- `forecasts`  typical values, per-site totals, map colours and legends, approach tables
- `series`     one site's history, typical day and forecast against observed
- `quality`    coverage and detector fault flags (stuck, zero, gaps)
- `uploads`    files per import format, loading them, errors in plain words
- `signals`    timing-plan tables for the what-if lab
- `report`     the newest benchmark report as tables
"""

from trafficcore.ui.datasets import SYNTHETIC_LABEL, data_stamp, datasets_table, site_points, view_state

__all__ = ["SYNTHETIC_LABEL", "data_stamp", "datasets_table", "site_points", "view_state"]
