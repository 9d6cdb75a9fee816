"""Built-in compression methods; importing this package registers them all."""

from . import scc  # noqa: F401
from .divprune import divprune as _divprune  # noqa: F401
from .dycoke import dycoke as _dycoke  # noqa: F401
from .evs import evs as _evs  # noqa: F401
from .inmodel import fastv as _fastv  # noqa: F401
from .pool import pool as _pool  # noqa: F401
from .random import random_select as _random  # noqa: F401
from .tome import tome as _tome  # noqa: F401
from .uniform import uniform as _uniform  # noqa: F401
from .vidcom2 import vidcom2 as _vidcom2  # noqa: F401
