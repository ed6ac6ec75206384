"""The plugin kinds: one table row per kind, used by the loader, the recipe loader, the
docs generator and ``pixgen plugins``.

Adding a kind is a row here, its base class (:mod:`pixgen.plugin`), its entry model and
its recipe section (:mod:`pixgen.schema`; a test checks that every row's section is a
field of :class:`~pixgen.schema.Recipe`), and its registration hook
(:mod:`pixgen.hookspecs`).
"""

from __future__ import annotations

from dataclasses import dataclass

from pixgen.plugin import Generator, Loss, Output, Plugin
from pixgen.schema import GeneratorEntry, LossEntry, OutputEntry, PluginEntry


@dataclass(frozen=True)
class PluginKind:
    """What pixgen knows about one kind of plugin."""

    name: str  # "loss": Plugin.kind, and what messages call it
    plural: str  # "losses"
    base: type[Plugin]  # a registered class must subclass it
    hook: str  # the registration hook: register_losses(register)
    section: str  # the recipe field holding its entries: losses
    entry: type[PluginEntry]  # the entry's model (its own keys: use, weight, label)
    many: bool  # a list of entries (losses) or one (generator)

    @property
    def article(self) -> str:
        return "an" if self.name[0] in "aeiou" else "a"


PLUGIN_KINDS: dict[str, PluginKind] = {
    kind.name: kind
    for kind in (
        PluginKind(
            "generator",
            "generators",
            Generator,
            "register_generators",
            "generator",
            GeneratorEntry,
            many=False,
        ),
        PluginKind("loss", "losses", Loss, "register_losses", "losses", LossEntry, many=True),
        PluginKind(
            "output", "outputs", Output, "register_outputs", "outputs", OutputEntry, many=True
        ),
    )
}
"""Every plugin kind by name, in the order a step uses them."""

KIND_OF_SECTION: dict[str, PluginKind] = {kind.section: kind for kind in PLUGIN_KINDS.values()}
