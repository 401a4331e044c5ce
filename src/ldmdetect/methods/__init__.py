"""Detection methods by name: ``ldmdetect.methods.get("ae")``.

Every subpackage of ``ldmdetect.methods`` is a method package (importing it registers its
method); other distributions add theirs under the entry-point group ``ldmdetect.methods``
(:data:`~ldmdetect.methods.registry.ENTRY_POINT_GROUP`), loaded on first look-up.

A method package holds ``method`` (the method, its transform and feature step, and the
package's public names in its ``__all__``, which the package re-exports), ``settings`` (its
settings and tiny settings), ``cost`` (its per-image cost spec) and ``demo`` (its demo recipe);
what no other method uses lives there too rather than in the shared stages: its feature
functions (``features``) and its network (``model``).
"""

import importlib
import pkgutil

from ldmdetect.methods.configure import make_config
from ldmdetect.methods.defaults import MethodDefaults
from ldmdetect.methods.registry import (
    ENTRY_POINT_GROUP,
    Explanation,
    Method,
    get,
    list_methods,
    normalize,
    register_method,
    unregister_method,
)
from ldmdetect.methods.settings import MethodSettings


def _import_method_packages() -> None:
    for module in pkgutil.iter_modules(__path__):
        if module.ispkg:
            importlib.import_module(f"{__name__}.{module.name}")


_import_method_packages()

__all__ = [
    "ENTRY_POINT_GROUP",
    "Explanation",
    "Method",
    "MethodDefaults",
    "MethodSettings",
    "get",
    "list_methods",
    "make_config",
    "normalize",
    "register_method",
    "unregister_method",
]
