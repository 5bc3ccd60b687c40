"""INT8 weight-only quantization that reaches the MoE experts too.

In transformers 5 the experts of Qwen3-MoE / Qwen3-Omni are fused 3-D parameters
(`experts.gate_up_proj`, `experts.down_proj`), not `nn.Linear`, so Linear-only
quantizers (bitsandbytes, quanto, torchao's default) leave ~95% of a 30B-A3B model in
bf16. torchao's FQN config quantizes them by name; the quantized tensors only support
the eager experts implementation.
"""

from __future__ import annotations

from typing import Any

EXPERT_WEIGHTS = r"re:.*experts\.(gate_up_proj|down_proj)$"


def int8_load_kwargs() -> dict[str, Any]:
    """Extra `from_pretrained` kwargs for int8 (experts and Linear layers)."""
    from torchao.quantization import FqnToConfig, Int8WeightOnlyConfig
    from transformers import TorchAoConfig

    config = FqnToConfig(
        {EXPERT_WEIGHTS: Int8WeightOnlyConfig(), "_default": Int8WeightOnlyConfig()}
    )
    return {
        "quantization_config": TorchAoConfig(quant_type=config),
        "experts_implementation": "eager",
    }


def tensor_bytes(tensor: Any) -> int:
    """Storage of a tensor, looking inside tensor subclasses (torchao's Int8Tensor)."""
    flatten = getattr(tensor, "__tensor_flatten__", None)
    if flatten is None:
        return int(tensor.nbytes)
    names, _ = flatten()
    return sum(tensor_bytes(getattr(tensor, name)) for name in names)


def weight_bytes(model: Any) -> int:
    """Bytes held by a model's parameters and buffers, quantized or not."""
    return sum(tensor_bytes(p) for p in model.parameters()) + sum(
        tensor_bytes(b) for b in model.buffers()
    )
