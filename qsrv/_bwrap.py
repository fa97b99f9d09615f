"""The bubblewrap command line, shared by the gateway's job sandbox (``--job-sandbox bwrap``)
and the worker agent's executors of tenants' tasks: the same namespaces, the same read-only
view of the system and of the Python installation, the same masking of secret places.

Each caller adds its own places (a job's directory, an executor's fresh ``/tmp`` and GPU
devices) and what runs inside; this module only builds arguments (no IO but ``stat`` and
``readlink`` on the paths it binds).
"""

from __future__ import annotations

import os
import pwd
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

__all__ = ["KEPT_ENV", "bwrap_argv", "drop_to", "nobody", "parents", "python_roots"]

# What a confined process inherits of its parent's environment (nothing else: it may hold
# the operator's secrets); locale variables (LC_*) too.
KEPT_ENV = ("PATH", "LANG", "LANGUAGE", "TZ", "PYTHONPATH", "PYTHONIOENCODING", "PYTHONUTF8",
            "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "OMP_NUM_THREADS",
            "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "QSRV_PURE_PYTHON")
_QSRV_DIR = Path(__file__).resolve().parent  # qsrv itself: every confined process imports it
_SYSTEM_DIRS = ("usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32")


def bwrap_argv(bwrap: str, *, as_root: bool, root_caps: Sequence[str] = (),
               nested_userns_flag: bool = True, mounts: Sequence[str] = (),
               mounted: Iterable[str] = (), roots: Sequence[str] = (),
               hidden: Iterable[str] = (), after: Sequence[str] = (),
               binds: Sequence[str] = ()) -> list[str]:
    """bubblewrap's arguments up to (not including) ``--chdir``/``--``:

    - new IPC, PID, UTS (and cgroup where possible) namespaces; as root, every capability
      dropped but ``root_caps``; otherwise a user namespace of its own, in which no nested one
      may be made (``--disable-userns``, unless ``nested_userns_flag`` is false: an older
      bubblewrap);
    - the system's directories and ``/etc``, read-only;
    - ``mounts``: the caller's own places (bwrap arguments), which create the paths in
      ``mounted`` (no parent is made for them again);
    - every path of ``roots`` (the Python installation...) read-only, unless a system
      directory already holds it, with traversable parents;
    - every path of ``hidden`` that lies inside a bound path, masked by an empty tmpfs;
    - ``after`` (bwrap arguments), then each path of ``binds`` bound read-write at the same
      place (a Unix socket), with traversable parents.
    """
    argv = [bwrap, "--die-with-parent", "--unshare-ipc", "--unshare-pid", "--unshare-uts",
            "--unshare-cgroup-try"]
    if as_root:
        argv += ["--cap-drop", "ALL"]
        for cap in root_caps:
            argv += ["--cap-add", cap]
    else:
        argv += ["--unshare-user"]
        if nested_userns_flag:
            argv += ["--disable-userns"]
    made: set[str] = set()
    for name in _SYSTEM_DIRS:
        path = Path("/") / name
        if path.is_symlink():
            argv += ["--symlink", os.readlink(path), str(path)]
        elif path.is_dir():
            argv += ["--ro-bind", str(path), str(path)]
            made.add(str(path))
    argv += ["--ro-bind", "/etc", "/etc"]
    made.add("/etc")
    bound = set(made)  # views of the host's; `made` also holds what was created for them
    argv += mounts
    made.update(mounted)
    for root in roots:
        if root == "/" or any(root == m or root.startswith(m + "/") for m in bound):
            continue
        argv += parents(root, made)
        argv += ["--ro-bind", root, root]
        made.add(root)
        bound.add(root)
    for place in hidden:
        real = os.path.realpath(place)
        if any(real == m or real.startswith(m + "/") for m in bound):
            argv += ["--tmpfs", real]  # inside a bound path: masked by an empty one
    argv += after
    for bind in binds:
        argv += parents(bind, made)
        argv += ["--bind", bind, bind]
    return argv


def drop_to(setpriv: str, uid: int, gid: int) -> list[str]:
    """The command prefix that runs what follows as ``uid``/``gid``, with no supplementary
    groups and no_new_privs (inside a sandbox started as root)."""
    return [setpriv, f"--reuid={uid}", f"--regid={gid}", "--clear-groups", "--no-new-privs"]


def nobody() -> tuple[int, int]:
    """(uid, gid) of the ``nobody`` account (65534 where there is none)."""
    try:
        account = pwd.getpwnam("nobody")
    except KeyError:
        return 65534, 65534
    return account.pw_uid, account.pw_gid


def parents(path: str, made: set[str]) -> list[str]:
    """bwrap arguments creating the missing parents of ``path`` as traversable directories
    (bwrap makes them 0700 otherwise, and a process that is not root could not reach
    ``path``); adds them to ``made``."""
    out: list[str] = []
    current = ""
    for part in Path(path).parts[1:-1]:
        current += "/" + part
        if current not in made:
            out += ["--perms", "0755", "--dir", current]
            made.add(current)
    return out


def python_roots(python: str = sys.executable) -> list[str]:
    """The directories a process needs to run ``python`` and import what this one imports:
    the installation's prefixes, ``sys.path``, qsrv itself and editable installs' sources;
    real paths, none inside another."""
    roots = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix,
             str(Path(python).resolve().parent.parent), str(_QSRV_DIR)}
    roots.update(p for p in sys.path if p and os.path.isabs(p))
    roots.update(p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p)
    for finder in sys.meta_path:  # setuptools' editable finders map packages to sources
        module = sys.modules.get(getattr(finder, "__module__", "") or "")
        mapping = getattr(module, "MAPPING", None)
        if isinstance(mapping, dict):
            roots.update(str(v) for v in mapping.values() if isinstance(v, str))
    real = sorted({os.path.realpath(r) for r in roots if os.path.isdir(r)})
    out: list[str] = []
    for root in real:  # parents first: drop what a kept root already holds
        if root == "/" or any(root.startswith(kept + "/") for kept in out):
            continue
        out.append(root)
    return out
