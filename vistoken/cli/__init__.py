"""The ``vistoken`` command line: compress a video's visual tokens and show what merged.

Commands::

    vistoken compress PATH [options]   decode, encode, compress; write summary.json + sheet.png
    vistoken demo [options]            the same on the bundled bigbuckbunny.mp4 clip
    vistoken methods                   list the registered compression methods
    vistoken bench fidelity [options]  every method at every ratio: fidelity.md/.csv/.png
    vistoken flops [options]           prefill FLOPs of a video VLM, full vs compressed
    vistoken eval [options]            accuracy of methods x retentions on the synthetic
                                       benchmark with the reference VLM: results.json/.csv/.png
    vistoken train-reference [options] train that reference VLM from scratch (resumable)

Exit status: 0 on success, 2 for a usage error (bad flag or value, unknown method or option
or an option value the method's registry entry rejects, detected before any work is done), 1
for a runtime input error (missing, unreadable or corrupt input file, an input over the
limits --max-pixels / --max-frames / --max-bytes, output folder that is a file), 130 when
interrupted. Errors are reported as one ``vistoken: error: ...`` line on stderr; ``--debug``
shows the traceback instead.

Modules: ``app`` (the parser, :func:`main`, error handling), ``common`` (argument types, the
shared flags, checks, JSON output), one per command: ``compress`` (compress and demo),
``methods``, ``bench``, ``flops``, ``eval``, ``train`` (train-reference).
Files to tokens is :func:`vistoken.pipeline.encode`.

Start-up: this package imports only the standard library at import time (``import vistoken``
is lazy too; so is every module of this package at its top level), and :func:`main` imports
everything else (torch, PyAV, the methods) inside its error handling, so Ctrl-C at any point
after the interpreter started, including during ``import torch``, exits 130 with one line.
"""

from __future__ import annotations

# Only the standard library below: the console script imports this package before main()
# runs, outside its KeyboardInterrupt handling; heavy imports happen inside main().
from .app import build_parser, main
from .common import UsageError

__all__ = ["UsageError", "build_parser", "main"]
