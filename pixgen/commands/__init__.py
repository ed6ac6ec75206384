"""CLI command groups. Each module has ``register(app: typer.Typer) -> None``.

Options that several commands take are declared here once.
"""

from __future__ import annotations

from typing import Annotated

import typer

OfflineOption = Annotated[
    bool, typer.Option("--offline", help="never download weights (also PIXGEN_OFFLINE=1)")
]
QuietOption = Annotated[
    bool,
    typer.Option("--quiet", "-q", help="no progress bar and no notices (run.json keeps them)"),
]
