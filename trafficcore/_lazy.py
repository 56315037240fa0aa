"""Package roots that load their modules on first use.

Why: `trafficcore --help` imports every command module, and a command module imports its package
root first. A root that re-exports its whole API eagerly (the signal lab pulls in scipy and SUMO,
the API pulls in FastAPI, the data root pulls in DuckDB) made every command pay for every library
(issue 15). A lazy root keeps `from trafficcore.signal import analyse` working unchanged while
importing `trafficcore.signal.analysis` only when `analyse` is first asked for.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Mapping
from types import ModuleType
from typing import Any


def lazy_exports(package: str, exports: Mapping[str, str]) -> None:
    """Make package `package` resolve each name in `exports` from its submodule on first access.

    One subtlety keeps the eager behaviour: when a name is also a submodule's name (the function
    `optimise` in module `trafficcore.signal.optimise`), importing that submodule makes Python set
    the package attribute to the module. An eager root rebound it to the function at once; here the
    package's `__setattr__` stores the function instead, so `from trafficcore.signal import optimise`
    gives the function whichever was imported first.
    """
    exports = dict(exports)

    class LazyPackage(ModuleType):
        def __getattr__(self, name: str) -> Any:
            module = exports.get(name)
            if module is None:
                raise AttributeError(f"module {package!r} has no attribute {name!r}")
            value = getattr(importlib.import_module(module), name)
            ModuleType.__setattr__(self, name, value)
            return value

        def __dir__(self) -> list[str]:
            return sorted(set(exports) | set(vars(self)))

        def __setattr__(self, name: str, value: Any) -> None:
            if isinstance(value, ModuleType) and exports.get(name) == value.__name__ and hasattr(value, name):
                value = getattr(value, name)
            ModuleType.__setattr__(self, name, value)

    sys.modules[package].__class__ = LazyPackage
