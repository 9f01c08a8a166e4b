"""Small helpers every layer shares: atomic file writes and checksums, the user cache, file-type tables.

The bottom layer: it imports nothing from tracklink but the package root.
"""
