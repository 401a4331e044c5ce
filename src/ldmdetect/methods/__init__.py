"""Detection methods by name: ``ldmdetect.methods.get("ae")``."""

from ldmdetect.methods import ae as _ae  # noqa: F401  (registers "ae")
from ldmdetect.methods import aeroblade as _aeroblade  # noqa: F401  (registers "aeroblade")
from ldmdetect.methods import dire as _dire  # noqa: F401  (registers "dire")
from ldmdetect.methods import fakeinversion as _fi  # noqa: F401  (registers "fakeinversion")
from ldmdetect.methods import lare2 as _lare2  # noqa: F401  (registers "lare2")
from ldmdetect.methods import vfm_probe as _vfm_probe  # noqa: F401  (registers "vfm-probe")
from ldmdetect.methods.registry import Method, get, list_methods, normalize, register_method

__all__ = ["Method", "get", "list_methods", "normalize", "register_method"]
