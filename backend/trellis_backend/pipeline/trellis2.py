"""TRELLIS.2 image-to-3D pipeline: image -> structure -> shape latent -> texture latent -> mesh + PBR voxels
-> PBR GLB and latent sidecar, on the same generation sequence (`sequence.GenerationRun`) as TRELLIS.

Stages (as the reference's ``Trellis2ImageTo3DPipeline.run``), each a public method:

1. `encode_condition`: the reference's preprocessing (`preprocess_image_trellis2`) and DINOv3 tokens at
   512 and, for every mode but 512, at 1024 (negative condition: zeros);
2. `sample_structure`: noise ``[1, 8, 16, 16, 16]`` -> structure flow -> SS decoder ``> 0`` -> max-pooled to
   the mode's structure grid (32 or 64) -> occupied voxels;
3. `sample_shape_latent`: shape flow at 512 or 1024; the cascades sample at 512, upsample the voxels with the
   shape decoder, quantise them to the target grid (lowering 1536 in steps of 128 while the voxel count is
   at or above the token cap, down to 1024) and sample again with the 1024 flow; de-normalised;
4. `sample_texture_latent`: texture flow with the normalised shape latent as ``concat_cond``; de-normalised;
5. `decode`: shape decoder at the output resolution (meshes + subdivisions), small holes closed, texture
   decoder guided by those subdivisions, ``* 0.5 + 0.5`` -> PBR voxels;
6. `export`: PBR GLB (`export_pbr.write_pbr_glb`) and the latent sidecar (`trellis2_latents`).

`texture` (from `trellis2_texturing`) paints an existing mesh instead: shape encoder, texture flow, bake.

Models load from the released folder layout (`from_pretrained`); the structure flow and decoder, the two
SC-VAE decoders and DINOv3 at load time, the 1.3B shape/texture flows when a mode first needs them.
Weights run in float32 on the CPU (the released bf16/fp16 torsos are cast on load).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F

from .. import settings
from ..errors import BadInputError, CheckpointMismatchError, MissingFileError
from .model_folder import ModelFolder, attach_fast_path
from .options import check_family_options, check_name, normalize_formats
from .export_pbr import DEFAULT_FACE_BUDGET, DEFAULT_TEXTURE_SIZE, write_pbr_glb
from .folder import choose_device, choose_dtype, read_pipeline_document, resolve_model_ref
from .pipeline import EmptyStructureError, PIPELINE_VERSION, model_input_dtype
from .samplers import build_sampler
from .sequence import GenerationRun, ProgressFn, check_cancel
from .trellis2_latents import SIDECAR_SUFFIX, Trellis2Latents, read_latents, write_latents
from .trellis2_texturing import Trellis2Texturing

PIPELINE_NAMES = ("Trellis2ImageTo3DPipeline",)
REQUIRED_MODELS = ("sparse_structure_flow_model", "sparse_structure_decoder", "shape_slat_decoder", "tex_slat_decoder")
FLOW_MODELS = ("shape_slat_flow_model_512", "shape_slat_flow_model_1024", "tex_slat_flow_model_512",
               "tex_slat_flow_model_1024")
OPTIONAL_MODELS = ("shape_slat_encoder", "tex_slat_encoder")
SAMPLERS = ("sparse_structure_sampler", "shape_slat_sampler", "tex_slat_sampler")
DEFAULT_MODE = "1024_cascade"
DEFAULT_MAX_NUM_TOKENS = 49152
CASCADE_STEP = 128  # the cascade lowers its target resolution in these steps
LATENT_DOWNSCALE = 16  # SC-VAE: 4 halvings between the output voxels and the latent


@dataclass(frozen=True)
class ResolutionMode:
    """One of the reference's ``pipeline_type`` values."""

    name: str
    structure_resolution: int        # the occupancy grid the structure stage emits (32 or 64)
    shape_flows: Tuple[str, ...]     # one flow, or (low, high) for a cascade
    texture_flow: str
    resolution: int                  # the output resolution asked for
    condition_sizes: Tuple[int, ...]  # DINOv3 input sizes the mode needs

    @property
    def cascade(self) -> bool:
        return len(self.shape_flows) == 2

    @property
    def models(self) -> Tuple[str, ...]:
        return (*self.shape_flows, self.texture_flow)


RESOLUTION_MODES: Dict[str, ResolutionMode] = {
    "512": ResolutionMode("512", 32, ("shape_slat_flow_model_512",), "tex_slat_flow_model_512", 512, (512,)),
    "1024": ResolutionMode("1024", 64, ("shape_slat_flow_model_1024",), "tex_slat_flow_model_1024", 1024,
                           (512, 1024)),
    "1024_cascade": ResolutionMode("1024_cascade", 32, ("shape_slat_flow_model_512", "shape_slat_flow_model_1024"),
                                   "tex_slat_flow_model_1024", 1024, (512, 1024)),
    "1536_cascade": ResolutionMode("1536_cascade", 32, ("shape_slat_flow_model_512", "shape_slat_flow_model_1024"),
                                   "tex_slat_flow_model_1024", 1536, (512, 1024)),
}


class PbrMesh(NamedTuple):
    """One decoded asset: mesh ``vertices`` float32 ``[V, 3]`` / ``faces`` int64 ``[F, 3]`` (z up, unit cube
    around the origin, small holes closed) and its ``voxels`` (`PbrVoxels` at the output resolution)."""

    vertices: np.ndarray
    faces: np.ndarray
    voxels: Any


# ------------------------------------------------------------------------------------ folder
def read_trellis2_pipeline_json(folder: Path) -> dict:
    """pipeline.json of a TRELLIS.2 folder, checked for what `Trellis2Pipeline` needs."""
    config = read_pipeline_document(folder)
    cfg_file = folder / "pipeline.json"
    args = config["args"]
    if config.get("name") not in PIPELINE_NAMES:
        raise CheckpointMismatchError(f"{cfg_file} names pipeline {config.get('name')!r}, not a TRELLIS.2 "
                                      f"image-to-3D pipeline ({', '.join(PIPELINE_NAMES)})")
    for key in ("models", *SAMPLERS, "shape_slat_normalization", "tex_slat_normalization", "image_cond_model"):
        if key not in args:
            raise CheckpointMismatchError(f"{cfg_file} lacks args.{key}",
                                          hint="Use the pipeline.json that came with the TRELLIS.2 model.")
    for key in REQUIRED_MODELS:
        if key not in args["models"]:
            raise CheckpointMismatchError(f"{cfg_file} lacks args.models.{key}")
    if not any(key in args["models"] for key in FLOW_MODELS):
        raise CheckpointMismatchError(f"{cfg_file} lists no shape/texture flow ({', '.join(FLOW_MODELS)})")
    for key in ("shape_slat_normalization", "tex_slat_normalization"):
        norm = args[key]
        if not (isinstance(norm, dict) and len(norm.get("mean", [])) == len(norm.get("std", [])) > 0):
            raise CheckpointMismatchError(f"{cfg_file}: {key} needs equal-length 'mean' and 'std'")
    cond = args["image_cond_model"]
    if not (isinstance(cond, dict) and cond.get("name") == "DinoV3FeatureExtractor"
            and isinstance(cond.get("args", {}).get("model_name"), str)):
        raise CheckpointMismatchError(f"{cfg_file}: image_cond_model must be DinoV3FeatureExtractor with "
                                      f"args.model_name, got {cond!r}")
    return config


def _normalization(spec: dict, device: torch.device) -> Tuple[torch.Tensor, torch.Tensor]:
    mean = torch.tensor(spec["mean"], dtype=torch.float32, device=device)[None]
    std = torch.tensor(spec["std"], dtype=torch.float32, device=device)[None]
    return mean, std


def cascade_coords(hr_coords: torch.Tensor, lr_resolution: int, resolution: int,
                   max_num_tokens: int = DEFAULT_MAX_NUM_TOKENS) -> Tuple[torch.Tensor, int]:
    """The cascade's high-resolution latent voxels and the resolution they decode at.

    `hr_coords` ``[M, 4]``: the low-resolution latent upsampled by the shape decoder (grid `lr_resolution`).
    Quantised to the latent grid of `resolution` (``resolution // 16``); while that gives `max_num_tokens`
    voxels or more and the resolution is above 1024, the resolution drops by 128 (the reference's rule).
    """
    resolution = int(resolution)
    while True:
        scaled = ((hr_coords[:, 1:].float() + 0.5) / lr_resolution * (resolution // LATENT_DOWNSCALE)).int()
        coords = torch.cat([hr_coords[:, :1].int(), scaled], dim=1).unique(dim=0)
        if coords.shape[0] < max_num_tokens or resolution <= 1024:
            return coords, resolution
        resolution -= CASCADE_STEP


# ---------------------------------------------------------------------------------- pipeline
class Trellis2Pipeline(ModelFolder, Trellis2Texturing):
    """Loaded TRELLIS.2 image-to-3D pipeline (and texturing of an existing mesh: `texture`). Build with
    `from_pretrained` (or `load_pipeline`)."""

    family = "trellis2"
    kind = "image"

    def __init__(self, folder: Path, config: dict, model_paths: Dict[str, Optional[Path]], conditioner,
                 device: torch.device, dtype: torch.dtype, models_root: Optional[Path] = None,
                 allow_network: bool = False):
        args = config["args"]
        self.init_models(folder, config, model_paths, conditioner, device, dtype, models_root, allow_network)
        self.samplers = {key: build_sampler(args[key]) for key in SAMPLERS}
        self.sampler_defaults = {key: dict(args[key].get("params", {})) for key in SAMPLERS}
        self.shape_slat_normalization = args["shape_slat_normalization"]
        self.tex_slat_normalization = args["tex_slat_normalization"]
        self.default_mode = str(args.get("default_pipeline_type", DEFAULT_MODE))
        self.background_threshold: Optional[float] = None

    # -------------------------------------------------------------------- loading
    @classmethod
    def from_pretrained(cls, folder: Union[str, Path], models_root: Union[str, Path, None] = None,
                        device: Union[str, torch.device, None] = "auto", dtype: Union[str, torch.dtype, None] = None,
                        allow_network: bool = False) -> "Trellis2Pipeline":
        """Load a TRELLIS.2 folder in the released layout.

        Args:
            folder: pipeline.json + ckpts/ (e.g. a download of microsoft/TRELLIS.2-4B).
            models_root: where ``<org>/<repo>/ckpts/<name>`` references (the TRELLIS-image-large structure
                decoder) and the DINOv3 folder (``<root>/facebook/dinov3-vitl16-pretrain-lvd1689m``) are found;
                default: env ``TRELLIS_MODELS_ROOT``; both are also looked for beside / inside the folder.
            device: 'auto' (CUDA when available), 'cpu', 'cuda', ...
            dtype: None = bf16 on CUDA, float32 on CPU.
        """
        from .conditioning.dinov3 import DinoV3Conditioner, find_dinov3_folder

        from ..models.folder_check import check_checkpoint, check_model_folder

        folder = Path(folder).expanduser().resolve()
        check_model_folder(folder, models_root)  # names the damaged file/field before any work
        config = read_trellis2_pipeline_json(folder)
        dev = choose_device(device)
        dt = choose_dtype(dev, dtype)
        root = Path(models_root).expanduser() if models_root else None
        env_root = Path(settings.current().models_root) if settings.current().models_root else None
        paths: Dict[str, Optional[Path]] = {}
        for key, ref in config["args"]["models"].items():
            # every model a mode may need must exist now; the optional encoders are looked up when used
            paths[key] = None if key in OPTIONAL_MODELS else resolve_model_ref(folder, ref, root, allow_network)
        for path in paths.values():  # every checkpoint checked before the (slow) encoder loads
            if path is not None:
                check_checkpoint(path, family=cls.family)
        cond_args = config["args"]["image_cond_model"]["args"]
        dino_folder = find_dinov3_folder(cond_args["model_name"], root or env_root, folder)
        conditioner = DinoV3Conditioner.from_folder(dino_folder, image_size=int(cond_args.get("image_size", 512)),
                                                    device=dev, dtype=torch.float32 if dev.type == "cpu" else dt)
        pipe = cls(folder, config, paths, conditioner, dev, dt, root, allow_network)
        for key in REQUIRED_MODELS:
            pipe.get_model(key)
        pipe.fast_path = attach_fast_path(pipe)
        return pipe

    # ---------------------------------------------------------------------- modes
    @property
    def resolution_modes(self) -> List[str]:
        """The modes this folder has every model for."""
        refs = self.config["args"]["models"]
        return [name for name, mode in RESOLUTION_MODES.items() if all(k in refs for k in mode.models)]

    def resolution_mode(self, name: Optional[str] = None) -> ResolutionMode:
        """The mode `name` (default: pipeline.json's ``default_pipeline_type``), checked against the folder."""
        name = self.default_mode if name is None else str(name)
        if name not in RESOLUTION_MODES:
            raise BadInputError(f"unknown resolution mode {name!r}",
                                hint="Use one of: " + ", ".join(RESOLUTION_MODES) + ".")
        mode = RESOLUTION_MODES[name]
        missing = [k for k in mode.models if k not in self.config["args"]["models"]]
        if missing:
            available = self.resolution_modes
            raise MissingFileError(
                f"resolution mode {name} needs {', '.join(missing)}, which {self.folder / 'pipeline.json'} does not "
                "list", hint=("Modes this folder can run: " + ", ".join(available)) if available
                else "The folder has no complete mode; re-download it.")
        return mode

    # ------------------------------------------------------------------ condition
    def encode_condition(self, prompt: Optional[str] = None, image=None, background_threshold: Optional[float] = None,
                         sizes: Sequence[int] = (512, 1024)) -> Tuple[dict, dict]:
        """``({size: {'cond', 'neg_cond'}}, info)``: DINOv3 tokens of the preprocessed image at each size."""
        if prompt is not None:
            raise BadInputError("TRELLIS.2 is image-conditioned; it cannot take a text prompt",
                                hint="Give an image (RGBA with a transparent background), or load a TRELLIS "
                                     "text-to-3D model folder.")
        if image is None:
            raise BadInputError("no image given", hint="Give an image path (RGBA PNG with a transparent background).")
        if isinstance(image, (list, tuple)):
            if len(image) != 1:
                raise BadInputError(f"TRELLIS.2 takes one condition image, got {len(image)}",
                                    hint="Multi-image conditioning is a TRELLIS feature; give one image.")
            image = image[0]
        from .conditioning.preprocess import preprocess_image_trellis2

        thr = background_threshold if background_threshold is not None else self.background_threshold
        pre = preprocess_image_trellis2(image, background_threshold=thr)
        cond = {int(size): self.conditioner.get_cond([pre], image_size=int(size)) for size in sizes}
        name = str(Path(image).expanduser().resolve()) if isinstance(image, (str, Path)) else "<PIL image>"
        return cond, {"image": name, "preprocessed": pre}

    # --------------------------------------------------------------------- stages
    def sampler_params(self, stage: str, steps: Optional[int] = None) -> dict:
        """pipeline.json's parameters of a sampler (``sparse_structure_sampler``, ``shape_slat_sampler``,
        ``tex_slat_sampler``), with `steps` when given."""
        params = dict(self.sampler_defaults[stage])
        if steps is not None:
            if int(steps) < 1:
                raise BadInputError(f"steps must be at least 1, got {steps}")
            params["steps"] = int(steps)
        return params

    def _sample(self, stage: str, flow, noise, cond: dict, params: dict, progress, cancel, label: str, **kwargs):
        with self.precision():
            return self.samplers[stage].sample(flow, noise, cond["cond"].to(self.device),
                                               cond["neg_cond"].to(self.device), **params, progress=progress,
                                               cancel=cancel, stage=label, **kwargs).samples

    @torch.no_grad()
    def sample_structure(self, cond: dict, mode: ResolutionMode, generator: torch.Generator, params: dict,
                         progress: Optional[ProgressFn] = None, cancel=None) -> torch.Tensor:
        """Occupied voxels ``[N, 4]`` int32 (batch, x, y, z) of the mode's structure grid (`cond`: the 512 tokens)."""
        flow = self.get_model("sparse_structure_flow_model")
        reso = flow.resolution
        noise = torch.randn(1, flow.in_channels, reso, reso, reso, generator=generator).to(self.device)
        z = self._sample("sparse_structure_sampler", flow, noise, cond, params, progress, cancel, "sparse_structure")
        check_cancel(cancel, "after the structure flow")
        decoder = self.get_model("sparse_structure_decoder")
        with self.precision():
            occupied = decoder(z.to(model_input_dtype(decoder))) > 0
        if occupied.shape[2] != mode.structure_resolution:
            ratio = occupied.shape[2] // mode.structure_resolution
            occupied = F.max_pool3d(occupied.float(), ratio, ratio, 0) > 0.5
        return torch.argwhere(occupied)[:, [0, 2, 3, 4]].int()

    def _shape_pass(self, cond: dict, coords: torch.Tensor, flow_key: str, generator: torch.Generator,
                    params: dict, progress, cancel, label: str):
        """One shape-flow sampling on `coords`, de-normalised."""
        from ..sparse import SparseTensor

        flow = self.get_model(flow_key)
        coords = coords.to(self.device).int()
        noise = SparseTensor(torch.randn(coords.shape[0], flow.in_channels, generator=generator).to(self.device),
                             coords, shape=(int(coords[:, 0].max()) + 1, flow.in_channels))
        slat = self._sample("shape_slat_sampler", flow, noise, cond, params, progress, cancel, label)
        mean, std = _normalization(self.shape_slat_normalization, self.device)
        return slat.replace(slat.feats.float() * std + mean)

    @torch.no_grad()
    def sample_shape_latent(self, cond: Dict[int, dict], coords: torch.Tensor, mode: ResolutionMode,
                            generator: torch.Generator, params: dict, progress: Optional[ProgressFn] = None,
                            cancel=None, max_num_tokens: int = DEFAULT_MAX_NUM_TOKENS):
        """``(shape_slat, resolution)``: the de-normalised shape latent on the structure's voxels (512, 1024) or,
        for a cascade, on the upsampled voxels, and the resolution it decodes at."""
        if not mode.cascade:
            size = 512 if mode.resolution == 512 else 1024
            slat = self._shape_pass(cond[size], coords, mode.shape_flows[0], generator, params, progress, cancel,
                                    "shape_slat")
            return slat, mode.resolution
        lr_resolution = mode.structure_resolution * LATENT_DOWNSCALE
        low = self._shape_pass(cond[512], coords, mode.shape_flows[0], generator, params, progress, cancel,
                               "shape_slat_512")
        check_cancel(cancel, "after the low-resolution shape pass")
        decoder = self.get_model("shape_slat_decoder")
        with self.precision():
            hr_coords = decoder.upsample(low, upsample_times=4)
        if hr_coords.shape[0] == 0:
            raise EmptyStructureError("the cascade's upsampled structure is empty")
        coords, resolution = cascade_coords(hr_coords, lr_resolution, mode.resolution, max_num_tokens)
        slat = self._shape_pass(cond[1024], coords, mode.shape_flows[1], generator, params, progress, cancel,
                                "shape_slat")
        return slat, resolution

    @torch.no_grad()
    def sample_texture_latent(self, cond: dict, shape_slat, mode: ResolutionMode, generator: torch.Generator,
                              params: dict, progress: Optional[ProgressFn] = None, cancel=None):
        """The de-normalised texture latent on the shape latent's voxels (`cond`: the tokens of the mode's
        texture flow, 512 or 1024); the flow sees the normalised shape latent as ``concat_cond``. `mode`: a
        `ResolutionMode`, or anything with its ``texture_flow`` (texturing's `TexturingMode`)."""
        flow = self.get_model(mode.texture_flow)
        mean, std = _normalization(self.shape_slat_normalization, self.device)
        shape = shape_slat.replace((shape_slat.feats.float() - mean) / std)
        noise = shape.replace(torch.randn(shape.feats.shape[0], flow.in_channels - shape.feats.shape[1],
                                          generator=generator).to(self.device))
        tex = self._sample("tex_slat_sampler", flow, noise, cond, params, progress, cancel, "tex_slat",
                           concat_cond=shape)
        mean, std = _normalization(self.tex_slat_normalization, self.device)
        return tex.replace(tex.feats.float() * std + mean)

    # --------------------------------------------------------------------- decode
    @torch.no_grad()
    def decode(self, latents: Trellis2Latents, formats: Sequence[str] = ("mesh",),
               progress: Optional[ProgressFn] = None) -> dict:
        """``{"mesh": [PbrMesh per item]}``: shape decoder at the latents' resolution (meshes, small holes closed,
        subdivisions), texture decoder guided by those subdivisions, ``* 0.5 + 0.5`` -> PBR voxels."""
        from ..representations.mesh.holes import fill_small_holes
        from ..representations.ovoxel import PbrVoxels

        report = progress or (lambda *a: None)
        report("decode", 0, 2, "decoding the shape")
        shape_decoder = self.get_model("shape_slat_decoder")
        shape_decoder.set_resolution(int(latents.resolution))
        with self.precision():
            meshes, subs = shape_decoder(latents.shape_slat, return_subs=True)
            report("decode", 1, 2, "decoding the texture")
            voxels = self.get_model("tex_slat_decoder")(latents.tex_slat, guide_subs=subs)
        attrs = voxels.feats.float() * 0.5 + 0.5
        items = []
        for mesh, part in zip(meshes, voxels.layout):
            v, f = fill_small_holes(mesh.vertices.float().cpu().numpy(), mesh.faces.long().cpu().numpy())
            items.append(PbrMesh(v, f, PbrVoxels(voxels.coords[part, 1:].cpu().numpy(), attrs[part].cpu().numpy(),
                                                 grid_size=int(latents.resolution))))
        report("decode", 2, 2, "decoded")
        return {"mesh": items}

    # ------------------------------------------------------------------- generate
    def generate(self, image=None, seed: int = 0, resolution: Optional[str] = None, ss_steps: Optional[int] = None,
                 shape_steps: Optional[int] = None, tex_steps: Optional[int] = None,
                 max_num_tokens: int = DEFAULT_MAX_NUM_TOKENS, formats=("mesh",), output_dir=None,
                 name: str = "asset", progress: Optional[ProgressFn] = None, cancel=None, *,
                 background_threshold: Optional[float] = None, texture_size: int = 0, face_budget: Optional[int] = None,
                 overwrite: bool = False, **other_options) -> dict:
        """One textured asset from an image (path or PIL image).

        `resolution`: '512', '1024', '1024_cascade' or '1536_cascade' (default: pipeline.json's). `texture_size`
        0 = the reference's 2048. Returns ``{"files": {"glb", "slat"}, "meta", "outputs": {"latents", "mesh"}}``;
        files only with `output_dir`. TRELLIS-only options (prompt, ss_cfg, slat_cfg, ...) get a `BadInputError`.
        """
        check_family_options("trellis2", {**other_options, "formats": formats})
        fmts = normalize_formats(formats)
        if output_dir is not None:
            check_name(name)
        mode = self.resolution_mode(resolution)
        if int(max_num_tokens) < 1:
            raise BadInputError(f"max_num_tokens must be at least 1, got {max_num_tokens}")
        if texture_size < 0 or (0 < texture_size < 8):
            raise BadInputError(f"texture size must be 0 (default) or at least 8 texels, got {texture_size}")
        face_budget = DEFAULT_FACE_BUDGET if face_budget is None else int(face_budget)
        if face_budget < 1:
            raise BadInputError(f"face budget must be positive, got {face_budget}")
        params = {"sparse_structure_sampler": self.sampler_params("sparse_structure_sampler", ss_steps),
                  "shape_slat_sampler": self.sampler_params("shape_slat_sampler", shape_steps),
                  "tex_slat_sampler": self.sampler_params("tex_slat_sampler", tex_steps)}
        for key in mode.models:
            self.get_model(key)  # load a mode's flows before the clock of its first stage starts
        with GenerationRun(self, seed, progress, cancel) as run:
            cond, info = run.condition(None, image, background_threshold, sizes=mode.condition_sizes)
            coords = run.stage("sparse_structure", self.sample_structure, cond[512], mode, run.generator,
                               params["sparse_structure_sampler"], progress, cancel)
            if coords.shape[0] == 0:
                raise EmptyStructureError("the sparse structure is empty (no voxel decoded as occupied)")
            shape_slat, out_resolution = run.stage("shape_slat", self.sample_shape_latent, cond, coords, mode,
                                                   run.generator, params["shape_slat_sampler"], progress, cancel,
                                                   int(max_num_tokens))
            tex_cond = cond[512 if mode.texture_flow.endswith("_512") else 1024]
            tex_slat = run.stage("tex_slat", self.sample_texture_latent, tex_cond, shape_slat, mode, run.generator,
                                 params["tex_slat_sampler"], progress, cancel)
            latents = Trellis2Latents(shape_slat, tex_slat, out_resolution)
            settings = self.run_settings(run.seed, info, mode, out_resolution, int(max_num_tokens), params, fmts,
                                         texture_size or DEFAULT_TEXTURE_SIZE, face_budget)
            result = run.finish(latents, fmts, output_dir, name, settings, texture_size, overwrite)
        result["outputs"]["condition_image"] = info["preprocessed"]
        return result

    def run_settings(self, seed: int, info: dict, mode: ResolutionMode, resolution: int, max_num_tokens: int,
                     params: Dict[str, dict], fmts: Sequence[str], texture_size: int, face_budget: int) -> dict:
        """What a result records about how it was made (the sidecar's settings and the result's meta); no clock
        time, so one seed gives identical files."""
        args = self.config["args"]
        return {
            "pipeline_version": PIPELINE_VERSION,
            "family": self.family,
            "model_folder": str(self.folder),
            "pipeline_name": self.name,
            "condition": "image",
            "image": info.get("image"),
            "seed": int(seed),
            "resolution_mode": mode.name,
            "resolution": int(resolution),
            "max_num_tokens": int(max_num_tokens),
            **{key: {**args[key], "params": params[key]} for key in SAMPLERS},
            "shape_slat_normalization": self.shape_slat_normalization,
            "tex_slat_normalization": self.tex_slat_normalization,
            "texture_size": int(texture_size),
            "face_budget": int(face_budget),
            "formats": list(fmts),
            "device": str(self.device),
            "dtype": str(self.dtype).replace("torch.", ""),
        }

    # --------------------------------------------------------------------- export
    def latent_arrays(self, latents: Trellis2Latents) -> dict:
        return {"the shape latent": latents.shape_slat.feats, "the texture latent": latents.tex_slat.feats}

    def output_kinds(self, fmts: Sequence[str]) -> Dict[str, str]:
        """File kind -> suffix: the PBR GLB (with "mesh") and always the latent sidecar."""
        return {**({"glb": ".glb"} if "mesh" in fmts else {}), "slat": SIDECAR_SUFFIX}

    def export(self, latents: Trellis2Latents, decoded: dict, fmts: Sequence[str], files, settings: dict,
               progress: Optional[ProgressFn] = None, cancel=None, texture_size: int = 0) -> dict:
        """The run's result: ``outputs`` (latents, the decoded `PbrMesh`) and ``meta``; with `files` (the job's
        `OutputSet`), writes its temporaries: the PBR GLB (``glb``) and the latent sidecar (``slat``,
        ``<name>.trellis2.npz``)."""
        item = decoded["mesh"][0]
        big = ("shape_slat_normalization", "tex_slat_normalization", *SAMPLERS)
        meta: Dict[str, Any] = {**{k: v for k, v in settings.items() if k not in big},
                                "voxels": int(latents.coords.shape[0]), "pbr_voxels": int(len(item.voxels.coords)),
                                "vertices": int(len(item.vertices)), "faces": int(len(item.faces)), "timings": {}}
        if files is not None:
            report = progress or (lambda *a: None)
            for i, kind in enumerate(files.kinds):
                report("export", i, len(files.kinds), f"writing {kind}")
                check_cancel(cancel, f"before writing the {kind} file; nothing was written")
                if kind == "glb":
                    meta["glb"] = write_pbr_glb(files.temp(kind), item.vertices, item.faces, item.voxels,
                                                face_budget=settings["face_budget"],
                                                texture_size=texture_size or settings["texture_size"])
                else:
                    write_latents(files.temp(kind), latents, settings)
        return {"files": {}, "meta": meta, "outputs": {"latents": latents, "mesh": item}}

    # ----------------------------------------------------------------- from files
    def load_latents(self, sidecar) -> Tuple[Trellis2Latents, dict]:
        """``(latents, settings)`` of a TRELLIS.2 sidecar, on this pipeline's device (decode / texturing /
        region edit start from it)."""
        return read_latents(sidecar, device=self.device)

