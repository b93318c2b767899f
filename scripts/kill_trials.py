"""Kill -9 / Ctrl-C the backend at random moments of generate and edit; check nothing is lost or half-written.

Each trial starts a backend (the server as the add-on starts it, or the CLI), lets a generate or an
edit run, and kills it (SIGKILL or SIGINT) at a random moment: during sampling, decoding or writing
the files. Then it checks, in the output folder that already holds the user's files:

1. no existing file changed (SHA-256 before and after);
2. every new file under a final name belongs to a complete set (.glb + .ply + .slat.npz); a set of
   a job that was not reported finished is counted as "committed just before the kill";
3. after the next server start in that folder no temporary (``.*.trellis-tmp-*``, ``.*.partial-*``)
   or commit journal (``.trellis-commit-*``) is left.

    python scripts/kill_trials.py --trials 24            # tiny random model made on the fly
    python scripts/kill_trials.py --trials 24 --model models/trellis-embedded

Exit status 0 when every trial passed; a summary line per trial and the totals go to stdout.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import queue
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SET = (".glb", ".ply", ".slat.npz")


def env():
    e = dict(os.environ)
    e["PYTHONPATH"] = os.pathsep.join([str(ROOT / "backend"), str(ROOT / "kernels")])
    e.setdefault("OMP_NUM_THREADS", "1")
    return e


class Backend:
    """A server or CLI subprocess whose output lines are collected by reader threads."""

    def __init__(self, cmd):
        # SIGINT back to its default: a shell's background job inherits it ignored, and Python installs its
        # Ctrl-C handler only where SIGINT is not ignored
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     env=env(), cwd=str(ROOT),
                                     preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        self.events = queue.Queue()
        self.stderr = []
        threading.Thread(target=self._out, daemon=True).start()
        threading.Thread(target=self._err, daemon=True).start()

    def _out(self):
        for line in self.proc.stdout:
            try:
                ev = json.loads(line)
            except ValueError:
                ev = None
            self.events.put(ev if isinstance(ev, dict) and "type" in ev else {"raw": line.decode(errors="replace")})
        self.events.put(None)

    def _err(self):
        buf = b""
        while True:
            chunk = self.proc.stderr.read1(4096) if hasattr(self.proc.stderr, "read1") else self.proc.stderr.read(1)
            if not chunk:
                break
            buf += chunk
            self.stderr.append(chunk.decode(errors="replace"))

    def send(self, msg):
        self.proc.stdin.write((json.dumps(msg) + "\n").encode())
        self.proc.stdin.flush()

    def next(self, timeout):
        return self.events.get(timeout=timeout)

    def stage_seen(self, name):
        return name in "".join(self.stderr)


def exited_within(b, seconds):
    """True if the process ended within `seconds` of the signal; otherwise kill -9 it and say so."""
    try:
        b.proc.wait(seconds)
        return True
    except subprocess.TimeoutExpired:
        b.proc.kill()
        b.proc.wait()
        return False


def digests(folder: Path):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir() if p.is_file()}


def stem_of(name):
    for suffix in SET:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return None


def hidden_leftovers(folder: Path):
    return sorted(p.name for p in folder.iterdir()
                  if p.name.startswith(".") and (".trellis-tmp-" in p.name or ".partial-" in p.name
                                                 or p.name.startswith(".trellis-commit-")))


def server_cmd(model, out):
    return [sys.executable, "-m", "trellis_backend.server", "--model", str(model), "--device", "cpu",
            "--output-dir", str(out)]


def start_server(model, out, timeout=300):
    b = Backend(server_cmd(model, out))
    ev = b.next(timeout)
    assert ev and ev.get("type") == "ready", (ev, "".join(b.stderr)[-2000:])
    return b


def stop(b):
    if b.proc.poll() is None:
        try:
            b.send({"id": "bye", "type": "shutdown"})
            b.proc.wait(30)
        except Exception:
            b.proc.kill()
            b.proc.wait()


def job_params(kind, out, sidecar, seed):
    params = {"prompt": "a red chair", "seed": seed, "output_dir": str(out), "name": "keep",
              "formats": ["mesh", "gaussians"]}
    if kind == "edit":
        params.update(sidecar_path=str(sidecar), region={"box_min": [-0.5, -0.5, 0.0], "box_max": [0.5, 0.5, 0.5]},
                      name="keep_edit")
    return params


def kill_plan(rng, calib):
    """(stage that starts the clock, delay): half the kills during sampling, half while the files are written."""
    if rng.random() < 0.5:
        return "export", rng.uniform(0, calib["export"])
    return "sampling", rng.uniform(0, calib["sampling"])


def run_server_trial(rng, model, out, sidecar, kind, sig, calib):
    """Start, submit, wait for the planned stage, then kill after a random delay; returns (result files, moment)."""
    b = start_server(model, out)
    rid = f"{kind}-{rng.getrandbits(32):08x}"
    b.send({"id": rid, "type": kind, "params": job_params(kind, out, sidecar, rng.randrange(1000))})
    t_first, result, last_stage = None, None, "load"
    clock, delay = kill_plan(rng, calib)
    deadline = time.time() + 600
    while time.time() < deadline:
        try:
            ev = b.next(timeout=0.005)
        except queue.Empty:
            ev = False
        if ev is None:
            break
        if ev:
            if ev.get("id") == rid and ev.get("type") == "progress":
                last_stage = f"{ev['stage']} {ev['step']}/{ev['total']}"
                started = ev["stage"] == "export" if clock == "export" else ev["stage"] not in ("load", "condition")
                if t_first is None and started:
                    t_first = time.time()
            if ev.get("id") == rid and ev.get("type") in ("result", "error"):
                result = ev
        if t_first is not None and time.time() - t_first >= delay:
            break
        if result is not None:
            break
    b.proc.send_signal(sig)
    hung = not exited_within(b, 60)
    while True:  # events written before the kill may still be in the pipe
        try:
            ev = b.next(timeout=2)
        except queue.Empty:
            break
        if ev is None:
            break
        if ev.get("id") == rid and ev.get("type") in ("result", "error"):
            result = ev
        elif ev.get("id") == rid and ev.get("type") == "progress":
            last_stage = f"{ev['stage']} {ev['step']}/{ev['total']}"
    files = result.get("files", {}) if result and result.get("type") == "result" else {}
    return files, last_stage + (" HUNG after the signal" if hung else "")


def run_cli_trial(rng, model, out, sidecar, kind, sig, calib):
    cmd = [sys.executable, "-m", "trellis_backend", kind, "--model", str(model), "--device", "cpu", "--out", str(out),
           "--json", "--seed", str(rng.randrange(1000))]
    if kind == "edit":
        cmd += ["--from", str(sidecar), "--box=-0.5,-0.5,0,0.5,0.5,0.5", "--prompt", "a red chair"]
    else:
        cmd += ["--prompt", "a red chair", "--name", "keep"]
    b = Backend(cmd)
    clock, delay = kill_plan(rng, calib)
    t_first = None
    deadline = time.time() + 600
    while time.time() < deadline and b.proc.poll() is None:
        started = b.stage_seen("export") if clock == "export" else (b.stage_seen("sparse_structure")
                                                                    or b.stage_seen("slat"))
        if t_first is None and started:
            t_first = time.time()
        if t_first is not None and time.time() - t_first >= delay:
            break
        time.sleep(0.005)
    stage = "finished" if b.proc.poll() is not None else (
        "export" if b.stage_seen("export") else "decode" if b.stage_seen("decode") else
        "slat" if b.stage_seen("slat") else "stage 1")
    b.proc.send_signal(sig)
    hung = not exited_within(b, 60)
    stage += " HUNG after the signal" if hung else ""
    time.sleep(0.2)
    out_text = ""
    while True:
        try:
            ev = b.next(timeout=2)
        except queue.Empty:
            break
        if ev is None:
            break
        out_text += ev.get("raw", json.dumps(ev))
    files = {}
    if b.proc.returncode == 0:
        try:
            files = json.loads(out_text)["files"]
        except (ValueError, KeyError):
            pass
    return files, stage + " | " + "".join(b.stderr).strip().splitlines()[-1][:120] if b.stderr else stage


def calibrate(model, out, sidecar):
    """Seconds from the first sampling step, and from the first export step, to the result (server generate)."""
    b = start_server(model, out)
    b.send({"id": "cal", "type": "generate", "params": job_params("generate", out, sidecar, 0)})
    t_first = t_export = None
    while True:
        ev = b.next(timeout=600)
        if ev.get("type") == "progress" and t_first is None and ev["stage"] not in ("load", "condition"):
            t_first = time.time()
        if ev.get("type") == "progress" and t_export is None and ev["stage"] == "export":
            t_export = time.time()
        if ev.get("id") == "cal" and ev.get("type") in ("result", "error"):
            break
    end = time.time()
    stop(b)
    for f in ev.get("files", {}).values():
        Path(f).unlink()
    return {"sampling": max(end - (t_first or end), 0.5), "export": max(end - (t_export or end), 0.05)}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=24)
    ap.add_argument("--model", default=None, help="model folder (default: a tiny random text model)")
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    rng = random.Random(args.seed)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="kill_trials_"))
    work.mkdir(parents=True, exist_ok=True)
    model = args.model
    if model is None:
        sys.path[:0] = [str(ROOT / "backend"), str(ROOT / "kernels")]
        from trellis_lab.random_model import make_random_model

        model = make_random_model(work / "model", kind="text")
    out = work / "out"
    out.mkdir(exist_ok=True)
    # the user's files: a finished asset (also the edit's source) and an unrelated file of the same stem
    b = start_server(model, out)
    b.send({"id": "first", "type": "generate", "params": job_params("generate", out, None, 7)})
    while True:
        ev = b.next(timeout=600)
        if ev.get("id") == "first" and ev.get("type") in ("result", "error"):
            break
    stop(b)
    assert ev["type"] == "result", ev
    sidecar = Path(ev["files"]["slat"])
    (out / "notes.txt").write_text("the user's own file\n")
    calib = calibrate(model, out, sidecar)
    print(f"workdir {work}; sampling-to-result {calib['sampling']:.1f} s, export-to-result {calib['export']:.2f} s; "
          "half the kills are spread over each window")

    failures, counts = [], Counter()
    for trial in range(args.trials):
        kind = ("generate", "edit")[trial % 2]
        runner = (run_server_trial, run_cli_trial)[(trial // 2) % 2]
        sig = (signal.SIGKILL, signal.SIGINT)[(trial // 4) % 2]
        before = digests(out)
        files, moment = runner(rng, model, out, sidecar, kind, sig, calib)
        after = digests(out)
        changed = [n for n in before if after.get(n) != before[n]]
        reported = {Path(f).name for f in files.values()}
        new = {n for n in after if n not in before and not n.startswith(".")}
        stems = {}
        for n in new:
            stems.setdefault(stem_of(n), set()).add(n)
        incomplete = [s for s, names in stems.items() if s is None or len(names) != len(SET)]
        unreported = [s for s, names in stems.items() if s is not None and not names & reported]
        s = start_server(model, out)  # the next start cleans up
        stop(s)
        left = hidden_leftovers(out)
        ok = not changed and not incomplete and not left and "HUNG" not in str(moment)
        label = f"{runner.__name__[4:10]} {kind:8s} {signal.Signals(sig).name:7s}"
        print(f"trial {trial + 1:2d} {label} killed at {moment!s:60.60} new={len(new):d} "
              f"reported={len(reported)} committed-unreported={len(unreported)} leftovers={len(left)} "
              f"{'ok' if ok else 'FAIL'}", flush=True)
        counts["trials"] += 1
        counts["finished before the kill"] += bool(reported)
        counts["sets committed just before the kill (no result read)"] += len(unreported)
        if not ok:
            failures.append((trial + 1, changed, incomplete, left))
    print("totals:", dict(counts), "failures:", len(failures))
    for f in failures:
        print("FAILED trial %d: changed=%s incomplete=%s leftovers=%s" % f)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
