"""What training the backbone costs on this machine: frames/s of a frozen forward (the feature cache's work) next to
forward+backward with the last block trainable (``freeze: last_n``) and with the whole backbone (``finetune``).

    python benchmarks/bench_finetune.py                       # efficientnet_lite0, 112 and 224 px, fp32 and bf16
    python benchmarks/bench_finetune.py --device cuda --sizes 224

The last lines turn the rates into the time one cross-validation of UT-Interaction would take per epoch of
end-to-end training (5 folds x 96 training clips x 16 frames), against one extraction for the feature cache.
"""

from __future__ import annotations

import argparse
import platform
import time

import torch

from video_cnn_rnn.models import VideoClassifier


def cpu_description() -> str:
    flags = ""
    try:
        with open("/proc/cpuinfo") as file:
            info = file.read()
        name = next((line.split(":", 1)[1].strip() for line in info.splitlines() if "model name" in line), "")
        flags = " ".join(flag for flag in ("avx512f", "avx512_bf16", "amx_bf16") if f" {flag}" in info)
    except OSError:
        name = platform.processor()
    return f"{name or 'unknown CPU'}, {torch.get_num_threads()} threads, flags: {flags or 'none of avx512f/avx512_bf16/amx_bf16'}"


def frames_per_second(model: VideoClassifier, size: int, batch: int, dtype: torch.dtype | None, train: bool) -> float:
    device = model.pixel_mean.device
    frames = torch.randint(0, 256, (1, batch, 3, size, size), dtype=torch.uint8, device=device)
    mask = torch.ones(1, batch, dtype=torch.bool, device=device)
    model.train(train)

    def step() -> None:
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            if train:
                model(frames, mask).float().sum().backward()
            else:
                with torch.inference_mode():
                    model(frames, mask)
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    step()  # warm-up
    start, runs = time.perf_counter(), 0
    while runs < 2 or time.perf_counter() - start < 3.0:
        step()
        runs += 1
    return batch * runs / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--sizes", type=int, nargs="+", default=[112, 224])
    parser.add_argument("--batch", type=int, default=32, help="frames per step")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    print(f"device: {device}; {cpu_description() if device.type == 'cpu' else torch.cuda.get_device_name(device)}")
    low = torch.bfloat16
    print(
        f"{'px':>4} {'precision':>9} {'frozen fwd':>11} {'last_n=1 fwd+bwd':>17} {'finetune fwd+bwd':>17}   (frames/s)"
    )
    rates = {}
    for size in args.sizes:
        for dtype in (None, low):
            row = []
            for freeze, train in (("frozen", False), ("last_n", True), ("finetune", True)):
                model = VideoClassifier(backbone=args.backbone, num_classes=6, freeze=freeze, trainable_blocks=1).to(
                    device
                )
                row.append(frames_per_second(model, size, args.batch, dtype, train))
            rates[size, dtype] = row
            name = "fp32" if dtype is None else "bf16"
            print(f"{size:>4} {name:>9} {row[0]:>11.1f} {row[1]:>17.1f} {row[2]:>17.1f}   "
                  f"(fwd+bwd {row[0] / row[1]:.1f}x / {row[0] / row[2]:.1f}x slower)")  # fmt: skip
    frames = 5 * 96 * 16  # UT-Interaction: 5 folds x 96 training clips x 16 frames
    for (size, dtype), (frozen, last_n, finetune) in rates.items():
        name = "fp32" if dtype is None else "bf16"
        print(
            f"UT-Interaction 5-fold CV at {size} px {name}: one extraction {frames / frozen / 60:.1f} min; "
            f"each end-to-end epoch {frames / last_n / 60:.1f} min (last_n) / {frames / finetune / 60:.1f} min (finetune)"
        )


if __name__ == "__main__":
    main()
