"""Built-in compression methods, one file each; importing this package registers them all.

(Named ``compressors`` so that it does not shadow the public function ``vt.methods``.)
"""

from . import (  # noqa: F401
    divprune,
    dycoke,
    evs,
    fastv,
    pool,
    random,
    scc,
    tome,
    uniform,
    vidcom2,
    visionzip,
)
