"""The implementations `effnet bench` compares, by name, with a line of help each (no torch)."""

INFERENCE_IMPLS = ("timm", "torchvision", "effnet", "effnet-fast", "effnet-ts", "onnxruntime")
OPTIONAL_INFERENCE_IMPLS = ("effnet-compile", "timm-cl")
TRAINING_IMPLS = ("timm", "torchvision", "effnet", "effnet-memeff", "effnet-memeff-ckpt")
IMPL_HELP = {
    "timm": "timm efficientnet_<name>, eager, as created",
    "timm-cl": "timm, eager, channels_last",
    "torchvision": "torchvision efficientnet_<name>, eager",
    "effnet": "effnet, eager, as created",
    "effnet-fast": "effnet.optimize_for_inference (BN folded, channels_last, in-place)",
    "effnet-ts": "optimize_for_inference(torchscript=True): frozen TorchScript trace",
    "effnet-compile": "optimize_for_inference(compile=True): torch.compile",
    "onnxruntime": "effnet exported to ONNX, run by onnxruntime (CPU)",
    "effnet-memeff": "effnet with set_memory_efficient(): recompute BN/act/SE in backward",
    "effnet-memeff-ckpt": "memory-efficient plus per-stage activation checkpointing",
}
