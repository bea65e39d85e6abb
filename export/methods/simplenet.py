"""SimpleNet (Liu et al., CVPR 2023): feature adaptor + discriminator on PatchCore's patch features.

Training (workstation, torch, CPU): the cached locally aware patch features of the good images
are standardised per channel, mapped by the feature adaptor (one linear layer), and a small
discriminator (linear - batch norm - LeakyReLU - linear) learns to tell them from the same
adapted features plus Gaussian noise (the synthetic anomalies), with the paper's truncated L1
loss ``max(0, th+ - D(q)) + max(0, D(q~) + th-)``.  Training runs a fixed number of seeded
mini-batch steps, so its time is bounded and its result reproducible.

Inference needs no memory bank: standardisation, adaptor, first discriminator layer and its batch
norm are all linear and fold into one 1x1 convolution (D -> hidden), which is split by tap and
fused into the patch aggregation (:class:`SimpleNetGraph`); after it come LeakyReLU, a 1x1
convolution (hidden -> 1) and ``softplus(-D)``: a positive patch anomaly score that grows as the
discriminator's "normal" output falls (softplus keeps the order of ``-D`` and gives a positive
threshold).  Its size depends on D and ``hidden`` only, never on the number of training images.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

TH_POS = 0.5  # the paper's margins of the truncated L1 loss
TH_NEG = 0.5
LEAKY_SLOPE = 0.2
WEIGHT_DECAY = 1e-5


@dataclass(frozen=True)
class SimpleNetSettings:
    """The training recipe. Defaults chosen on one half of the test split of five real sets and
    reported on the other (docs/benchmarks.md, "SimpleNet's training recipe")."""

    hidden: int = 128       # discriminator width (the paper's 1024 is sized for a GPU, not a Pi)
    noise_std: float = 0.25  # Gaussian noise of the synthetic anomalies, a share of the feature spread
    noise_scale: str = "adapted"  # "adapted": times each adapted channel's spread in the batch (the
    # adaptor cannot shrink the features under the noise and make it trivially separable);
    # "fixed": in units of the standardised features
    identity_adaptor: bool = True  # start the adaptor at the identity (else torch's default init)
    adaptor_lr: float = 5e-4        # Adam, weight decay 1e-5; 5x the paper's rates: a bounded CPU fit
    discriminator_lr: float = 1e-3  # of a few hundred steps, not 160 epochs on a GPU
    steps: int = 500        # mini-batch steps
    batch: int = 1024       # normal patches per step (as many noisy ones)
    seed: int = 0


class SimpleNetHead(nn.Module):
    """Patch rows (P, D) -> discriminator output (P,), normal high; training form."""

    def __init__(self, mean: np.ndarray, std: np.ndarray, hidden: int):
        super().__init__()
        d = len(mean)
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32))
        self.register_buffer("inv_std", torch.as_tensor(1.0 / std, dtype=torch.float32))
        self.adaptor = nn.Linear(d, d)
        self.fc1 = nn.Linear(d, hidden)
        self.bn = nn.BatchNorm1d(hidden)
        self.fc2 = nn.Linear(hidden, 1)

    def adapt(self, x: torch.Tensor) -> torch.Tensor:
        return self.adaptor((x - self.mean) * self.inv_std)

    def discriminate(self, q: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.leaky_relu(self.bn(self.fc1(q)), LEAKY_SLOPE))[:, 0]

    @torch.no_grad()
    def folded(self) -> ScoreHead:
        """The inference form: every linear step before the LeakyReLU folded into one 1x1 conv."""
        bn_scale = self.bn.weight / torch.sqrt(self.bn.running_var + self.bn.eps)
        w1 = self.fc1.weight @ self.adaptor.weight * self.inv_std[None, :]  # (hidden, D)
        b1 = self.fc1.weight @ (self.adaptor.bias - self.adaptor.weight @ (self.mean * self.inv_std)) + self.fc1.bias
        w1, b1 = w1 * bn_scale[:, None], (b1 - self.bn.running_mean) * bn_scale + self.bn.bias
        return ScoreHead(w1, b1, self.fc2.weight, self.fc2.bias)


class ScoreHead(nn.Module):
    """Patch features (N, D, h, w) -> patch anomaly scores (N, 1, h, w) = softplus(-D(adapted))."""

    def __init__(self, w1: torch.Tensor, b1: torch.Tensor, w2: torch.Tensor, b2: torch.Tensor):
        super().__init__()
        self.conv1 = nn.Conv2d(w1.shape[1], w1.shape[0], 1)
        self.conv2 = nn.Conv2d(w2.shape[1], 1, 1)
        for conv, w, b in ((self.conv1, w1, b1), (self.conv2, w2, b2)):
            conv.weight.data.copy_(w[:, :, None, None])
            conv.bias.data.copy_(b)
            conv.requires_grad_(False)

    @property
    def macs_per_patch(self) -> int:
        return self.conv1.weight.numel() + self.conv2.weight.numel()

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return F.softplus(-self.conv2(F.leaky_relu(self.conv1(feats), LEAKY_SLOPE)))


class SimpleNetGraph(nn.Module):
    """image -> patch anomaly scores: the backbone with the score head fused into its aggregation.

    The head's first layer is linear and so are the aggregation's 3x3 average pooling (it
    commutes with a 1x1 convolution), its channel pooling and its bilinear upsampling (both keep
    constants, so the bias moves past them): the layer is split by tap and applied to each tap's
    map at its own resolution, before the pooling and the upsampling, and the parts are summed.  Same scores as ``head(features(x))``
    without the concatenated feature tensor, and the deeper taps' share of the layer runs on a
    quarter of the positions."""

    def __init__(self, features: nn.Module, head: ScoreHead):
        super().__init__()
        if features.method != "patchcore" or features.channel_index is not None:
            raise ValueError("SimpleNet's head fuses into PatchCore's aggregation only")
        self.backbone = features.backbone
        self.aggregation = features.aggregation
        self.grid_stride = getattr(features.backbone, "grid_stride", None)
        self.head = _FusedHead(features, head)

    float_nodes = ("/head/out/",)  # ONNX node-name prefixes the INT8 graph keeps float

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        maps = self.backbone(x)
        if self.grid_stride:
            size = (x.shape[-2] // self.grid_stride, x.shape[-1] // self.grid_stride)
        else:
            size = maps[0].shape[-2:]
        return self.head(maps, size, self.aggregation)


class _FusedHead(nn.Module):
    """Per-tap 1x1 convolutions (the first layer's columns for that tap, channel pooling folded
    in; the first carries the bias: the pooling and upsampling keep constants) on the taps' own
    maps, then the aggregation's pooling and upsampling, and :class:`_ScoreOutput`.

    The convolutions read the backbone's tap outputs directly, so in the INT8 graph they run
    as int8 convolutions on the backbone's int8 activations; only ``out`` stays float."""

    def __init__(self, features: nn.Module, head: ScoreHead):
        super().__init__()
        w1 = head.conv1.weight.data[:, :, 0, 0]
        self.taps = nn.ModuleList()
        start = 0
        widths = [p.weight.shape[0] for p in features.pools] if len(features.pools) else None
        for i, conv_in in enumerate(self._tap_channels(features)):
            width = widths[i] if widths else conv_in
            w = w1[:, start:start + width]
            if widths:
                w = w @ features.pools[i].weight.data[:, :, 0, 0]
            start += width
            conv = nn.Conv2d(conv_in, w.shape[0], 1, bias=not self.taps)  # the bias once, on the first tap
            conv.weight.data.copy_(w[:, :, None, None])
            if conv.bias is not None:
                conv.bias.data.copy_(head.conv1.bias.data)
            self.taps.append(conv)
        if start != w1.shape[1]:
            raise ValueError(f"head expects {w1.shape[1]} feature channels, the taps give {start}")
        self.out = _ScoreOutput(head.conv2)
        self.requires_grad_(False)

    @staticmethod
    def _tap_channels(features: nn.Module) -> list[int]:
        if len(features.pools):
            return [p.weight.shape[1] for p in features.pools]
        return list(features.tap_channels)

    def forward(self, maps: list[torch.Tensor], size, k: int) -> torch.Tensor:
        parts = []
        for i, (conv, m) in enumerate(zip(self.taps, maps)):
            m = conv(m)
            if k > 1:
                m = F.avg_pool2d(m, k, stride=1, padding=k // 2, count_include_pad=False)
            if i > 0 or tuple(m.shape[-2:]) != tuple(size):
                m = F.interpolate(m, size=size, mode="bilinear", align_corners=False)
            parts.append(m)
        return self.out(parts)


class _ScoreOutput(nn.Module):
    """Sum of the taps' parts, LeakyReLU, the output layer negated (softplus(-D) without a Neg
    node) and softplus: kept float in the INT8 graph, its output is the score itself."""

    def __init__(self, conv2: nn.Conv2d):
        super().__init__()
        self.conv2 = nn.Conv2d(conv2.in_channels, 1, 1)
        self.conv2.weight.data.copy_(-conv2.weight.data)
        self.conv2.bias.data.copy_(-conv2.bias.data)

    def forward(self, parts: list[torch.Tensor]) -> torch.Tensor:
        total = parts[0]
        for part in parts[1:]:
            total = total + part
        return F.softplus(self.conv2(F.leaky_relu(total, LEAKY_SLOPE)))


@dataclass
class SimpleNetFit:
    head: ScoreHead
    seconds: float
    final_loss: float      # mean truncated L1 loss of the last 50 steps
    train_accuracy: dict   # share of normal / noisy patches on the right side of 0, last batches


def truncated_l1(d_normal: torch.Tensor, d_noisy: torch.Tensor) -> torch.Tensor:
    """The paper's loss: normal outputs pushed above +th+, synthetic anomalies below -th-."""
    return F.relu(TH_POS - d_normal).mean() + F.relu(d_noisy + TH_NEG).mean()


def fit_simplenet(features: np.ndarray, settings: SimpleNetSettings = SimpleNetSettings(),
                  progress: bool = False) -> SimpleNetFit:
    """features (N, D, h, w) of good images -> trained, folded score head."""
    from tqdm import tqdm

    t0 = time.perf_counter()
    d = features.shape[1]
    rows = torch.from_numpy(np.ascontiguousarray(features.transpose(0, 2, 3, 1).reshape(-1, d), dtype=np.float32))
    mean = rows.mean(0).numpy()
    std = np.maximum(rows.std(0).numpy(), 1e-6)
    torch.manual_seed(settings.seed)
    gen = torch.Generator().manual_seed(settings.seed)
    head = SimpleNetHead(mean, std, settings.hidden)
    if settings.identity_adaptor:
        with torch.no_grad():
            head.adaptor.weight.copy_(torch.eye(d))
            head.adaptor.bias.zero_()
    opt = torch.optim.Adam([
        {"params": head.adaptor.parameters(), "lr": settings.adaptor_lr},
        {"params": [*head.fc1.parameters(), *head.bn.parameters(), *head.fc2.parameters()],
         "lr": settings.discriminator_lr},
    ], weight_decay=WEIGHT_DECAY)
    batch = min(settings.batch, len(rows))
    losses, hits = [], []
    head.train()
    bar = tqdm(range(settings.steps), desc="simplenet", unit="step", disable=not progress, file=sys.stderr)
    for _ in bar:
        x = rows[torch.randint(len(rows), (batch,), generator=gen)]
        q = head.adapt(x)
        scale = q.detach().std(0) if settings.noise_scale == "adapted" else 1.0
        noisy = q + settings.noise_std * scale * torch.randn(q.shape, generator=gen)
        out = head.discriminate(torch.cat([q, noisy]))
        loss = truncated_l1(out[:batch], out[batch:])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        hits.append(((out[:batch] > 0).float().mean().item(), (out[batch:] < 0).float().mean().item()))
        if len(losses) % 50 == 0:
            bar.set_postfix(loss=f"{np.mean(losses[-50:]):.3f}")
    bar.close()
    head.eval()
    last = np.array(hits[-50:])
    return SimpleNetFit(head.folded().eval(), time.perf_counter() - t0, float(np.mean(losses[-50:])),
                        {"normal": float(last[:, 0].mean()), "noisy": float(last[:, 1].mean())})


def conv_macs(module: nn.Module, input_size: tuple[int, int]) -> int:
    """Multiply-accumulates of the convolutions of ``module`` on one image (hooks, one forward)."""
    total = 0

    def count(conv: nn.Conv2d, _inputs, output: torch.Tensor) -> None:
        nonlocal total
        kh, kw = conv.kernel_size
        total += output.numel() * (conv.in_channels // conv.groups) * kh * kw

    hooks = [m.register_forward_hook(count) for m in module.modules() if isinstance(m, nn.Conv2d)]
    try:
        with torch.no_grad():
            module(torch.zeros(1, 3, *input_size))
    finally:
        for hook in hooks:
            hook.remove()
    return total


def fit_section(cfg, feats: np.ndarray, graph: nn.Module, manifest: dict, log) -> SimpleNetGraph:
    """`edgead export --method simplenet`: train on the cached features (every tile's patches,
    one discriminator), fill the manifest's ``simplenet`` section; returns the graph to export."""
    settings = SimpleNetSettings(hidden=cfg.simplenet_hidden, noise_std=cfg.simplenet_noise,
                                 steps=cfg.simplenet_steps, batch=cfg.simplenet_batch, seed=cfg.seed)
    n, d, h, w = feats.shape
    log(f"simplenet: {n * h * w} patches x {d}, discriminator {d} -> {settings.hidden} -> 1, "
        f"{settings.steps} steps of {settings.batch}")
    fit = fit_simplenet(feats, settings, progress=cfg.progress)
    scored = SimpleNetGraph(graph, fit.head).eval()
    backbone_macs = conv_macs(graph, cfg.preprocess.input_size)  # the graph a PatchCore export would run
    head_macs = conv_macs(scored, cfg.preprocess.input_size) - conv_macs(graph.backbone, cfg.preprocess.input_size)
    rule = {"rule": "topk_mean", "k": cfg.topk} if cfg.image_score == "topk_mean" else {"rule": "max"}
    manifest["simplenet"] = {
        "hidden": settings.hidden, "noise_std": settings.noise_std, "noise_scale": settings.noise_scale,
        "identity_adaptor": settings.identity_adaptor, "adaptor_lr": settings.adaptor_lr,
        "discriminator_lr": settings.discriminator_lr, "steps": settings.steps,
        "batch": settings.batch, "train_seconds": round(fit.seconds, 1), "final_loss": round(fit.final_loss, 4),
        "train_accuracy": fit.train_accuracy, "image_score": rule,
        "head_macs": int(head_macs), "backbone_macs": int(backbone_macs),
    }
    manifest["bank_size"] = 0
    log(f"simplenet: trained in {fit.seconds:.1f} s, loss {fit.final_loss:.4f}, "
        f"normal/noisy patches on the right side {fit.train_accuracy['normal']:.3f}/{fit.train_accuracy['noisy']:.3f}; "
        f"head {head_macs / 1e6:.1f} M MAC per frame = {head_macs / max(1, backbone_macs):.1%} of the backbone's "
        f"{backbone_macs / 1e6:.0f} M")
    return scored
