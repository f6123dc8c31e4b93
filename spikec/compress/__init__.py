"""Attention-guided pruning and quantization of SNNs (Kundu et al.: Spike-Thrift, WACV 2021; DNR,
ASP-DAC 2021), one verb per transform in the style of torchao::

    from spikec.compress import CompressConfig, PruneConfig, QuantConfig, compress_
    report = compress_(snn, CompressConfig(prune=PruneConfig(density=0.1), quant=QuantConfig(bits=4)), train)

Modules: ``config`` (frozen dataclass configs), ``prune`` (magnitude masks), ``dnr`` (dynamic
network rewiring), ``quantize`` (k-bit / binary / ternary with STE), ``attention`` (attention
maps and transfer loss), ``finetune`` (the training loop), ``masks`` (masks kept in forward and
in saved weights), ``metrics`` (spikes, synaptic operations, energy), ``size`` (bits with index
overhead), ``checkpoint`` (compressed checkpoints), ``api`` (the whole recipe).
"""
from spikec.compress.api import CompressReport, compress_, compress_via_ann
from spikec.compress.config import (
    AttentionConfig, CompressConfig, DNRConfig, FinetuneConfig, LayerSelection, PruneConfig, QuantConfig,
)
from spikec.compress.prune import prune_
from spikec.compress.quantize import freeze_, prepare_qat_, quantize_

__all__ = [
    "AttentionConfig", "CompressConfig", "CompressReport", "DNRConfig", "FinetuneConfig", "LayerSelection",
    "PruneConfig", "QuantConfig", "compress_", "compress_via_ann", "freeze_", "prepare_qat_", "prune_", "quantize_",
]
