"""Training losses: OSM+CAA, its ablations, and the baselines it is compared against.

OSM+CAA (Wang et al., "Deep Metric Learning by Online Soft Mining and Class-Aware Attention", AAAI 2019,
arXiv 1811.01459) is this project's own method and no maintained library implements it, so it is written
here by hand, following the authors' Caffe layer `distance_weighted_valid_pair_loss_V5`. The baselines
(batch-hard triplet, plain contrastive) reuse the same pair code so that ablations differ in one switch only.

The training engine builds one `Criterion` from a `LossConfig` and calls it once per step:

    criterion = build_criterion("osm_caa", cls="ce")
    total, parts = criterion(out.feat, out.embedding, out.logits, labels, clip_len=T)

with the P*K*T frames of a batch flattened tracklet-major (frame t of tracklet b is row b*T + t) and one
label per tracklet (or per frame). The total is frame-level metric loss + tracklet-level metric loss (on
CAA-pooled tracklet features) + classification loss.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F

from tracklink import TracklinkError
from tracklink.models.pooling import caa_attention, temporal_pool

METRICS = ("osm_caa", "osm", "contrastive", "triplet", "none")  # none: the ablation without a metric loss
CLASSIFICATIONS = ("ce", "caa_ce", "none")
SIGMA_FORMS = ("paper", "official")
FEATURES = ("feat", "embedding")

# Official CAA-weighted CE: a Gaussian around p = 0.5 favours samples the classifier is unsure about.
CAA_CE_CENTER = 0.5
CAA_CE_SIGMA = 0.18


def _true_class_prob(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """softmax(logits)[i, y_i], detached: CAA weights are constants to the gradient."""
    logits = logits.detach()
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()
    return logits.softmax(dim=-1).gather(-1, labels.unsqueeze(-1)).squeeze(-1)


def _pairwise_sq_dist(x: torch.Tensor) -> torch.Tensor:
    """||x_i - x_j||^2 by the Gram trick: the (N, N, D) difference tensor would not fit for real batches."""
    sq = x.pow(2).sum(dim=1)
    return (sq[:, None] + sq[None, :] - 2.0 * (x @ x.T)).clamp_min(0.0)


def _safe_dist(sq_dist: torch.Tensor, eps: float) -> torch.Tensor:
    # sqrt has an infinite slope at 0; clamping first gives coincident points a zero gradient, not NaN.
    return sq_dist.clamp_min(eps).sqrt()


def _check_batch(x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Validated features, in float32 at least: the Gram trick cancels catastrophically in half precision."""
    if x.ndim != 2 or labels.shape != (x.shape[0],):
        raise ValueError(f"expected features (N, D) and labels (N,), got {tuple(x.shape)} and {tuple(labels.shape)}")
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def osm_caa_loss(
    embeddings: torch.Tensor,
    labels: torch.Tensor,
    logits: torch.Tensor | None = None,
    *,
    alpha: float = 1.2,
    sigma: float = 0.8,
    lam: float = 0.5,
    sigma_form: str = "paper",
    use_osm: bool = True,
    use_caa: bool = True,
    eps: float = 1e-12,
) -> torch.Tensor:
    """(1 - lam) L_P + lam L_N over every pair i < j of the L2-normalised embeddings (N, D).

    Pair weights w_ij = s_ij * a_ij are detached. s is the OSM soft mining (positives: exp(-d^2/sigma^2),
    or exp(-d^2/(2 sigma^2)) with sigma_form="official"; negatives: max(0, alpha - d)); a_ij = min(a_i, a_j)
    is the class-aware attention of the true-class probability under `logits` (N, C).
    use_osm=False sets s = 1 and use_caa=False (or logits=None) sets a = 1; with both off this is the plain
    contrastive loss (1/2 mean d^2 over positives, 1/2 mean hinge^2 over negatives). A term without pairs,
    or whose weights are all 0, is exactly 0.
    """
    embeddings = _check_batch(embeddings, labels)
    if sigma_form not in SIGMA_FORMS:
        raise ValueError(f"unknown sigma_form {sigma_form!r}; choose one of {SIGMA_FORMS}")

    f = F.normalize(embeddings, dim=1)
    sq_dist = _pairwise_sq_dist(f)
    hinge = (alpha - _safe_dist(sq_dist, eps)).clamp_min(0.0)

    same = labels[:, None] == labels[None, :]
    upper = torch.ones_like(same).triu(diagonal=1)  # each unordered pair once
    pos, neg = same & upper, ~same & upper

    with torch.no_grad():
        if use_osm:
            width = sigma**2 if sigma_form == "paper" else 2.0 * sigma**2
            soft = torch.where(same, torch.exp(-sq_dist / width), hinge)
        else:
            soft = torch.ones_like(sq_dist)
        if use_caa and logits is not None:
            att = caa_attention(_true_class_prob(logits, labels)).to(soft.dtype)
            soft = soft * torch.minimum(att[:, None], att[None, :])
        w_pos, w_neg = soft * pos, soft * neg

    # Empty or all-zero weights give 0 / eps = 0 exactly.
    loss_pos = 0.5 * (w_pos * sq_dist).sum() / (w_pos.sum() + eps)
    loss_neg = 0.5 * (w_neg * hinge.pow(2)).sum() / (w_neg.sum() + eps)
    return (1.0 - lam) * loss_pos + lam * loss_neg


def caa_weighted_ce(logits: torch.Tensor, labels: torch.Tensor, eps: float = 1e-12,
                    label_smoothing: float = 0.0) -> torch.Tensor:
    """The official CAA-weighted cross-entropy: per-sample CE weighted by a detached Gaussian of p_i around
    0.5 (sigma 0.18), the weights L1-normalised over the batch. `label_smoothing` smooths each sample's CE;
    the weights still use the true-class probability."""
    ce = F.cross_entropy(logits, labels, reduction="none", label_smoothing=label_smoothing)
    p = _true_class_prob(logits, labels)
    weights = torch.exp(-((p - CAA_CE_CENTER) ** 2) / (2 * CAA_CE_SIGMA**2)).to(ce.dtype)
    return (weights / (weights.sum() + eps) * ce).sum()


def batch_hard_triplet(feat: torch.Tensor, labels: torch.Tensor, margin: float = 0.3,
                       eps: float = 1e-12) -> torch.Tensor:
    """Batch-hard triplet loss (Hermans et al., 2017), Euclidean on the raw features (N, D).

    Anchors without a positive or a negative in the batch are skipped; 0 when no anchor is valid.
    """
    feat = _check_batch(feat, labels)
    dist = _safe_dist(_pairwise_sq_dist(feat), eps)
    same = labels[:, None] == labels[None, :]
    pos = same & ~torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    neg = ~same
    valid = pos.any(dim=1) & neg.any(dim=1)
    hardest_pos = torch.where(pos, dist, torch.zeros_like(dist)).amax(dim=1)  # distances are >= 0
    hardest_neg = torch.where(neg, dist, torch.full_like(dist, math.inf)).amin(dim=1)
    per_anchor = torch.where(valid, F.relu(hardest_pos - hardest_neg + margin), torch.zeros_like(hardest_pos))
    return per_anchor.sum() / valid.sum().clamp_min(1)


def tracklet_features(frames: torch.Tensor, logits: torch.Tensor | None = None,
                      labels: torch.Tensor | None = None, use_caa: bool = True) -> torch.Tensor:
    """(B, T, D) frame features -> (B, D) tracklet features F = sum_t a_hat_t f_t of L2-normalised frames.

    a_hat is the CAA attention of each frame's true-class probability under `logits` (B, T, C), given
    tracklet `labels` (B,), L1-normalised inside the tracklet; without CAA (or logits) it is uniform, i.e.
    the test-time mean of normalised frames.
    """
    if use_caa and logits is not None and labels is None:
        raise ValueError("CAA tracklet pooling needs the tracklet labels (its attention uses the true class)")
    return temporal_pool(frames, "caa" if use_caa else "mean", logits=logits, labels=labels)


@dataclass(frozen=True)
class LossConfig:
    """What to train with. Defaults are the spec's: OSM+CAA (alpha 1.2, sigma 0.8, lambda 0.5) + plain CE."""

    metric: str = "osm_caa"  # one of METRICS
    cls: str = "ce"  # one of CLASSIFICATIONS
    alpha: float = 1.2
    sigma: float = 0.8
    lam: float = 0.5
    sigma_form: str = "paper"
    margin: float = 0.3  # triplet only
    metric_on: str = "feat"  # the BNNeck convention: metric losses see the features before the BN
    tracklet: bool = True  # the tracklet-level metric term on CAA-pooled clips (video batches only)
    tracklet_weight: float = 1.0
    cls_weight: float = 1.0
    label_smoothing: float = 0.0  # of the classification loss (torchreid's softmax uses 0.1)

    def __post_init__(self) -> None:
        for name, allowed in (("metric", METRICS), ("cls", CLASSIFICATIONS), ("sigma_form", SIGMA_FORMS),
                              ("metric_on", FEATURES)):
            if getattr(self, name) not in allowed:
                raise TracklinkError(f"loss {name} {getattr(self, name)!r} is unknown; choose one of {allowed}")
        if self.sigma <= 0 or self.alpha <= 0 or not 0.0 <= self.lam <= 1.0:
            raise TracklinkError(f"loss needs sigma > 0, alpha > 0 and 0 <= lam <= 1; got sigma={self.sigma}, "
                                 f"alpha={self.alpha}, lam={self.lam}")
        if self.metric == "none" and self.cls == "none":
            raise TracklinkError("metric loss none and classification loss none leave nothing to train")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise TracklinkError(f"label smoothing must be in [0, 1), got {self.label_smoothing}")


class Criterion:
    """Frame-level metric loss + tracklet-level metric loss + classification loss, from one LossConfig."""

    def __init__(self, config: LossConfig | None = None) -> None:
        self.config = config or LossConfig()

    @property
    def uses_caa(self) -> bool:
        return self.config.metric == "osm_caa"

    def metric_loss(self, x: torch.Tensor, labels: torch.Tensor, logits: torch.Tensor | None = None) -> torch.Tensor:
        """The configured metric loss on features (N, D); `logits` (N, C) feed CAA when it is on."""
        c = self.config
        if c.metric == "none":
            return x.new_zeros(())
        if c.metric == "triplet":
            return batch_hard_triplet(x, labels, margin=c.margin)
        return osm_caa_loss(x, labels, logits, alpha=c.alpha, sigma=c.sigma, lam=c.lam, sigma_form=c.sigma_form,
                            use_osm=c.metric != "contrastive", use_caa=self.uses_caa)

    def tracklet_loss(self, frames: torch.Tensor, logits: torch.Tensor | None, labels: torch.Tensor) -> torch.Tensor:
        """The same metric loss on pooled tracklet features: frames (B, T, D), logits (B, T, C), labels (B,)."""
        pooled = tracklet_features(frames, logits, labels, use_caa=self.uses_caa)
        return self.metric_loss(pooled, labels)  # CAA already weighted the frames; F has no logits of its own

    def classification_loss(self, logits: torch.Tensor | None, labels: torch.Tensor) -> torch.Tensor | None:
        cls = self.config.cls
        if cls == "none":
            return None
        if logits is None:
            raise TracklinkError(f"classification loss {cls!r} needs class logits but the model has no classifier; "
                                 "build it with num_classes > 0 or set the loss cls to 'none'")
        smoothing = self.config.label_smoothing
        if cls == "ce":
            return F.cross_entropy(logits, labels, label_smoothing=smoothing)
        return caa_weighted_ce(logits, labels, label_smoothing=smoothing)

    def __call__(self, feat: torch.Tensor, embedding: torch.Tensor, logits: torch.Tensor | None,
                 labels: torch.Tensor, clip_len: int = 1) -> tuple[torch.Tensor, dict[str, float]]:
        """Total loss and its parts as floats ("metric", "tracklet", "cls", "total") for logging.

        feat/embedding (N, D) and logits (N, C) are per frame, N = B * clip_len, tracklet-major (frame t of
        tracklet b is row b * clip_len + t). labels are per tracklet (B,) or per frame (N,).
        The tracklet term needs clip_len > 1; with clip_len 1 (image batches) it would repeat the frame term.
        """
        c = self.config
        x = feat if c.metric_on == "feat" else embedding
        n = x.shape[0]
        if clip_len < 1 or n % clip_len:
            raise ValueError(f"{n} frames do not split into tracklets of clip_len={clip_len}")
        b = n // clip_len
        if len(labels) == b:
            tracklet_labels, frame_labels = labels, labels.repeat_interleave(clip_len)
        elif len(labels) == n:
            frame_labels, by_tracklet = labels, labels.view(b, clip_len)
            if not (by_tracklet == by_tracklet[:, :1]).all():
                raise ValueError("labels differ inside a tracklet; rows must be clip_len consecutive frames "
                                 "of one tracklet")
            tracklet_labels = by_tracklet[:, 0]
        else:
            raise ValueError(f"expected {b} tracklet labels or {n} frame labels, got {len(labels)}")

        frame = self.metric_loss(x, frame_labels, logits)
        tracklet = frame.new_zeros(())
        if c.tracklet and clip_len > 1:
            clip_logits = logits.reshape(b, clip_len, -1) if logits is not None else None
            tracklet = self.tracklet_loss(x.reshape(b, clip_len, -1), clip_logits, tracklet_labels)
        cls = self.classification_loss(logits, frame_labels)
        cls = frame.new_zeros(()) if cls is None else cls

        total = frame + c.tracklet_weight * tracklet + c.cls_weight * cls
        # One device sync for the logged parts, not four.
        values = torch.stack([frame, tracklet, cls, total]).detach().tolist()
        return total, dict(zip(("metric", "tracklet", "cls", "total"), values))


def build_criterion(metric: str = "osm_caa", **cfg: object) -> Criterion:
    """Criterion by metric name ("osm_caa", "osm", "contrastive", "triplet") and LossConfig fields,
    e.g. build_criterion("triplet", cls="ce", margin=0.3)."""
    names = {f.name for f in fields(LossConfig)}
    unknown = sorted(set(cfg) - names)
    if unknown:
        raise TracklinkError(f"unknown loss option(s) {unknown}; valid ones are {sorted(names - {'metric'})}")
    return Criterion(LossConfig(metric=metric, **cfg))  # type: ignore[arg-type]
