"""TRELLIS generation pipeline: condition -> sparse structure -> SLAT -> decoders -> files.

One class serves the released TRELLIS folders (image-large, text-base/large/xlarge) and
the project's embedded model: both are a folder with ``pipeline.json`` +
``ckpts/<name>.json|.safetensors`` (see `TrellisPipeline.from_pretrained`).

Stages (as the reference's ``run``), each a public method that the one generation sequence
(`sequence.GenerationRun`) composes in `generate`, `variants` and `trellis_backend.edit.edit_region`:

1. `encode_condition`: image -> preprocess -> encoder (``cond``, ``neg_cond`` = zeros), or
   prompt -> text encoder (``neg_cond`` = encoding of "");
2. `sample_structure`: noise ``[1, 8, 16, 16, 16]`` -> flow sampler -> SS decoder ->
   ``coords = argwhere(logits > 0)`` (64^3 grid);
3. `sample_latent` (SLAT): noise ``[N, 8]`` on those coords -> flow sampler -> ``slat * std + mean``;
4. `decode`: mesh (FlexiCubes), Gaussians, radiance field;
5. `export`: GLB, PLY, SLAT sidecar (module `export`).

Seeds: noise is drawn on the CPU from ``torch.Generator().manual_seed(seed)`` (stage 1
first, then stage 2, the order and values of the reference's ``torch.manual_seed``), so
a seed gives the same noise on every device and identical results on the same device.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from ..errors import BadInputError, CheckpointMismatchError, MissingFileError, TrellisError
from .folder import choose_device, choose_dtype, read_pipeline_document, resolve_model_ref
from .model_folder import ModelFolder, attach_fast_path
from .options import check_family_options, check_name, normalize_formats
from .limits import check_voxel_count
from .output_files import SUFFIXES as OUTPUT_SUFFIXES
from .samplers import build_sampler
from .sequence import GenerationRun, ProgressFn, check_cancel

PIPELINE_VERSION = "trellis-blender-pipeline/1"

EAGER_MODELS = ("sparse_structure_flow_model", "sparse_structure_decoder", "slat_flow_model")
DECODERS = {"mesh": "slat_decoder_mesh", "gaussians": "slat_decoder_gs", "radiance_field": "slat_decoder_rf"}


class EmptyStructureError(TrellisError):
    hint = "The model produced no occupied voxels for this input; try another seed or a higher stage-1 CFG."


# ------------------------------------------------------------------ folder reading
def read_pipeline_json(folder: Path) -> dict:
    """pipeline.json of a TRELLIS folder, checked for what `TrellisPipeline` needs."""
    config = read_pipeline_document(folder)
    cfg_file = folder / "pipeline.json"
    args = config["args"]
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


def model_input_dtype(model: torch.nn.Module) -> torch.dtype:
    """The dtype a model takes its input in: float32 for a half-precision torso (it casts inside)."""
    for p in model.parameters():
        return torch.float32 if p.dtype in (torch.float16, torch.bfloat16) else p.dtype
    return torch.float32


# ------------------------------------------------------------------------ pipeline
class TrellisPipeline(ModelFolder):
    """Loaded TRELLIS pipeline. Build with `from_pretrained`."""

    def __init__(self, folder: Path, config: dict, model_paths: Dict[str, Path], conditioner, device: torch.device,
                 dtype: torch.dtype, models_root: Optional[Path] = None, allow_network: bool = False):
        args = config["args"]
        self.init_models(folder, config, model_paths, conditioner, device, dtype, models_root, allow_network)
        self.sparse_structure_sampler = build_sampler(args["sparse_structure_sampler"])
        self.sparse_structure_sampler_params = dict(args["sparse_structure_sampler"].get("params", {}))
        self.slat_sampler = build_sampler(args["slat_sampler"])
        self.slat_sampler_params = dict(args["slat_sampler"].get("params", {}))
        self.slat_normalization = args["slat_normalization"]
        self.kind = "image" if args.get("image_cond_model") else "text"
        self.background_threshold: Optional[float] = None

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
        pipe.fast_path = attach_fast_path(pipe)
        return pipe

    # ------------------------------------------------------------ condition
    def encode_condition(self, prompt: Optional[str] = None, image=None,
                         background_threshold: Optional[float] = None) -> Tuple[dict, dict]:
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
    def sampler_params(self, stage: str, steps: Optional[int] = None, cfg: Optional[float] = None) -> dict:
        """Sampler parameters of a stage ('sparse_structure' or 'slat'): pipeline.json's, with `steps` / `cfg`."""
        base = {"sparse_structure": self.sparse_structure_sampler_params, "slat": self.slat_sampler_params}[stage]
        params = dict(base)
        if steps is not None:
            if int(steps) < 1:
                raise BadInputError(f"steps must be at least 1, got {steps}")
            params["steps"] = int(steps)
        if cfg is not None:
            params["cfg_strength"] = float(cfg)
        return params

    @torch.no_grad()
    def sample_structure(self, cond: dict, generator: torch.Generator, params: dict,
                         progress: Optional[ProgressFn] = None, cancel=None, num_samples: int = 1,
                         multi_image: Optional[str] = None) -> torch.Tensor:
        """Occupied voxels ``[N, 4]`` int32 (batch, x, y, z) of the 64^3 grid."""
        flow = self.get_model("sparse_structure_flow_model")
        reso = flow.resolution
        noise = torch.randn(num_samples, flow.in_channels, reso, reso, reso, generator=generator).to(self.device)
        with self.precision():
            z_s = self.sparse_structure_sampler.sample(
                flow, noise, cond["cond"].to(self.device), cond["neg_cond"].to(self.device), **params,
                progress=progress, cancel=cancel, stage="sparse_structure", multi_image=multi_image).samples
            check_cancel(cancel, "after stage 1")
            decoder = self.get_model("sparse_structure_decoder")
            logits = decoder(z_s.to(model_input_dtype(decoder)))
        coords = torch.argwhere(logits > 0)[:, [0, 2, 3, 4]].int()
        del logits, z_s
        return coords

    @torch.no_grad()
    def sample_latent(self, cond: dict, coords: torch.Tensor, generator: torch.Generator, params: dict,
                      progress: Optional[ProgressFn] = None, cancel=None, multi_image: Optional[str] = None):
        """De-normalised structured latent on `coords` (a SparseTensor)."""
        from ..sparse import SparseTensor

        flow = self.get_model("slat_flow_model")
        coords = coords.to(self.device).int()
        batch = int(coords[:, 0].max().item()) + 1 if coords.shape[0] else 1
        noise = SparseTensor(torch.randn(coords.shape[0], flow.in_channels, generator=generator).to(self.device),
                             coords, shape=(batch, flow.in_channels))
        with self.precision():
            slat = self.slat_sampler.sample(
                flow, noise, cond["cond"].to(self.device), cond["neg_cond"].to(self.device), **params,
                progress=progress, cancel=cancel, stage="slat", multi_image=multi_image).samples
        std = torch.tensor(self.slat_normalization["std"], dtype=torch.float32, device=self.device)[None]
        mean = torch.tensor(self.slat_normalization["mean"], dtype=torch.float32, device=self.device)[None]
        return slat.replace(slat.feats.float() * std + mean)

    @torch.no_grad()
    def decode(self, slat, formats: Sequence[str] = ("mesh", "gaussians"),
               progress: Optional[ProgressFn] = None) -> dict:
        """``{format: [decoded per item]}`` for the decodable `formats` (mesh, gaussians, radiance_field); with
        a mesh whose decoder has no colour channels, also the Gaussians its GLB takes the colours from."""
        out = {}
        todo = [f for f in formats if f in DECODERS]
        colours_from_gaussians = ("mesh" in todo and "gaussians" not in todo and not self._mesh_has_colour()
                                  and "slat_decoder_gs" in self.config["args"]["models"])
        if colours_from_gaussians:
            todo.append("gaussians")
        for i, fmt in enumerate(todo):
            if progress is not None:
                progress("decode", i, len(todo), f"decoding {fmt}")
            decoder = self.get_model(DECODERS[fmt])
            with self.precision():
                out[fmt] = decoder(slat)
        if progress is not None and todo:
            progress("decode", len(todo), len(todo), "decoded")
        return out

    # ------------------------------------------------------------- generate
    def generate(self, prompt: Optional[str] = None, image=None, seed: int = 0, ss_steps: Optional[int] = None,
                 slat_steps: Optional[int] = None, ss_cfg: Optional[float] = None, slat_cfg: Optional[float] = None,
                 formats=("mesh", "gaussians"), output_dir=None, name: str = "asset",
                 progress: Optional[ProgressFn] = None, cancel=None, *, background_threshold: Optional[float] = None,
                 multi_image_mode: str = "stochastic", texture_size: int = 0, overwrite: bool = False,
                 **other_options) -> dict:
        """Generate one asset from a prompt or an image (path, PIL image, or a list for multi-image).

        Returns ``{"files": {"glb"|"ply"|"slat": path}, "meta": {...}, "outputs": {...}}``; files are
        written only when `output_dir` is given (the SLAT sidecar always, with them), all together,
        under `name` or the first free `name_2`, `name_3`, ... (`overwrite=True` replaces instead). TRELLIS.2-only options
        (resolution, ...) get a `BadInputError`.
        """
        check_family_options("trellis", other_options)
        fmts = normalize_formats(formats)
        if output_dir is not None:
            check_name(name)
        ss_params = self.sampler_params("sparse_structure", ss_steps, ss_cfg)
        slat_params = self.sampler_params("slat", slat_steps, slat_cfg)
        with GenerationRun(self, seed, progress, cancel) as run:
            cond, info = run.condition(prompt, image, background_threshold)
            multi = self._multi_image(cond, multi_image_mode)
            coords = run.stage("sparse_structure", self.sample_structure, cond, run.generator, ss_params, progress,
                               cancel, multi_image=multi)
            if coords.shape[0] == 0:
                raise EmptyStructureError("the sparse structure is empty (no voxel decoded as occupied)")
            check_voxel_count(int(coords.shape[0]), self.device.type, progress)
            slat = run.stage("slat", self.sample_latent, cond, coords, run.generator, slat_params, progress, cancel,
                             multi_image=multi)
            settings = self.run_settings(run.seed, info, ss_params, slat_params, fmts, multi)
            result = run.finish(slat, fmts, output_dir, name, settings, texture_size, overwrite)
        if "preprocessed" in info:
            result["outputs"]["condition_image"] = info["preprocessed"]
        return result

    def _multi_image(self, cond: dict, mode: str) -> Optional[str]:
        """`mode` when an image model got several images (multi-image conditioning), else None."""
        return mode if (self.kind == "image" and cond["cond"].shape[0] > 1) else None

    def run_settings(self, seed: int, info: dict, ss_params: dict, slat_params: dict, fmts: Sequence[str],
                     multi: Optional[str]) -> dict:
        """What a result records about how it was made (the sidecar's settings and the result's meta)."""
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

    def latent_arrays(self, slat) -> dict:
        return {"the structured latent (SLAT)": slat.feats}

    def output_kinds(self, fmts: Sequence[str]) -> Dict[str, str]:
        """File kind -> suffix of a run's files: GLB (mesh), PLY (Gaussians), always the SLAT sidecar."""
        kinds = (["glb"] if "mesh" in fmts else []) + (["ply"] if "gaussians" in fmts else []) + ["slat"]
        return {k: OUTPUT_SUFFIXES[k] for k in kinds}

    def export(self, slat, decoded: dict, fmts: Sequence[str], files, settings: dict,
               progress: Optional[ProgressFn] = None, cancel=None, texture_size: int = 0) -> dict:
        """The result of a run: ``outputs`` (the requested decodings, the SLAT), ``meta`` (settings, counts);
        with `files` (the job's `OutputSet`), writes its temporaries: GLB, PLY and the SLAT sidecar."""
        from .export import write_glb, write_ply, write_sidecar

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
        if files is not None:
            report = progress or (lambda *a: None)
            for i, kind in enumerate(files.kinds):
                report("export", i, len(files.kinds), f"writing {kind}")
                check_cancel(cancel, f"before writing the {kind} file; nothing was written")
                path = files.temp(kind)
                if kind == "glb":
                    meta["glb"] = write_glb(path, mesh, gaussians=gaussians, texture_size=texture_size)
                elif kind == "ply":
                    write_ply(path, gaussians)
                else:
                    write_sidecar(path, slat.coords, slat.feats, settings)
        return {"files": {}, "meta": meta, "outputs": outputs}

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
        if output_dir is not None:
            check_name(name)
        params = self.sampler_params("slat", slat_steps, slat_cfg)
        with GenerationRun(self, seed, progress, cancel) as run:
            coords = self._coords_from(mesh_or_coords)
            cond, info = run.condition(prompt, image, background_threshold)
            multi = self._multi_image(cond, "stochastic")
            slat = run.stage("slat", self.sample_latent, cond, coords, run.generator, params, progress, cancel,
                             multi_image=multi)
            settings = self.run_settings(run.seed, info, self.sparse_structure_sampler_params, params, fmts, multi)
            settings["variant_of"] = str(mesh_or_coords) if isinstance(mesh_or_coords, (str, Path)) else None
            return run.finish(slat, fmts, output_dir, name, settings, texture_size, overwrite)

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
