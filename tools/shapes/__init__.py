"""The tools that made the bundled ``pixgen/shapes`` and ``pixgen/shapes-vit`` CLIPs.

Data generation (``python -m tools.shapes.data``), training (``python -m tools.shapes.train``)
and evaluation (``python -m tools.shapes.evaluate``). pixgen itself never imports them: the
bundled models load through the CLIP service from ``pixgen/models/bundled/``.
"""
