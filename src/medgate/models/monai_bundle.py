"""A MONAI bundle's own inference config, run with MONAI's machinery (``monai.bundle``).

The bundle's ``configs/inference.json`` (or ``.yaml``) is parsed by ``ConfigParser`` exactly as
``monai.bundle run`` parses it; its ``preprocessing``, ``inferer``, ``network_def`` (or
``network``) and ``postprocessing`` are taken as the bundle wrote them, with two changes that
MONAI Deploy's bundle inference operator makes too:

* the study is in memory, so ``LoadImage(d)`` is left out of preprocessing and the image comes
  from ``models.series_reader`` (the MetaTensor ``PydicomReader`` would give for those files);
* results go back to the PACS through medgate, so ``SaveImage(d)`` is left out of
  postprocessing.

The run is split in three so the serving layer batches the forward pass across studies:
``preprocess`` (one study -> one tensor), ``forward`` (a batch through the config's inferer and
network) and ``postprocess`` (one output, with the preprocessed image's trace so that
``Invertd`` maps it back onto the source grid). Weights: ``models/model.ts`` (TorchScript) or
``models/model.pt`` (a state dict of ``network_def``), or ``models/model.onnx`` through ONNX
Runtime when ``medgate export-bundle --onnx`` wrote one (parity checked there).

Parsing executes code from the bundle: callers run it only for an approved bundle
(``models.approval``); ``MonaiBundleRunner`` checks the hash again before it parses.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset

from medgate.models.approval import bundle_hash, inference_config
from medgate.models.bundle import BundleError
from medgate.models.images import ImageGeometry
from medgate.models.series_reader import series_metatensor

log = logging.getLogger(__name__)

LOADERS = ("LoadImage", "LoadImaged")
SAVERS = ("SaveImage", "SaveImaged")
PRED_KEY = "pred"  # where MONAI's evaluators put the network output for postprocessing


def _config_id(parser: Any, *names: str) -> str | None:
    for name in names:
        if parser.get(name) is not None:
            return name
    return None


def _without(compose: Any, drop: tuple[str, ...]) -> tuple[Any, list[Any]]:
    """A copy of a MONAI ``Compose`` without the transforms named in ``drop`` (and those)."""
    from monai.transforms import Compose

    kept = [t for t in compose.transforms if type(t).__name__ not in drop]
    dropped = [t for t in compose.transforms if type(t).__name__ in drop]
    return Compose(kept), dropped


def _first_key(transforms: Sequence[Any], default: str) -> str:
    for transform in transforms:
        keys = getattr(transform, "keys", None)
        if keys:
            return str(keys[0])
    return default


class OnnxNetwork:
    """An ONNX Runtime session called like a torch module (tensor in, tensor out) so that the
    config's inferer (sliding window included) drives it unchanged."""

    def __init__(self, path: Path, device: str) -> None:
        from medgate.models.backends import OnnxBackend

        self.backend = OnnxBackend(path, "cuda" if device.startswith("cuda") else "cpu")

    def __call__(self, batch: Any) -> Any:
        import torch

        array = batch.detach().cpu().numpy() if isinstance(batch, torch.Tensor) else batch
        output = next(iter(self.backend.run(np.asarray(array, np.float32)).values()))
        return torch.from_numpy(output).to(batch.device)

    def eval(self) -> OnnxNetwork:
        return self


class MonaiBundleRunner:
    """One bundle's inference config, parsed and ready: preprocess / forward / postprocess."""

    def __init__(
        self,
        path: Path,
        device: str = "cpu",
        expected_hash: str | None = None,
        prefer_onnx: bool = True,
    ) -> None:
        import torch
        from monai.bundle import ConfigParser

        config = inference_config(path)
        if config is None:
            raise BundleError(f"{path.name}: no configs/inference.json or .yaml")
        if expected_hash is not None and bundle_hash(path) != expected_hash:
            raise BundleError(f"{path.name}: files changed since approval; not running its config")
        self.path = path
        self.device = torch.device("cuda" if device.startswith("cuda") else "cpu")
        parser = ConfigParser()
        parser.read_config(str(config))
        metadata = path / "configs" / "metadata.json"
        if metadata.is_file():
            parser.read_meta(str(metadata))
        parser["bundle_root"] = str(path)
        parser["device"] = f"$torch.device('{self.device.type}')"
        self.parser = parser
        missing = [key for key in ("preprocessing", "inferer") if parser.get(key) is None]
        if missing:
            raise BundleError(f"{path.name}: the inference config has no {', '.join(missing)}")
        try:
            preprocessing = parser.get_parsed_content("preprocessing")
            self.inferer = parser.get_parsed_content("inferer")
            postprocessing_id = _config_id(parser, "postprocessing")
            postprocessing = (
                parser.get_parsed_content(postprocessing_id) if postprocessing_id else None
            )
        except Exception as exc:  # a config may raise anything while it is evaluated
            raise BundleError(f"{path.name}: inference config does not parse: {exc}") from exc
        self.preprocessing, loaders = _without(preprocessing, LOADERS)
        self.loaders = loaders  # kept for runs from files (``medgate models check``)
        self.image_key = _first_key(loaders, "image")
        if postprocessing is not None:
            self.postprocessing, _ = _without(postprocessing, SAVERS)
        else:
            self.postprocessing = None
        self.pred_key = PRED_KEY
        self.network = self._network(parser, prefer_onnx)
        self.backend = "onnx" if isinstance(self.network, OnnxNetwork) else "torch"

    def _network(self, parser: Any, prefer_onnx: bool) -> Callable[[Any], Any]:
        import torch

        models = self.path / "models"
        if prefer_onnx and (models / "model.onnx").is_file():
            return OnnxNetwork(models / "model.onnx", self.device.type)
        if (models / "model.ts").is_file():
            return torch.jit.load(str(models / "model.ts"), map_location=self.device).eval()
        network_id = _config_id(parser, "network_def", "network")
        if network_id is None or not (models / "model.pt").is_file():
            raise BundleError(f"{self.path.name}: needs models/model.pt and a network_def")
        network = parser.get_parsed_content(network_id)
        state = torch.load(str(models / "model.pt"), map_location=self.device, weights_only=True)
        if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
            state = state["model"]  # the layout CheckpointSaver writes
        network.load_state_dict(state)
        return network.to(self.device).eval()  # type: ignore[no-any-return,unused-ignore]

    # -- the three steps ----------------------------------------------------------------------
    def preprocess_image(self, image: Any) -> Any:
        """The config's preprocessing (less its loader) on an image MetaTensor."""
        return self.preprocessing({self.image_key: image})[self.image_key]

    def preprocess(self, datasets: Sequence[Dataset]) -> tuple[Any, ImageGeometry]:
        """One study's series through the config's preprocessing: (C, *spatial) MetaTensor."""
        image, geometry = series_metatensor(datasets)
        return self.preprocess_image(image), geometry

    def forward(self, batch: Any) -> Any:
        """The config's inferer with the network on a batch (N, C, *spatial)."""
        import torch

        tensor = torch.as_tensor(batch, dtype=torch.float32).to(self.device)
        with torch.inference_mode():
            output = self.inferer(tensor, self.network)
        if isinstance(output, dict):
            output = next(iter(output.values()))
        elif isinstance(output, (tuple, list)):
            output = output[0]
        return output.detach().cpu()

    def postprocess(self, image: Any, prediction: Any) -> np.ndarray:
        """The config's postprocessing of one study's output (Invertd needs ``image``'s trace)."""
        import torch

        data = {self.image_key: image, self.pred_key: torch.as_tensor(prediction)}
        if self.postprocessing is not None:
            with torch.inference_mode():
                data = self.postprocessing(data)
        result = data[self.pred_key]
        if isinstance(result, torch.Tensor):
            return np.asarray(result.detach().cpu().numpy())
        return np.asarray(result)

    def load(self, source: str) -> Any:
        """The config's own ``LoadImage(d)`` on a file or folder: MONAI's reading of it."""
        data: Any = {self.image_key: source}
        for loader in self.loaders:
            data = loader(data)
        return data[self.image_key]

    def run_image(self, image: Any) -> np.ndarray:
        """All three steps for one image MetaTensor (what ``medgate models check`` compares)."""
        pre = self.preprocess_image(image)
        return self.postprocess(pre, self.forward(pre[None])[0])


__all__ = ["MonaiBundleRunner", "OnnxNetwork"]
