"""Model micro-benchmarks: real-frames-only backbone vs all padded frames, and head step times.

    python benchmarks/bench_model.py                # defaults: ~1 min on 2 CPU cores
    python benchmarks/bench_model.py --img-size 160 --frames 16 --device cuda

(a) Forward+backward of VideoClassifier on a batch whose clips are half padding, running the backbone on
    the real frames only (the default) vs on every padded frame.
(b) Forward+backward step of the temporal heads on precomputed features: packed GRU (the model's),
    the same GRU stack run over the padded sequence, and the Transformer head.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import torch
from timing import time_interleaved
from torch import nn

from video_cnn_rnn.models import VideoClassifier
from video_cnn_rnn.models.heads import RecurrentHead, TransformerHead


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_interleaved_ms(
    fns: list[Callable[[], None]], device: torch.device, repeats: int, warmup: int = 2
) -> list[float]:
    """Median wall time of each function in milliseconds, the functions taking turns."""
    seconds = time_interleaved(fns, repeats, warmup, sync=lambda: sync(device))
    return [1000.0 * value for value in seconds]


def make_mask(batch: int, steps: int, padding: float, device: torch.device) -> torch.Tensor:
    """Every clip has round(steps * (1 - padding)) real frames, at least one."""
    length = max(1, round(steps * (1.0 - padding)))
    return (torch.arange(steps, device=device) < length).expand(batch, steps).contiguous()


def bench_backbone(args: argparse.Namespace, device: torch.device) -> list[tuple[str, float]]:
    model = VideoClassifier(
        backbone=args.backbone,
        freeze="finetune",
        num_classes=5,
        num_frames=args.frames,
        img_size=args.img_size,
    ).to(device)
    model.train()
    mask = make_mask(args.batch, args.frames, args.padding, device)
    shape = (args.batch, args.frames, 3, args.img_size, args.img_size)
    frames = torch.randint(0, 256, shape, dtype=torch.uint8, device=device)
    frames[~mask] = 0

    def step(real_frames_only: bool) -> Callable[[], None]:
        def run() -> None:
            model.zero_grad(set_to_none=True)
            features = model.network.extract_features(frames, mask, real_frames_only=real_frames_only)
            model.network.forward_features(features, mask).logsumexp(-1).sum().backward()

        return run

    real, every = time_interleaved_ms([step(True), step(False)], device, args.repeats)
    return [("backbone: real frames only", real), ("backbone: every padded frame", every)]


class PaddedRecurrent(nn.Module):
    """The packed head's GRU stack run over the full padded sequence (no packing), for comparison."""

    def __init__(self, packed: RecurrentHead) -> None:
        super().__init__()
        self.layers = packed.layers

    def forward(self, features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = features
        for rnn in self.layers:
            x, _ = rnn(x)
        last = (mask.sum(dim=1) - 1).view(-1, 1, 1).expand(-1, 1, x.shape[-1])  # [B] -> [B, 1, H]
        return x.gather(1, last).squeeze(1)  # [B, T, H] -> [B, H]


def bench_heads(args: argparse.Namespace, device: torch.device) -> list[tuple[str, float]]:
    torch.manual_seed(0)
    dim = args.feature_dim
    hidden = [int(h) for h in args.rnn_hidden.split(",")]
    gru = RecurrentHead(dim, hidden).to(device)
    heads: dict[str, nn.Module] = {
        f"head: GRU {hidden} packed": gru,
        f"head: GRU {hidden} padded": PaddedRecurrent(gru),
        "head: Transformer (seed: 1 head, ff 4, max)": TransformerHead(dim, max_len=args.head_frames).to(device),
    }
    mask = make_mask(args.head_batch, args.head_frames, args.padding, device)
    features = torch.randn(args.head_batch, args.head_frames, dim, device=device) * mask.unsqueeze(-1)

    def step(head: nn.Module) -> Callable[[], None]:
        def run() -> None:
            head.zero_grad(set_to_none=True)
            head(features, mask).square().sum().backward()

        return run

    for head in heads.values():
        head.train()
    times = time_interleaved_ms([step(h) for h in heads.values()], device, args.head_repeats, warmup=3)
    return list(zip(heads, times, strict=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--img-size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--padding", type=float, default=0.5, help="fraction of each clip that is padding")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--feature-dim", type=int, default=1280, help="head input size (lite0: 1280)")
    parser.add_argument("--head-batch", type=int, default=64)
    parser.add_argument("--head-frames", type=int, default=20)
    parser.add_argument("--head-repeats", type=int, default=20)
    parser.add_argument("--rnn-hidden", default="16,8", help="comma-separated GRU widths")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    device = torch.device(args.device)

    print(
        f"device={device} threads={torch.get_num_threads()} torch={torch.__version__} padding={args.padding:.0%}\n"
        f"(a) {args.backbone} {args.img_size}px B={args.batch} T={args.frames}, fine-tune forward+backward\n"
        f"(b) heads on features B={args.head_batch} T={args.head_frames} D={args.feature_dim}, "
        "forward+backward"
    )
    backbone_rows = bench_backbone(args, device)
    head_rows = bench_heads(args, device)

    width = max(len(name) for name, _ in backbone_rows + head_rows)
    print(f"\n{'case':<{width}}  {'ms/step':>9}")
    for name, ms in backbone_rows + head_rows:
        print(f"{name:<{width}}  {ms:>9.2f}")
    (_, real), (_, every) = backbone_rows
    (_, packed), (_, padded), (_, transformer) = head_rows
    print(f"\nspeed-up real-frames-only vs every frame: {every / real:.2f}x")
    print(f"packed GRU vs padded GRU: {padded / packed:.2f}x (>1 = packed faster)")
    print(f"packed GRU vs Transformer: {transformer / packed:.2f}x (>1 = GRU faster)")


if __name__ == "__main__":
    main()
