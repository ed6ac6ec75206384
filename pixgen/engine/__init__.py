"""The optimisation engine, split by what a maintainer looks for:

- ``loop.py``: :class:`Engine`, which builds a run's plugins and runs the loop (start here);
- ``step.py``: one step: render, score, back-propagate; the compile fallback;
- ``history.py``: the loss history kept on the device; the NaN check; early stop;
- ``build.py``: building the generator, losses, outputs, optimiser and animator;
- ``optim.py``: optimisers and learning-rate schedules;
- ``run_folder.py``: the run folder, ``final.png`` and ``run.json``;
- ``resume_state.py``: writing ``checkpoint.pt`` and putting a run back as it has it;
- ``guards.py``: Ctrl-C and SIGTERM, cuDNN's process-wide flag;
- ``devices.py``: what ``device:`` and ``precision:`` become;
- ``blame.py``: an error in plugin code as one message naming the plugin;
- ``api.py``: :func:`run` and :func:`resume`, the public entry points the CLI calls.
"""

from __future__ import annotations

from pixgen.engine.api import resume, run
from pixgen.engine.devices import resolve_device, resolve_precision
from pixgen.engine.loop import Engine
from pixgen.engine.optim import lr_factor
from pixgen.engine.result import RunResult
from pixgen.engine.run_folder import make_run_dir

__all__ = [
    "Engine",
    "RunResult",
    "lr_factor",
    "make_run_dir",
    "resolve_device",
    "resolve_precision",
    "resume",
    "run",
]
