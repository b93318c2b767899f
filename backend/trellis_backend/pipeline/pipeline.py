"""TRELLIS generation pipeline: condition -> sparse structure -> SLAT -> decoders -> files.

One class serves the released TRELLIS folders (image-large, text-base/large/xlarge) and
the project's embedded model: both are a folder with ``pipeline.json`` +
``ckpts/<name>.json|.safetensors`` (see `TrellisPipeline.from_pretrained`).

Stages (as the reference's ``run``):

1. condition: image -> preprocess -> encoder (``cond``, ``neg_cond`` = zeros), or
   prompt -> text encoder (``neg_cond`` = encoding of "");
2. sparse structure: noise ``[1, 8, 16, 16, 16]`` -> flow sampler -> SS decoder ->
   ``coords = argwhere(logits > 0)`` (64^3 grid);
3. SLAT: noise ``[N, 8]`` on those coords -> flow sampler -> ``slat * std + mean``;
4. decoders: mesh (FlexiCubes), Gaussians, radiance field;
5. files: GLB, PLY, SLAT sidecar (`export`).

Seeds: noise is drawn on the CPU from ``torch.Generator().manual_seed(seed)`` (stage 1
first, then stage 2, the order and values of the reference's ``torch.manual_seed``), so
a seed gives the same noise on every device and identical results on the same device.
"""
from __future__ import annotations

import contextlib
import gc
import json
import os
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from ..errors import (BadInputError, Cancelled, CheckpointMismatchError, MissingFileError, OutOfMemoryError,
                      TrellisError)
from .options import FORMAT_ALIASES, check_name as _check_name, normalize_formats  # noqa: F401
from .limits import check_voxel_count
from .samplers import build_sampler

PIPELINE_VERSION = "trellis-blender-pipeline/1"

ProgressFn = Callable[[str, int, int, str], None]

EAGER_MODELS = ("sparse_structure_flow_model", "sparse_structure_decoder", "slat_flow_model")
DECODERS = {"mesh": "slat_decoder_mesh", "gaussians": "slat_decoder_gs", "radiance_field": "slat_decoder_rf"}


class EmptyStructureError(TrellisError):
    hint = "The model produced no occupied voxels for this input; try another seed or a higher stage-1 CFG."


# ------------------------------------------------------------------ device / dtype
def choose_device(device: Union[str, torch.device, None] = "auto") -> torch.device:
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise BadInputError("CUDA was requested but no CUDA GPU is available to PyTorch",
                            hint="Use --device cpu (slower), or install a CUDA build of PyTorch.")
    return dev


def choose_dtype(device: torch.device, dtype: Union[str, torch.dtype, None] = None) -> torch.dtype:
    if isinstance(dtype, str):
        names = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
                 "float16": torch.float16, "fp16": torch.float16, "auto": None}
        if dtype not in names:
            raise BadInputError(f"unknown dtype {dtype!r}", hint="Use float32, bfloat16 or float16.")
        dtype = names[dtype]
    if dtype is not None:
        return dtype
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


# ------------------------------------------------------------------ folder reading
def read_pipeline_json(folder: Path) -> dict:
    if not folder.exists():
        raise MissingFileError(f"model folder not found: {folder}",
                               hint="Pass the folder that contains pipeline.json (e.g. the embedded model's folder "
                                    "or a downloaded TRELLIS release).")
    if not folder.is_dir():
        raise MissingFileError(f"model path is not a folder: {folder}",
                               hint="Pass the folder that contains pipeline.json, not a file inside it.")
    cfg_file = folder / "pipeline.json"
    if not cfg_file.is_file():
        raise MissingFileError(f"no pipeline.json in model folder {folder}",
                               hint="A TRELLIS model folder holds pipeline.json and ckpts/; check the path.")
    try:
        config = json.loads(cfg_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointMismatchError(f"{cfg_file} is not valid JSON: {e}",
                                      hint="Re-download the model folder; pipeline.json is damaged.") from e
    args = config.get("args") if isinstance(config, dict) else None
    if not isinstance(args, dict):
        raise CheckpointMismatchError(f"{cfg_file} has no 'args' object")
    for key in ("models", "sparse_structure_sampler", "slat_sampler", "slat_normalization"):
        if key not in args:
            raise CheckpointMismatchError(f"{cfg_file} lacks args.{key}",
                                          hint="Use the pipeline.json that came with the model.")
    for key in EAGER_MODELS:
        if key not in args["models"]:
            raise CheckpointMismatchError(f"{cfg_file} lacks args.models.{key}")
    norm = args["slat_normalization"]
    if not (isinstance(norm, dict) and len(norm.get("mean", [])) == len(norm.get("std", [])) > 0):
        raise CheckpointMismatchError(f"{cfg_file}: slat_normalization needs equal-length 'mean' and 'std'")
    return config


def _is_repo_ref(ref: str) -> bool:
    parts = ref.replace("\\", "/").split("/")
    return len(parts) >= 4 and parts[2] == "ckpts"


def resolve_model_ref(folder: Path, ref: str, models_root: Optional[Path] = None,
                      allow_network: bool = False) -> Path:
    """Path (without extension) of a model named in pipeline.json.

    ``ckpts/<name>`` is relative to the folder. ``<org>/<repo>/ckpts/<name>`` (text releases
    pointing at image-large decoders) is looked for under ``models_root`` (default: env
    ``TRELLIS_MODELS_ROOT``, else the folder two levels up, as in ``<root>/<org>/<repo>``),
    also as ``<root>/<repo>/ckpts/<name>``; from the Hugging Face hub only with
    ``allow_network`` and huggingface_hub installed.
    """
    def complete(p: Path) -> bool:
        return Path(f"{p}.json").is_file() and Path(f"{p}.safetensors").is_file()

    tried: List[Path] = []
    local = folder / ref
    if complete(local):
        return local
    tried.append(local)
    if _is_repo_ref(ref):
        org, repo, rest = ref.split("/", 2)
        roots = []
        if models_root is not None:
            roots.append(Path(models_root))
        if os.environ.get("TRELLIS_MODELS_ROOT"):
            roots.append(Path(os.environ["TRELLIS_MODELS_ROOT"]))
        roots += [folder.parent.parent, folder.parent]
        for root in dict.fromkeys(roots):
            for cand in (root / ref, root / repo / rest):
                if cand not in tried:
                    if complete(cand):
                        return cand
                    tried.append(cand)
        if allow_network:
            try:
                from huggingface_hub import hf_hub_download
            except Exception:
                hf_hub_download = None
            if hf_hub_download is not None:
                try:
                    js = hf_hub_download(f"{org}/{repo}", f"{rest}.json")
                    hf_hub_download(f"{org}/{repo}", f"{rest}.safetensors")
                    return Path(js[: -len(".json")])
                except Exception as e:
                    raise MissingFileError(f"could not download {org}/{repo}/{rest} from the hub: {e}",
                                           hint=f"Download {org}/{repo} by hand into <models root>/{org}/{repo}.") from e
    missing = []
    for p in tried:
        for ext in (".json", ".safetensors"):
            if not Path(f"{p}{ext}").is_file():
                missing.append(f"{p}{ext}")
    hint = "Check that the model folder is complete (pipeline.json and every ckpts/<name>.json + .safetensors)."
    if _is_repo_ref(ref):
        org, repo = ref.split("/")[:2]
        hint = (f"This pipeline uses models of {org}/{repo}: download that folder into <models root>/{org}/{repo} "
                f"and pass --models-root <models root> (or set TRELLIS_MODELS_ROOT).")
    raise MissingFileError(f"model '{ref}' not found; missing: " + ", ".join(missing[:6])
                           + (" ..." if len(missing) > 6 else ""), hint=hint)


def _load_model(path: Path, device: torch.device, dtype: torch.dtype):
    from ..models import load_model, read_config

    cfg = read_config(path)
    overrides = {}
    if "use_fp16" in cfg["args"] and dtype != torch.float16:
        overrides["use_fp16"] = False  # float32 weights; bf16 runs through autocast
    return load_model(path, device=device, **overrides)


def _free_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _is_oom(exc: BaseException) -> bool:
    if isinstance(exc, MemoryError):
        return True
    oom = getattr(torch, "OutOfMemoryError", None) or getattr(torch.cuda, "OutOfMemoryError", None)
    if oom is not None and isinstance(exc, oom):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


# ------------------------------------------------------------------------ pipeline
class TrellisPipeline:
    """Loaded TRELLIS pipeline. Build with `from_pretrained`."""

    def __init__(self, folder: Path, config: dict, model_paths: Dict[str, Path], conditioner, device: torch.device,
                 dtype: torch.dtype, models_root: Optional[Path] = None, allow_network: bool = False):
        args = config["args"]
        self.folder = Path(folder)
        self.config = config
        self.name = config.get("name", "")
        self.model_paths = model_paths
        self.models: Dict[str, torch.nn.Module] = {}
        self.conditioner = conditioner
        self.device = device
        self.dtype = dtype
        self.models_root = models_root
        self.allow_network = allow_network
        self.sparse_structure_sampler = build_sampler(args["sparse_structure_sampler"])
        self.sparse_structure_sampler_params = dict(args["sparse_structure_sampler"].get("params", {}))
        self.slat_sampler = build_sampler(args["slat_sampler"])
        self.slat_sampler_params = dict(args["slat_sampler"].get("params", {}))
        self.slat_normalization = args["slat_normalization"]
        self.kind = "image" if args.get("image_cond_model") else "text"
        self.background_threshold: Optional[float] = None
        self.accel = None  # set by _enable_accel on CUDA

    # -------------------------------------------------------------- loading
    @classmethod
    def from_pretrained(cls, folder: Union[str, Path], models_root: Union[str, Path, None] = None,
                        device: Union[str, torch.device, None] = "auto", dtype: Union[str, torch.dtype, None] = None,
                        allow_network: bool = False) -> "TrellisPipeline":
        """Load a pipeline folder (official layout).

        Args:
            folder: folder with pipeline.json and ckpts/.
            models_root: where ``<org>/<repo>/ckpts/<name>`` references are looked up.
            device: 'auto' (CUDA when available, else CPU), 'cpu', 'cuda', 'cuda:1', ...
            dtype: None = bf16 on CUDA (fp16 where bf16 is unsupported), float32 on CPU.
            allow_network: allow downloads from the Hugging Face hub (models, CLIP).
        """
        folder = Path(folder).expanduser().resolve()
        from ..models.folder_check import check_model_folder

        check_model_folder(folder, models_root)  # names the damaged file/field before any work
        config = read_pipeline_json(folder)
        dev = choose_device(device)
        dt = choose_dtype(dev, dtype)
        root = Path(models_root).expanduser() if models_root else None
        paths = {}
        for key, ref in config["args"]["models"].items():
            if key in EAGER_MODELS or key in DECODERS.values():
                try:
                    paths[key] = resolve_model_ref(folder, ref, root, allow_network)
                except MissingFileError:
                    if key in EAGER_MODELS or key in ("slat_decoder_mesh", "slat_decoder_gs"):
                        raise
                    paths[key] = None  # optional decoder (radiance field): fail only when asked for
            else:
                paths[key] = None  # encoders etc.: resolved on first use
        from ..models.folder_check import check_checkpoint
        for path in paths.values():  # every checkpoint checked before the (slow) encoder loads
            if path is not None:
                check_checkpoint(path)
        from .conditioning import build_conditioner

        conditioner = build_conditioner(config["args"], folder, root, allow_network, device=dev,
                                        dtype=torch.float32 if dev.type == "cpu" else dt)
        pipe = cls(folder, config, paths, conditioner, dev, dt, root, allow_network)
        for key in EAGER_MODELS:
            pipe.get_model(key)
        for key in ("slat_decoder_mesh", "slat_decoder_gs"):
            if key in config["args"]["models"]:
                pipe.get_model(key)
        pipe._enable_accel()
        return pipe

    def _enable_accel(self) -> None:
        """CUDA fast path (`trellis_backend.accel`): on for CUDA unless TRELLIS_ACCEL=0; never fatal."""
        self.accel = None
        if self.device.type != "cuda":
            return
        try:
            from ..accel import maybe_enable
        except ImportError:
            return
        try:
            self.accel = maybe_enable(self)
        except Exception as e:  # the plain path still works
            import warnings

            warnings.warn(f"CUDA fast path disabled: {type(e).__name__}: {e}")
            self.accel = None

    def get_model(self, key: str) -> torch.nn.Module:
        """A model of pipeline.json ``args.models`` (loaded on first use)."""
        if key not in self.models:
            refs = self.config["args"]["models"]
            if key not in refs:
                raise MissingFileError(f"{self.folder / 'pipeline.json'} has no model '{key}'",
                                       hint="This model folder does not provide that output.")
            path = self.model_paths.get(key) or resolve_model_ref(self.folder, refs[key], self.models_root,
                                                                  self.allow_network)
            self.model_paths[key] = path
            self.models[key] = _load_model(path, self.device, self.dtype).eval()
        return self.models[key]

    def _autocast(self):
        # the fast path holds the torso in the target dtype itself and runs with autocast off
        if self.dtype == torch.float32 or getattr(self, "accel", None) is not None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    # ------------------------------------------------------------ condition
    def get_cond(self, prompt: Optional[str] = None, image=None, background_threshold: Optional[float] = None,
                 ) -> Tuple[dict, dict]:
        """({'cond', 'neg_cond'}, info) for a prompt, an image, or a list of images (multi-image)."""
        if self.kind == "text":
            if image is not None and prompt is None:
                raise BadInputError("this model is text-conditioned; it cannot take an image",
                                    hint="Give a prompt, or load an image-conditioned model folder.")
            if prompt is None or not str(prompt).strip():
                raise BadInputError("the prompt is empty", hint="Describe the object, e.g. 'a red wooden chair'.")
            return self.conditioner.get_cond([str(prompt).strip()]), {"prompt": str(prompt).strip()}
        if image is None:
            if prompt is not None:
                raise BadInputError("this model is image-conditioned; it cannot take a text prompt",
                                    hint="Give an image (RGBA with a transparent background), or load a "
                                         "text-conditioned model folder.")
            raise BadInputError("no image given", hint="Give an image path (RGBA PNG with a transparent background).")
        from .conditioning import preprocess_image

        images = list(image) if isinstance(image, (list, tuple)) else [image]
        if not images:
            raise BadInputError("empty image list")
        thr = background_threshold if background_threshold is not None else self.background_threshold
        pre = [preprocess_image(im, background_threshold=thr) for im in images]
        cond = self.conditioner.get_cond(pre)
        cond["neg_cond"] = cond["neg_cond"][:1]
        names = [str(Path(im).expanduser().resolve()) if isinstance(im, (str, Path)) else "<PIL image>"
                 for im in images]
        return cond, {"image": names[0] if len(names) == 1 else names, "preprocessed": pre}

    # --------------------------------------------------------------- stages
    def _sampler_params(self, base: dict, steps: Optional[int], cfg: Optional[float]) -> dict:
        params = dict(base)
        if steps is not None:
            if int(steps) < 1:
                raise BadInputError(f"steps must be at least 1, got {steps}")
            params["steps"] = int(steps)
        if cfg is not None:
            params["cfg_strength"] = float(cfg)
        return params

    @torch.no_grad()
    def sample_sparse_structure(self, cond: dict, generator: torch.Generator, params: dict,
                                progress: Optional[ProgressFn] = None, cancel=None, num_samples: int = 1,
                                multi_image: Optional[str] = None) -> torch.Tensor:
        """Occupied voxels ``[N, 4]`` int32 (batch, x, y, z) of the 64^3 grid."""
        flow = self.get_model("sparse_structure_flow_model")
        reso = flow.resolution
        noise = torch.randn(num_samples, flow.in_channels, reso, reso, reso, generator=generator).to(self.device)
        with self._autocast():
            z_s = self.sparse_structure_sampler.sample(
                flow, noise, cond["cond"].to(self.device), cond["neg_cond"].to(self.device), **params,
                progress=progress, cancel=cancel, stage="sparse_structure", multi_image=multi_image).samples
            if cancel is not None and cancel.is_set():
                raise Cancelled("cancelled after stage 1")
            decoder = self.get_model("sparse_structure_decoder")
            logits = decoder(z_s.to(self._model_dtype(decoder)))
        coords = torch.argwhere(logits > 0)[:, [0, 2, 3, 4]].int()
        del logits, z_s
        return coords

    @staticmethod
    def _model_dtype(model) -> torch.dtype:
        for p in model.parameters():
            return torch.float32 if p.dtype in (torch.float16, torch.bfloat16) else p.dtype
        return torch.float32

    @torch.no_grad()
    def sample_slat(self, cond: dict, coords: torch.Tensor, generator: torch.Generator, params: dict,
                    progress: Optional[ProgressFn] = None, cancel=None, multi_image: Optional[str] = None):
        """De-normalised structured latent on `coords` (a SparseTensor)."""
        from ..sparse import SparseTensor

        flow = self.get_model("slat_flow_model")
        coords = coords.to(self.device).int()
        batch = int(coords[:, 0].max().item()) + 1 if coords.shape[0] else 1
        noise = SparseTensor(torch.randn(coords.shape[0], flow.in_channels, generator=generator).to(self.device),
                             coords, shape=(batch, flow.in_channels))
        with self._autocast():
            slat = self.slat_sampler.sample(
                flow, noise, cond["cond"].to(self.device), cond["neg_cond"].to(self.device), **params,
                progress=progress, cancel=cancel, stage="slat", multi_image=multi_image).samples
        std = torch.tensor(self.slat_normalization["std"], dtype=torch.float32, device=self.device)[None]
        mean = torch.tensor(self.slat_normalization["mean"], dtype=torch.float32, device=self.device)[None]
        return slat.replace(slat.feats.float() * std + mean)

    @torch.no_grad()
    def decode_slat(self, slat, formats: Sequence[str] = ("mesh", "gaussians"),
                    progress: Optional[ProgressFn] = None) -> dict:
        out = {}
        todo = [f for f in formats if f in DECODERS]
        for i, fmt in enumerate(todo):
            if progress is not None:
                progress("decode", i, len(todo), f"decoding {fmt}")
            decoder = self.get_model(DECODERS[fmt])
            with self._autocast():
                out[fmt] = decoder(slat)
        if progress is not None and todo:
            progress("decode", len(todo), len(todo), "decoded")
        return out

    # ------------------------------------------------------------- generate
    def generate(self, prompt: Optional[str] = None, image=None, seed: int = 0, ss_steps: Optional[int] = None,
                 slat_steps: Optional[int] = None, ss_cfg: Optional[float] = None, slat_cfg: Optional[float] = None,
                 formats=("mesh", "gaussians"), output_dir=None, name: str = "asset",
                 progress: Optional[ProgressFn] = None, cancel=None, *, background_threshold: Optional[float] = None,
                 multi_image_mode: str = "stochastic", texture_size: int = 0, overwrite: bool = False) -> dict:
        """Generate one asset from a prompt or an image (path, PIL image, or a list for multi-image).

        Returns ``{"files": {"glb"|"ply"|"slat": path}, "meta": {...}, "outputs": {...}}``; files are
        written only when `output_dir` is given (the SLAT sidecar always, with them), all together,
        under `name` or the first free `name_2`, `name_3`, ... (`overwrite=True` replaces instead).
        """
        fmts = normalize_formats(formats)
        with self.inference_guard():
            return self._generate(prompt, image, int(seed), ss_steps, slat_steps, ss_cfg, slat_cfg, fmts,
                                  output_dir, name, progress, cancel, background_threshold, multi_image_mode,
                                  texture_size, overwrite)

    @contextlib.contextmanager
    def inference_guard(self):
        """No autograd, and an out-of-memory anywhere inside becomes OutOfMemoryError with advice
        (after freeing what the failed attempt held); errors the user can act on pass through."""
        try:
            with torch.no_grad():
                yield
        except TrellisError:
            raise
        except BaseException as e:
            if _is_oom(e):
                _free_memory(self.device)
                raise self._oom_error(e) from e
            raise

    def _oom_error(self, e: BaseException) -> OutOfMemoryError:
        if self.device.type == "cuda":
            return OutOfMemoryError(f"the GPU ran out of memory: {str(e).splitlines()[0][:300]}")
        return OutOfMemoryError(f"the computer ran out of memory: {str(e).splitlines()[0][:300] if str(e) else ''}",
                                hint="Close other programs, generate fewer output kinds (e.g. --formats glb), "
                                     "or use a machine with more RAM / a GPU.")

    def _check_cancel(self, cancel, where: str) -> None:
        if cancel is not None and cancel.is_set():
            raise Cancelled(f"cancelled {where}")

    def _generate(self, prompt, image, seed, ss_steps, slat_steps, ss_cfg, slat_cfg, fmts, output_dir, name,
                  progress, cancel, background_threshold, multi_image_mode, texture_size, overwrite=False) -> dict:
        timings: Dict[str, float] = {}
        t0 = time.perf_counter()
        report = progress or (lambda *a: None)
        if output_dir is not None:
            _check_name(name)
        report("condition", 0, 1, "encoding the condition")
        cond, info = self.get_cond(prompt, image, background_threshold)
        multi = multi_image_mode if (self.kind == "image" and cond["cond"].shape[0] > 1) else None
        report("condition", 1, 1, "condition encoded")
        timings["condition"] = time.perf_counter() - t0
        self._check_cancel(cancel, "after encoding the condition")

        ss_params = self._sampler_params(self.sparse_structure_sampler_params, ss_steps, ss_cfg)
        slat_params = self._sampler_params(self.slat_sampler_params, slat_steps, slat_cfg)
        gen = torch.Generator().manual_seed(seed)

        t = time.perf_counter()
        coords = self.sample_sparse_structure(cond, gen, ss_params, progress, cancel, multi_image=multi)
        timings["sparse_structure"] = time.perf_counter() - t
        if coords.shape[0] == 0:
            raise EmptyStructureError("the sparse structure is empty (no voxel decoded as occupied)")
        check_voxel_count(int(coords.shape[0]), self.device.type, progress)
        _free_memory(self.device)
        self._check_cancel(cancel, "after stage 1")

        t = time.perf_counter()
        slat = self.sample_slat(cond, coords, gen, slat_params, progress, cancel, multi_image=multi)
        timings["slat"] = time.perf_counter() - t
        _free_memory(self.device)
        self._check_cancel(cancel, "after stage 2")

        settings = self._settings(seed, info, ss_params, slat_params, fmts, multi)
        result = self._decode_and_export(slat, fmts, output_dir, name, settings, progress, cancel, timings,
                                         texture_size, overwrite)
        result["meta"]["timings"]["total"] = time.perf_counter() - t0
        result["meta"]["timings"].update({k: v for k, v in timings.items()})
        if "preprocessed" in info:
            result["outputs"]["condition_image"] = info["preprocessed"]
        return result

    def _settings(self, seed, info, ss_params, slat_params, fmts, multi) -> dict:
        return {
            "pipeline_version": PIPELINE_VERSION,
            "model_folder": str(self.folder),
            "pipeline_name": self.name,
            "condition": self.kind,
            "prompt": info.get("prompt"),
            "image": info.get("image"),
            "multi_image_mode": multi,
            "seed": seed,
            "ss_steps": ss_params.get("steps"), "ss_cfg": ss_params.get("cfg_strength"),
            "slat_steps": slat_params.get("steps"), "slat_cfg": slat_params.get("cfg_strength"),
            "sparse_structure_sampler": {**self.config["args"]["sparse_structure_sampler"], "params": ss_params},
            "slat_sampler": {**self.config["args"]["slat_sampler"], "params": slat_params},
            "slat_normalization": self.slat_normalization,
            "resolution": 64,
            "formats": list(fmts),
            "device": str(self.device),
            "dtype": str(self.dtype).replace("torch.", ""),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }

    def _decode_and_export(self, slat, fmts, output_dir, name, settings, progress, cancel, timings,
                           texture_size: int = 0, overwrite: bool = False) -> dict:
        from . import export
        from .finite_check import check_finite
        from .output_files import OutputSet

        check_finite(slat.feats, "the structured latent (SLAT)")

        report = progress or (lambda *a: None)
        t = time.perf_counter()
        decode = list(fmts)
        need_gs_colours = "mesh" in fmts and "gaussians" not in fmts and not self._mesh_has_colour()
        if need_gs_colours and "slat_decoder_gs" in self.config["args"]["models"]:
            decode.append("gaussians")
        decoded = self.decode_slat(slat, decode, progress)
        timings["decode"] = time.perf_counter() - t
        self._check_cancel(cancel, "after decoding")
        outputs: Dict[str, Any] = {"slat": slat, "coords": slat.coords}
        mesh = decoded.get("mesh", [None])[0]
        gaussians = decoded.get("gaussians", [None])[0]
        if "mesh" in fmts:
            outputs["mesh"] = mesh
        if "gaussians" in fmts:
            outputs["gaussians"] = gaussians
        if "radiance_field" in fmts:
            outputs["radiance_field"] = decoded["radiance_field"][0]
        meta: Dict[str, Any] = {**{k: v for k, v in settings.items() if k not in ("slat_normalization",)},
                                "voxels": int(slat.coords.shape[0]), "timings": {}}
        if mesh is not None:
            meta["vertices"] = int(mesh.vertices.shape[0])
            meta["faces"] = int(mesh.faces.shape[0])
        if gaussians is not None:
            meta["gaussians"] = int(gaussians.get_xyz.shape[0])
        files: Dict[str, str] = {}
        if output_dir is not None:
            t = time.perf_counter()
            steps = (["glb"] if "mesh" in fmts else []) + (["ply"] if "gaussians" in fmts else []) + ["slat"]
            with OutputSet(output_dir, name, steps, overwrite=overwrite, cancel=cancel) as out:
                for i, kind in enumerate(steps):
                    report("export", i, len(steps), f"writing {kind}")
                    self._check_cancel(cancel, f"before writing the {kind} file; nothing was written")
                    path = out.temp(kind)
                    if kind == "glb":
                        meta["glb"] = export.write_glb(path, mesh, gaussians=gaussians, texture_size=texture_size)
                    elif kind == "ply":
                        export.write_ply(path, gaussians)
                    else:
                        export.write_sidecar(path, slat.coords, slat.feats, settings)
            files.update(out.paths)
            report("export", len(steps), len(steps), "files written")
            timings["export"] = time.perf_counter() - t
        return {"files": files, "meta": meta, "outputs": outputs}

    def _mesh_has_colour(self) -> bool:
        if "slat_decoder_mesh" not in self.config["args"]["models"]:
            return False
        try:
            from ..models import read_config

            path = self.model_paths.get("slat_decoder_mesh")
            if path is None:
                return False
            rep = read_config(path)["args"].get("representation_config") or {}
            return bool(rep.get("use_color", False))
        except Exception:
            return False

    # ------------------------------------------------------------- variants
    def variants(self, mesh_or_coords, prompt: Optional[str] = None, image=None, seed: int = 0,
                 slat_steps: Optional[int] = None, slat_cfg: Optional[float] = None,
                 formats=("mesh", "gaussians"), output_dir=None, name: str = "variant",
                 progress: Optional[ProgressFn] = None, cancel=None, *,
                 background_threshold: Optional[float] = None, texture_size: int = 0,
                 overwrite: bool = False) -> dict:
        """Re-run stage 2 (SLAT) on a given voxelisation with a new condition / seed.

        `mesh_or_coords`: voxel coordinates (``[N, 3]`` or ``[N, 4]`` ints in the 64^3 grid), a
        SLAT sidecar path (``.npz``), a mesh file path (GLB/glTF are y-up and turned z-up; other
        formats are taken as z-up), a trimesh, or an object with ``.vertices``/``.faces``
        (e.g. a MeshExtractResult). Meshes are normalised into the unit cube like the reference.
        """
        fmts = normalize_formats(formats)
        with self.inference_guard():
            t0 = time.perf_counter()
            coords = self._coords_from(mesh_or_coords)
            report = progress or (lambda *a: None)
            if output_dir is not None:
                _check_name(name)
            report("condition", 0, 1, "encoding the condition")
            cond, info = self.get_cond(prompt, image, background_threshold)
            multi = "stochastic" if (self.kind == "image" and cond["cond"].shape[0] > 1) else None
            report("condition", 1, 1, "condition encoded")
            params = self._sampler_params(self.slat_sampler_params, slat_steps, slat_cfg)
            gen = torch.Generator().manual_seed(int(seed))
            timings: Dict[str, float] = {}
            t = time.perf_counter()
            slat = self.sample_slat(cond, coords, gen, params, progress, cancel, multi_image=multi)
            timings["slat"] = time.perf_counter() - t
            settings = self._settings(int(seed), info, self.sparse_structure_sampler_params, params, fmts, multi)
            settings["variant_of"] = str(mesh_or_coords) if isinstance(mesh_or_coords, (str, Path)) else None
            res = self._decode_and_export(slat, fmts, output_dir, name, settings, progress, cancel, timings,
                                          texture_size, overwrite)
            res["meta"]["timings"].update(timings)
            res["meta"]["timings"]["total"] = time.perf_counter() - t0
            return res

    def _coords_from(self, src) -> torch.Tensor:
        from .voxelize import Y_UP_TO_Z_UP, voxelize_surface

        if isinstance(src, (str, Path)):
            p = Path(src).expanduser()
            if not p.is_file():
                raise BadInputError(f"file not found: {p}", hint="Give a mesh file or a SLAT sidecar (.npz).")
            if p.suffix.lower() == ".npz":
                from .export import read_sidecar

                coords, _, _ = read_sidecar(p)
                src = coords
            else:
                import trimesh

                try:
                    loaded = trimesh.load(str(p), force="mesh")
                except Exception as e:
                    raise BadInputError(f"cannot read mesh {p}: {e}") from e
                v = np.asarray(loaded.vertices, dtype=np.float64)
                if p.suffix.lower() in (".glb", ".gltf"):
                    v = v @ Y_UP_TO_Z_UP
                src = voxelize_surface(v, np.asarray(loaded.faces))
        elif hasattr(src, "vertices") and hasattr(src, "faces"):
            v = src.vertices.detach().cpu().numpy() if hasattr(src.vertices, "detach") else np.asarray(src.vertices)
            f = src.faces.detach().cpu().numpy() if hasattr(src.faces, "detach") else np.asarray(src.faces)
            src = voxelize_surface(v, f)
        c = torch.as_tensor(np.asarray(src.cpu() if hasattr(src, "cpu") else src)).int()
        if c.dim() != 2 or c.shape[1] not in (3, 4) or c.shape[0] == 0:
            raise BadInputError(f"voxel coordinates must be a non-empty [N, 3] or [N, 4] array, got {tuple(c.shape)}")
        if c.shape[1] == 3:
            c = torch.cat([torch.zeros(c.shape[0], 1, dtype=torch.int32), c], dim=1)
        if c[:, 1:].min() < 0 or c[:, 1:].max() > 63:
            raise BadInputError("voxel coordinates must lie in [0, 63]")
        return c

    # --------------------------------------------------------- region edit
    def edit_region(self, sidecar_path, region, **kwargs) -> dict:
        """Region editing lives in `trellis_backend.edit`; this forwards to it."""
        try:
            from ..edit import edit_region
        except ImportError as e:
            raise NotImplementedError("region editing is not available in this backend") from e
        return edit_region(self, sidecar_path, region, **kwargs)

    # -------------------------------------------------------------- memory
    def release(self) -> None:
        """Drop every model and free accelerator memory."""
        acc = getattr(self, "accel", None)
        if acc is not None:
            acc.disable()
            self.accel = None
        self.models.clear()
        self.conditioner = None
        _free_memory(self.device)
