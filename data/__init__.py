"""Labelled re-ID data: dataset readers, identity selection, and embedding a dataset's frames with any model.

Training, evaluation, `calibrate` and `match` read labelled tracklets the same way, so this sits below both
train/ and app/.
"""
