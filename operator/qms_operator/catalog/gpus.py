"""The GPUs a spec's `resources.gpu.acceleratorTypes` can name, with the memory each
reports. Pure data.

Memory is what the driver reports (NVML total memory, the `nvidia.com/gpu.memory` label
of NVIDIA's GPU Feature Discovery, in MiB), not the marketing size: an "80 GB" H100 SXM
reports 81,559 MiB, a "16 GB" T4 15,360 MiB. Sources: GFD's label rules
(github.com/NVIDIA/k8s-device-plugin, docs/gpu-feature-discovery: `nvidia.com/gpu.product`
is the NVML name with spaces as hyphens, `nvidia.com/gpu.memory` MiB) and `nvidia-smi`
outputs of each part. The names an accelerator label may hold: GKE's accelerator names
(`nvidia-tesla-t4`, `nvidia-h100-80gb`, `nvidia-h200-141gb`: cloud.google.com's
AcceleratorType list), short names as QMS's examples and test nodes use (`nvidia-h200`),
and GFD's product names (`Tesla-T4`, `NVIDIA-H100-80GB-HBM3`), matched without case.
"""

from __future__ import annotations

from dataclasses import dataclass

MIB = 1024**2


@dataclass(frozen=True)
class GpuType:
    name: str
    memory_mib: int  # as the driver reports it (nvidia.com/gpu.memory)
    labels: tuple[str, ...]  # accelerator label values that mean this GPU

    @property
    def memory_bytes(self) -> int:
        return self.memory_mib * MIB


GPUS = [
    GpuType("T4", 15_360, ("nvidia-tesla-t4", "nvidia-t4", "Tesla-T4")),
    GpuType("L4", 23_034, ("nvidia-l4", "NVIDIA-L4")),
    GpuType("A10G", 23_028, ("nvidia-a10g", "NVIDIA-A10G")),
    GpuType("L40S", 46_068, ("nvidia-l40s", "NVIDIA-L40S")),
    GpuType(
        "A100 40GB",
        40_960,
        ("nvidia-tesla-a100", "nvidia-a100-40gb", "NVIDIA-A100-SXM4-40GB", "A100-SXM4-40GB"),
    ),
    GpuType(
        "A100 80GB",
        81_920,
        ("nvidia-a100-80gb", "NVIDIA-A100-SXM4-80GB", "NVIDIA-A100-80GB-PCIe"),
    ),
    GpuType(
        "H100 80GB",
        81_559,
        ("nvidia-h100-80gb", "nvidia-h100", "nvidia-h100-mega-80gb", "NVIDIA-H100-80GB-HBM3"),
    ),
    GpuType("H100 NVL", 95_830, ("nvidia-h100-nvl", "NVIDIA-H100-NVL")),
    GpuType("H200", 143_771, ("nvidia-h200-141gb", "nvidia-h200", "NVIDIA-H200")),
    GpuType("B200", 183_359, ("nvidia-b200", "NVIDIA-B200")),
]
_BY_LABEL = {label.lower(): gpu for gpu in GPUS for label in gpu.labels}


def find_gpu(label_value: str) -> GpuType | None:
    """The GPU an accelerator label value names (case-insensitive), or None."""
    return _BY_LABEL.get(label_value.strip().lower())
