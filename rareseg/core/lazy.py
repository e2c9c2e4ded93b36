"""Package ``__init__``s that import their public names on first use (PEP 562).

A package whose modules pull in heavy libraries, or whose modules sit on both sides of another
package, lists its exports as ``{name: module}`` and imports a module only when one of its names
is first read: ``from rareseg.inference import Predictor`` imports ``rareseg.inference.predictor``
and nothing else of the package.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(package: str, exports: Mapping[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """Module ``__getattr__`` and ``__dir__`` for ``package`` exporting ``exports`` lazily.

    Args:
        package: the package's ``__name__``.
        exports: public name -> absolute name of the module defining it.

    Returns:
        ``(__getattr__, __dir__)`` to assign in the package's ``__init__``.
    """

    def __getattr__(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(exports[name]), name)

    def __dir__() -> list[str]:
        return sorted(set(exports) | set(vars(sys.modules[package])))

    return __getattr__, __dir__
