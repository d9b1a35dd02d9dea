"""What the machine can do: the default precision for it, CUDA math settings, and a one-line description.

The precision default is decided here, from the hardware the run is on, never from a measurement on some other
machine: bf16 autocast where the CPU or GPU computes bf16 natively, fp16 autocast on GPUs without bf16, fp32
otherwise. An explicit ``--trainer.precision`` always wins (the CLI asks only when none was given).
"""

from __future__ import annotations

import platform
from pathlib import Path

import torch

# CPU flags (Linux /proc/cpuinfo names) of native bf16 arithmetic: AMX tiles, or AVX-512 bf16 dot products.
NATIVE_BF16_FLAGS: tuple[str, ...] = ("amx_bf16", "avx512_bf16")


def cpu_flags() -> set[str]:
    """The CPU's feature flags (empty where /proc/cpuinfo does not exist, e.g. macOS and Windows)."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    line = next((line for line in info.splitlines() if line.startswith(("flags", "Features"))), "")
    return set(line.split(":", 1)[-1].split())


def cpu_name() -> str:
    try:
        info = Path("/proc/cpuinfo").read_text()
        return next(line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def uses_cuda(accelerator: str | None) -> bool:
    """Whether a Trainer with this ``accelerator`` setting runs on CUDA GPUs."""
    name = str(accelerator or "auto").lower()
    return name in ("auto", "gpu", "cuda") and torch.cuda.is_available()


def default_precision(accelerator: str | None = "auto", flags: set[str] | None = None) -> tuple[str, str]:
    """The fastest safe Trainer precision on this machine for ``accelerator``, and why.

    ``flags`` are the CPU flags (read from the machine when None).
    """
    if uses_cuda(accelerator):
        name = torch.cuda.get_device_name(0)
        if torch.cuda.is_bf16_supported(including_emulation=False):
            return "bf16-mixed", f"{name} computes bf16 natively"
        return "16-mixed", f"{name} has no native bf16: fp16 autocast with gradient scaling"
    native = [flag for flag in NATIVE_BF16_FLAGS if flag in (cpu_flags() if flags is None else flags)]
    if native:
        return "bf16-mixed", f"the CPU computes bf16 natively ({', '.join(native)})"
    return "32-true", f"the CPU has no native bf16 ({' / '.join(NATIVE_BF16_FLAGS)}), where bf16 is emulated and slower"


def configure_cuda() -> list[str]:
    """Math settings for CUDA runs; returns what was set, for the log.

    TF32 matmuls (``set_float32_matmul_precision("high")``) on GPUs with tensor cores for it (compute capability 8+),
    unless the user chose a matmul precision already. cudnn.benchmark stays as it is: the backbone sees a
    different number of real frames in nearly every batch, and each new shape would be autotuned again.
    """
    if not torch.cuda.is_available():
        return []
    done = []
    major, _ = torch.cuda.get_device_capability(0)
    if major >= 8 and torch.get_float32_matmul_precision() == "highest":
        torch.set_float32_matmul_precision("high")
        done.append("float32 matmul precision 'high' (TF32)")
    return done


def describe_machine() -> str:
    """One line naming the hardware, for benchmark output: CPU model, bf16 flags, threads, GPU."""
    flags = [flag for flag in (*NATIVE_BF16_FLAGS, "avx512f") if flag in cpu_flags()]
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (
        f"{cpu_name()}, flags: {' '.join(flags) or 'none of amx_bf16/avx512_bf16/avx512f'}, "
        f"{torch.get_num_threads()} torch threads, {gpu}, torch {torch.__version__}"
    )
