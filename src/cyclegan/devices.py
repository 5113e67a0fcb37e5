"""Where networks run: the one place that turns ``--device auto|cpu|cuda`` into a torch device."""

from __future__ import annotations

import functools
import os

import torch


def pick_device(name: str | torch.device | None = "auto") -> torch.device:
    """``auto`` (or None) is CUDA when torch sees it, else CPU; asking for missing CUDA is an error."""
    if name is None or name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"unknown device {name!r}; valid: auto, cpu, cuda, cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for, but torch sees no CUDA device; use --device cpu or auto")
    return device


# The element-wise maths that ATen may hand to MKL's vector library (VML) on CPU. Which ones it does
# varies between torch versions, so the list is generous: a 1-element call of one it does not costs nothing.
VML_OPS = ("acos", "asin", "atan", "cos", "cosh", "erf", "erfc", "erfinv", "exp", "expm1", "log", "log10",
           "log1p", "log2", "sin", "sinh", "sqrt", "rsqrt", "tan", "tanh", "sigmoid", "reciprocal")


@functools.cache
def settle_cpu_maths() -> None:
    """Call each VML-backed op once, on one element and so on one thread, before any run uses them.

    MKL picks each VML function's kernel on its first call. When that first call comes from several
    intra-op threads at once, one thread can compute its whole chunk (half the image, on two threads)
    with a low-accuracy kernel (pytorch/pytorch#188792). That made the first iteration of a fresh
    process differ now and then, so a resumed run could not end bit for bit where an uninterrupted
    one ends. Once resolved, later calls use the accurate kernel.
    """
    for dtype in (torch.float32, torch.float64):
        one = torch.full((1,), 0.5, dtype=dtype)
        for name in VML_OPS:
            getattr(torch, name)(one)


OFFICIAL_DATA_WORKERS = 4  # the official --num_threads default


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity, as PyTorch's DataLoader counts them)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def data_workers(requested: int) -> int:
    """Data loading processes for ``--num_threads``: -1 (auto) is the official 4, but no more than the
    cores at hand, since each worker beyond them only competes with training for a core."""
    return min(OFFICIAL_DATA_WORKERS, usable_cores()) if requested < 0 else requested


def describe_data_workers(requested: int) -> str:
    workers = data_workers(requested)
    plural = "es" if workers != 1 else ""
    if requested >= 0:
        return f"data loading: {workers} worker process{plural} (--num_threads {requested})"
    return (f"data loading: {workers} worker process{plural} (--num_threads auto: the official "
            f"{OFFICIAL_DATA_WORKERS}, capped at the CPU cores this process may use: {usable_cores()})")


AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def cpu_flags() -> set[str]:
    """The CPU feature flags Linux reports (empty elsewhere)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def native_bf16(device: torch.device) -> tuple[bool, str]:
    """Whether ``device`` computes bf16 natively (else autocast emulates it, slower than fp32), and why."""
    if device.type == "cuda":
        native = torch.cuda.is_bf16_supported()
        return native, f"{torch.cuda.get_device_name(device)} {'supports' if native else 'lacks'} bf16"
    forced = os.environ.get("ATEN_CPU_CAPABILITY", "").lower()
    if forced in ("default", "avx2"):
        return False, f"ATEN_CPU_CAPABILITY={forced} forces kernels without bf16"
    found = sorted({"avx512_bf16", "amx_bf16"} & cpu_flags())
    return (True, f"this CPU has {' and '.join(found)}") if found else (False, "this CPU has no avx512_bf16 or amx_bf16")


def fast_bf16(device: torch.device) -> tuple[bool, str]:
    """Whether bf16 trains faster than fp32 on ``device``, and why: natively on CUDA; on a CPU only with
    AMX. With avx512_bf16 alone the bf16 convolutions measured slower than fp32 (README: Performance)."""
    native, why = native_bf16(device)
    if device.type == "cuda" or not native or "amx_bf16" in cpu_flags():
        return native, why
    return False, f"{why} but no amx_bf16, and without AMX its bf16 convolutions are slower than fp32"


def resolve_precision(device: torch.device, choice: str) -> tuple[str, str]:
    """(fp32 | bf16 | fp16, why): ``auto`` is bf16 where ``device`` trains faster in it, fp32 elsewhere."""
    if choice != "auto":
        return choice, f"--precision {choice}"
    fast, why = fast_bf16(device)
    return ("bf16" if fast else "fp32"), f"--precision auto: {why}"


def check_precision(device: torch.device, precision: str, *, allow_emulated: bool = False) -> None:
    """Refuse a precision that this device would only emulate (slower than fp32), unless allowed."""
    if precision == "fp16" and device.type != "cuda":
        raise ValueError("--precision fp16 needs a CUDA device (its gradient scaler and fast kernels are CUDA's); "
                         "use fp32 or bf16 on a CPU")
    if precision == "bf16" and device.type == "cpu" and not allow_emulated:
        native, why = native_bf16(device)
        if not native:
            raise ValueError(f"--precision bf16: no native bf16 ({why}), so autocast would emulate it and train "
                             f"slower than fp32 (README: Performance); use --precision fp32 or auto, or "
                             f"--allow_emulated_precision to run it anyway")


def autocast(device: torch.device, precision: str):
    """An autocast context for ``precision`` (a no-op context for fp32)."""
    dtype = AUTOCAST_DTYPES.get(precision)
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)


def memory_format(device: torch.device, choice: str) -> torch.memory_format:
    if choice == "channels_last" or (choice == "auto" and device.type == "cuda"):
        return torch.channels_last
    return torch.contiguous_format
