"""Checking pip requirements against what is installed, for programs that declare them.

qsrv runs programs and tasks in the Python environment of the gateway and the workers; it
installs nothing. A Quantum Serverless function's ``dependencies`` (or a task's ``pip``) are
therefore checked, not installed: each must name an installed distribution whose version meets
the specifier. What is missing is reported by name, so the operator knows what to install.
"""

from __future__ import annotations

import importlib.metadata
import re

__all__ = ["missing_requirements"]

_NAME = re.compile(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(\[[^\]]*\])?\s*(.*)$")


def missing_requirements(requirements: list[str]) -> list[str]:
    """The requirements (``"numpy"``, ``"qiskit>=1.0"``) that the environment does not meet."""
    missing: list[str] = []
    for requirement in requirements:
        text = requirement.split(";", 1)[0].strip()  # environment markers are not evaluated
        match = _NAME.match(text)
        if not text or match is None:
            missing.append(requirement)
            continue
        name, _, spec = match.groups()
        try:
            installed = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            missing.append(requirement)
            continue
        if spec.strip() and not _satisfies(installed, spec.strip()):
            missing.append(f"{requirement} (installed: {installed})")
    return missing


def _satisfies(version: str, spec: str) -> bool:
    try:
        from packaging.specifiers import InvalidSpecifier, SpecifierSet
        from packaging.version import InvalidVersion, Version
    except ImportError:  # without packaging, a specifier is trusted rather than refused
        return True
    try:
        return Version(version) in SpecifierSet(spec)
    except (InvalidSpecifier, InvalidVersion):
        return False
