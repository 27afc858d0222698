"""See a collection: its record, coverage, a 2-D map of its vectors and soundness checks (issue 25).

The computations live here, below the service and the CLI: `explore_store` (or `explore_points`) makes
one JSON-safe document; `/explore` (scinsearch serve) draws it in the browser, and `write_report` writes
the same page as one self-contained offline HTML file (`scinsearch explore --out report.html`).

    from scinsearch.explore import explore_store, write_report
    document = explore_store(store)
    write_report(document, Path("report.html"))
"""

from scinsearch.explore.build import explore_points, explore_store
from scinsearch.explore.report import write_report

__all__ = ["explore_points", "explore_store", "write_report"]
