"""Image AI only, runnable without Ray: bundles (MONAI layout plus medgate's keys, or a MONAI
bundle's own inference config once approved), the registry, predictors, backends (ONNX Runtime,
TorchScript), transforms and the findings contract.
"""
