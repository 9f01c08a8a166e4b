"""Cross-camera linking: per-camera tracklets -> global identities, online or in one batch.

One concept per module: `constraints` (LinkConfig, cannot-link rules, camera-centred features), `online`
(OnlineLinker), `gallery` (its identities, running camera means, search index and ageing), `clustering`
(batch clustering; calibration and the exact constrained average linkage live in `tracklink.models`),
`graph_linkage` (that linkage on a sparse nearest-neighbour graph, for large sets), `index` (faiss search),
`threshold` (where a model's threshold is read and written). Their public names are re-exported here.

This module is tracklink's own contribution and is written by hand: trackers (BoxMOT, ultralytics) stop at
one camera, and no well-kept library does constrained re-ID linking. It uses scipy where it can
(`linear_sum_assignment`) and faiss for nearest-neighbour search; scipy's hierarchical clustering takes no
cannot-link constraints, so the constrained average linkage is a numpy loop.

One similarity everywhere: the average cosine similarity between the members of two groups of tracklets,
each tracklet weighted by its number of embeddings, on tracklet features with their camera's mean removed
(`center_by_camera`: without that, people in one camera look more alike than one person across cameras).
An identity is scored against a tracklet by the dot product with its weighted mean feature (which is that
average), and batch clustering merges by the same average (average linkage). So one threshold means the
same thing online, in batch and in `calibrate_threshold`. Weighting by embedding count makes an
identity's feature (nearly) the mean over all of its frames, as if its tracklets were one long tracklet:
the rule tracklet pooling already follows within a camera, and a 3-frame fragment cannot outvote a
tracklet seen for a minute.

See `constraints` for the cannot-link rules.
"""

from tracklink.app.link.clustering import calibrate_threshold, cluster_tracklets
from tracklink.app.link.constraints import (LinkConfig, TransitWindows, can_join, center_by_camera, load_transit,
                                            transit_ok)
from tracklink.app.link.online import OnlineLinker
from tracklink.app.link.threshold import SIDECAR_SUFFIX, resolve_threshold, sidecar_path, write_threshold

__all__ = ["LinkConfig", "OnlineLinker", "SIDECAR_SUFFIX", "TransitWindows", "calibrate_threshold", "can_join",
           "center_by_camera", "cluster_tracklets", "load_transit", "resolve_threshold", "sidecar_path", "transit_ok",
           "write_threshold"]
