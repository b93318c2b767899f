"""'Set up backend': create a venv for the backend and pip-install its requirements.

Runs in a worker thread (pip can take many minutes) and records every output
line, so the preferences can show live progress and, on failure, the step
that failed with the last lines pip printed -- the peers' most common
complaint is a dependency install that fails silently. The module keeps the
one current run, so the preferences, the panel and the job controller's timer
all read the same state without importing each other.
"""

import collections
import os
import subprocess
import threading
import time

from . import paths

VERIFY_CODE = ("import importlib, sys; mods = sys.argv[1:]; [importlib.import_module(m) for m in mods]; "
               "print('verified: ' + ', '.join(mods))")
DEFAULT_VERIFY = ("torch", "numpy", "safetensors", "trimesh", "plyfile", "PIL", "trellis_backend.server")


def _requirements_args(requirements):
    """pip arguments for the backend's requirements (bundled requirements.txt, else a checkout's pyproject)."""
    if requirements:
        return ["-r", requirements]
    bundled = paths.requirements_file()
    if bundled:
        return ["-r", bundled]
    repo = paths.repo_dir()
    if os.path.exists(os.path.join(repo, "pyproject.toml")):
        return [repo]
    raise FileNotFoundError("no requirements.txt next to the bundled backend and no pyproject.toml found")


class BackendSetup:
    """One setup run; ``state`` goes running -> done | failed."""

    def __init__(self, base_python, venv_dir, requirements=None, verify=DEFAULT_VERIFY, pip_args=()):
        self.base_python = base_python
        self.venv_dir = venv_dir
        self.requirements = requirements
        self.verify = tuple(verify)
        self.pip_args = tuple(pip_args)
        self.lines = collections.deque(maxlen=400)
        self.state = "idle"
        self.step = ""
        self.error = ""
        self.hint = ""
        self.started = None
        self._thread = None
        self._proc = None

    @property
    def python(self):
        return paths.venv_python(self.venv_dir)

    def start(self):
        self.state, self.started = "running", time.time()
        self._thread = threading.Thread(target=self._run, name="trellis-setup", daemon=True)
        self._thread.start()

    def wait(self, timeout=None):
        if self._thread:
            self._thread.join(timeout)
        return self.state

    def cancel(self):
        proc = self._proc
        if proc and proc.poll() is None:
            proc.terminate()

    def snapshot(self):
        return {"state": self.state, "step": self.step, "lines": list(self.lines)[-12:],
                "error": self.error, "hint": self.hint, "python": self.python}

    def _steps(self):
        env = dict(os.environ)
        for var in ("PYTHONHOME", "PYTHONPATH", "PYTHONSTARTUP"):
            env.pop(var, None)
        verify_env = dict(env, PYTHONPATH=os.pathsep.join(paths.backend_pythonpath()))
        steps = []
        if not os.path.exists(self.python):
            steps.append(("Creating environment", [self.base_python, "-m", "venv", self.venv_dir], env))
        steps.append(("Installing requirements (this can take several minutes)",
                      [self.python, "-m", "pip", "install", "--disable-pip-version-check", "--progress-bar", "off",
                       *self.pip_args, *_requirements_args(self.requirements)], env))
        if self.verify:
            steps.append(("Checking the installation", [self.python, "-c", VERIFY_CODE, *self.verify], verify_env))
        return steps

    def _run(self):
        try:
            for title, cmd, env in self._steps():
                self.step = title
                self.lines.append("== " + title)
                self._proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
                for raw in iter(self._proc.stdout.readline, b""):
                    line = raw.decode("utf-8", "replace").rstrip()
                    if line:
                        self.lines.append(line)
                code = self._proc.wait()
                if code != 0:
                    self._fail(title, code)
                    return
            self.lines.append("Backend environment ready: " + self.python)
            self.state = "done"
        except Exception as exc:  # e.g. the base interpreter does not exist
            self.error = "Backend setup failed: %s" % exc
            self.hint = "Set 'Python for setup' in the add-on preferences to a Python 3.10+ interpreter with venv."
            self.state = "failed"

    def _fail(self, title, code):
        tail = [ln for ln in self.lines if not ln.startswith("==")][-3:]
        self.error = "Backend setup failed while %s (exit code %s): %s" % (
            title.split(" (")[0].lower(), code, " | ".join(tail)[-400:])
        if title.startswith("Creating"):
            self.hint = ("That Python cannot create a venv. Install python3-venv or set 'Python for setup' "
                         "to another Python 3.10+ interpreter.")
        elif title.startswith("Installing"):
            self.hint = ("pip could not install the backend requirements. Check the internet connection and "
                         "free disk space (torch needs several GB), then run 'Set up backend' again.")
        else:
            self.hint = "The environment was created but a package does not import; see the lines above."
        self.state = "failed"


_current = None


def start(base_python, venv_dir, requirements=None, verify=None):
    """Start a set-up run in the background; refuses while one is still running."""
    global _current
    if is_running():
        raise RuntimeError("Backend setup is already running.")
    kwargs = {} if verify is None else {"verify": verify}
    _current = BackendSetup(base_python, venv_dir, requirements=requirements, **kwargs)
    _current.start()
    return _current


def is_running():
    return _current is not None and _current.state == "running"


def snapshot():
    """The current run's state for drawing ({} when none ran in this session)."""
    return _current.snapshot() if _current is not None else {}


def cancel():
    if _current is not None:
        _current.cancel()
