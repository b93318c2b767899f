"""scripts/setup.sh waits for a busy package manager (a fake held apt lock) and says who holds it."""

import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WAIT = os.path.join(ROOT, "scripts", "wait_for_apt.sh")

HOLD = r"""
import fcntl, sys, time
fh = open(sys.argv[1], "w")
fcntl.lockf(fh, fcntl.LOCK_EX)  # apt and dpkg lock with fcntl(F_SETLK) too
print("held", flush=True)
time.sleep(float(sys.argv[2]))
"""


def _hold(path, seconds):
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(path), str(seconds)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def _wait(locks, limit):
    env = dict(os.environ, TRELLIS_APT_LOCKS=" ".join(str(p) for p in locks), TRELLIS_APT_WAIT_S=str(limit))
    t0 = time.time()
    proc = subprocess.run(["bash", WAIT], env=env, capture_output=True, text=True, timeout=60)
    return proc, time.time() - t0


def test_waits_for_a_held_lock_and_names_the_holder(tmp_path):
    free, held = tmp_path / "lock-frontend", tmp_path / "lock"
    free.touch()
    holder = _hold(held, 3)
    try:
        proc, took = _wait([free, held, tmp_path / "absent"], 60)
    finally:
        holder.wait()
    assert proc.returncode == 0, proc.stderr
    assert took >= 1.5  # it waited for the holder to let go
    assert "waiting for the package manager: %s held by process %d" % (held, holder.pid) in proc.stderr


def test_gives_up_with_a_clear_message(tmp_path):
    held = tmp_path / "lock"
    holder = _hold(held, 20)
    try:
        proc, took = _wait([held], 2)
    finally:
        holder.kill()
        holder.wait()
    assert proc.returncode == 1 and took < 15
    assert "gave up after 2s" in proc.stderr and "run setup again" in proc.stderr


def test_free_locks_pass_at_once(tmp_path):
    (tmp_path / "lock").touch()
    proc, took = _wait([tmp_path / "lock"], 5)
    assert proc.returncode == 0 and proc.stderr == "" and took < 3


def test_setup_uses_the_wait():
    text = open(os.path.join(ROOT, "scripts", "setup.sh")).read()
    assert "source scripts/wait_for_apt.sh" in text
    assert text.index("wait_for_apt_locks") < text.index("apt-get update")
