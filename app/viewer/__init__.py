"""The desktop viewer (`tracklink view`): a live camera grid, the people found so far, and search.

It is a front end of the same `Pipeline` as `tracklink batch`: a worker thread steps the pipeline and
hands the UI thread ready-to-paint frames, boxes and identity snapshots; the UI thread only paints. This
package's `__init__` stays free of Qt so that `tracklink --help` does not load it.
"""
