"""The machine a benchmark ran on, printed before its figures: a figure without its machine is not
comparable with another (the CPUs this project meets change from day to day)."""

from __future__ import annotations

import importlib.metadata
import os

ISA_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16")
ENGINES = ("onnxruntime", "openvino")


def cpu_model() -> str:
    """The model name with its family and model numbers (a hypervisor may show only "Intel Xeon")."""
    fields = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                key, _, value = line.partition(":")
                fields.setdefault(key.strip(), value.strip())
                if not line.strip():
                    break  # the first processor is enough
    except OSError:
        return "unknown CPU"
    return f"{fields.get('model name', 'unknown CPU')} (family {fields.get('cpu family', '?')} model {fields.get('model', '?')})"


def describe_machine() -> str:
    """One line: CPU model and the ISA flags that matter, forced kernels, torch and engine versions, threads, GPU."""
    import torch

    from cyclegan.devices import cpu_flags

    flags = cpu_flags()
    isa = " ".join(f"{flag}{'+' if flag in flags else '-'}" for flag in ISA_FLAGS)
    forced = [f"{name}={os.environ[name]}" for name in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA") if name in os.environ]
    engines = []
    for name in ENGINES:
        try:
            engines.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            engines.append(f"{name} absent")
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"machine: {cpu_model()}, {os.cpu_count()} cores; {isa}; kernels {torch.backends.cpu.get_cpu_capability()}"
            f"{' (' + ', '.join(forced) + ')' if forced else ''}; torch {torch.__version__}, {torch.get_num_threads()} "
            f"threads; {', '.join(engines)}; {gpu}")


if __name__ == "__main__":
    print(describe_machine())
