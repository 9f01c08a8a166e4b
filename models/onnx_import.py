"""Import OSNet weights from a torchreid `.pth` or from an OSNet ONNX export.

An ONNX export made in eval mode has each BatchNorm folded into the conv before it: the conv gains a bias
and the BN disappears. We put the folded weights into the conv and turn the BN into an exact identity that
carries the bias, so eval-mode outputs match ONNX Runtime. Training needs real BN statistics again: see
`reinflate_batchnorm`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Iterable

import numpy as np
import torch
import torch.nn as nn

from tracklink import TracklinkError
from tracklink.models.checkpoint import ModelMeta
from tracklink.models.reid import ReIDModel, build_model

# conv1 output channels identify the OSNet width.
_OSNET_BY_STEM = {16: "osnet_x0_25", 32: "osnet_x0_5", 48: "osnet_x0_75", 64: "osnet_x1_0"}


def _osnet_arch(stem_weight) -> str | None:
    """The OSNet width from its 7x7 RGB stem conv, or None if this is not an OSNet stem."""
    if stem_weight is None or tuple(stem_weight.shape[1:]) != (3, 7, 7):
        return None
    return _OSNET_BY_STEM.get(int(stem_weight.shape[0]))


def _module_path(node_output: str) -> str:
    """'/conv2/conv2.0/conv2b/conv2b.1/conv2/Conv_output_0' -> 'conv2.0.conv2b.1.conv2'.

    The TorchScript exporter names nodes by module scope; a Sequential child shows as 'parent.index', and
    the second call of a shared module (OSNet's channel gate) as 'gate_1'.
    """
    scopes = [re.sub(r"_\d+$", "", s) for s in node_output.strip("/").split("/")[:-1]]
    path: list[str] = []
    parent = ""
    for scope in scopes:
        local = scope[len(parent) + 1:] if parent and scope.startswith(parent + ".") else scope
        path.extend(local.split("."))
        parent = scope
    return ".".join(path)


def _bn_after(module: nn.Module, conv_path: str) -> str:
    """The BN that follows a conv is the 'bn' sibling in every OSNet unit."""
    parent = conv_path.rsplit(".", 1)[0] if "." in conv_path else ""
    bn_path = f"{parent}.bn" if parent else "bn"
    if not isinstance(module.get_submodule(bn_path), nn.BatchNorm2d):
        raise KeyError(bn_path)
    return bn_path


def import_osnet_onnx(path: str | Path) -> tuple[ReIDModel, ModelMeta]:
    """Map an OSNet ONNX graph's initializers onto our OSNet; returns an eval-mode model."""
    import onnx
    from onnx import numpy_helper

    path = Path(path)
    try:
        graph = onnx.load(str(path)).graph
    except Exception as exc:
        raise TracklinkError(f"cannot read ONNX model {path}: {exc}") from None
    inits = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    conv_nodes = [n for n in graph.node if n.op_type == "Conv"]
    if not conv_nodes:
        raise TracklinkError(f"{path} has no Conv nodes; it is not an OSNet export")
    arch = _osnet_arch(inits.get(conv_nodes[0].input[1]))
    if arch is None:
        raise TracklinkError(f"{path}: the first conv does not look like an OSNet stem; only OSNet ONNX can be imported")

    model = build_model(arch, num_classes=0).eval()
    backbone = model.backbone
    params = dict(backbone.named_parameters())
    buffers = dict(backbone.named_buffers())
    assigned: set[str] = set()

    def put(name: str, value: np.ndarray) -> None:
        target = params.get(name, buffers.get(name))
        if target is None or tuple(target.shape) != tuple(value.shape):
            raise TracklinkError(f"{path}: tensor for {name} has shape {value.shape}, which does not fit {arch}")
        with torch.no_grad():
            target.copy_(torch.from_numpy(np.array(value, dtype=np.float32)))
        assigned.add(name)

    for node in conv_nodes:
        conv_path = _module_path(node.output[0])
        if any(name not in inits for name in node.input[1:]):
            raise TracklinkError(f"{path}: conv {conv_path} takes weights that are not stored initializers; "
                                 "export the model again with constant folding")
        put(f"{conv_path}.weight", inits[node.input[1]])
        if len(node.input) < 3:
            continue
        if f"{conv_path}.bias" in params:  # a conv with a bias of its own (the channel gate)
            put(f"{conv_path}.bias", inits[node.input[2]])
        else:  # a folded BN: its effect is now the conv bias
            try:
                bn_path = _bn_after(backbone, conv_path)
            except (AttributeError, KeyError):
                raise TracklinkError(f"{path}: conv {conv_path} has a bias but no BN follows it in {arch}") from None
            bn: nn.BatchNorm2d = backbone.get_submodule(bn_path)
            channels = bn.num_features
            put(f"{bn_path}.weight", np.ones(channels, np.float32))
            put(f"{bn_path}.bias", inits[node.input[2]])
            put(f"{bn_path}.running_mean", np.zeros(channels, np.float32))
            # var + eps == 1, so the eval-mode BN is exactly x + bias.
            put(f"{bn_path}.running_var", np.full(channels, 1.0 - bn.eps, np.float32))

    for name in ("fc.0.weight", "fc.0.bias", "fc.1.weight", "fc.1.bias", "fc.1.running_mean", "fc.1.running_var"):
        if name not in inits:
            raise TracklinkError(f"{path}: missing initializer {name}; the embedding layer cannot be imported")
        put(name, inits[name])

    missing = [n for n in params if n not in assigned]
    if missing:
        raise TracklinkError(f"{path}: {len(missing)} parameters were not found in the graph, e.g. {missing[:3]}")

    inp = graph.input[0].type.tensor_type.shape.dim
    input_size = (int(inp[2].dim_value or 256), int(inp[3].dim_value or 128))
    meta = ModelMeta(arch=arch, input_size=input_size, embedding_dim=model.embedding_dim,
                     bn_folded=True, source=path.name)
    return model, meta


def import_torchreid(path: str | Path, arch: str | None = None) -> tuple[ReIDModel, ModelMeta]:
    """Load a torchreid OSNet or ResNet-50 checkpoint, or torchvision ResNet-50 weights (plain or
    {'state_dict': ...}, optionally 'module.'-prefixed); the classifier (torchreid) and fc (torchvision) are
    left out: a re-ID model gets its own head."""
    path = Path(path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise TracklinkError(
            f"cannot load {path} safely ({type(exc).__name__}); only plain tensor checkpoints are accepted"
        ) from None
    state = payload.get("state_dict", payload) if isinstance(payload, dict) else None
    if not isinstance(state, dict):
        raise TracklinkError(f"{path} holds no state dict")
    state = {re.sub(r"^module\.", "", k): v for k, v in state.items()}
    state = {k: v for k, v in state.items() if not k.startswith("classifier.")}
    if arch is None:
        arch = _osnet_arch(state.get("conv1.conv.weight")) or ("resnet50" if "layer4.2.conv3.weight" in state else None)
        if arch is None:
            raise TracklinkError(f"{path}: cannot tell the architecture; pass --arch")
    if arch == "resnet50":  # torchvision's ImageNet head; OSNet's own fc is part of its backbone
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    model = build_model(arch, num_classes=0).eval()
    try:
        result = model.backbone.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatches raise even when strict=False
        raise TracklinkError(f"{path}: weights do not fit {arch}: {str(exc).splitlines()[1:2] or exc}; "
                             "pass the right --arch") from None
    if result.missing_keys:
        raise TracklinkError(f"{path}: weights do not fit {arch}; missing e.g. {result.missing_keys[:3]}")
    meta = ModelMeta(arch=arch, embedding_dim=model.embedding_dim, source=path.name)
    return model, meta


@torch.no_grad()
def reinflate_batchnorm(model: nn.Module, batches: Iterable[torch.Tensor]) -> None:
    """Give folded BNs real statistics without changing the eval-mode function.

    For each BN whose input statistics are (m, v) on real data we set running stats to (m, v),
    gamma = sqrt(v + eps) and beta = m + old_beta. Eval output is unchanged (the BN still adds old_beta),
    and in train mode, where BN normalises by batch statistics, the layer now behaves almost the same.
    Without this, fine-tuning an imported ONNX model starts from a different function.
    """
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    sums: dict[nn.Module, list[torch.Tensor]] = {bn: [0.0, 0.0, 0] for bn in bns}

    def hook(bn, inputs, _output):
        x = inputs[0].detach().double()
        acc = sums[bn]
        acc[0] = acc[0] + x.sum(dim=(0, 2, 3))
        acc[1] = acc[1] + (x * x).sum(dim=(0, 2, 3))
        acc[2] += x.numel() // x.shape[1]

    handles = [bn.register_forward_hook(hook) for bn in bns]
    was_training = model.training
    model.eval()
    try:
        for images in batches:
            model(images)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    for bn in bns:
        total, total_sq, count = sums[bn]
        if count == 0:
            continue
        mean = total / count
        var = (total_sq / count - mean * mean).clamp_min(0.0)
        scale = torch.sqrt(var + bn.eps)
        # Identity before: y = (x - 0) / sqrt(1) * 1 + beta. After: (x - m)/scale*scale + m + beta.
        old_beta = bn.bias.double() - bn.running_mean.double() * bn.weight.double() / torch.sqrt(bn.running_var.double() + bn.eps)
        old_gain = bn.weight.double() / torch.sqrt(bn.running_var.double() + bn.eps)
        bn.running_mean.copy_(mean.float())
        bn.running_var.copy_(var.float())
        bn.weight.copy_((old_gain * scale).float())
        bn.bias.copy_((old_beta + old_gain * mean).float())


def import_weights(path: str | Path, arch: str | None = None) -> tuple[ReIDModel, ModelMeta]:
    """Dispatch on the file type: .onnx or a torch checkpoint."""
    path = Path(path)
    if not path.is_file():
        raise TracklinkError(f"weights file not found: {path}")
    if path.suffix.lower() == ".onnx":
        return import_osnet_onnx(path)
    return import_torchreid(path, arch=arch)
