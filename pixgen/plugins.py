"""Plugin discovery and the typed registry of generators, losses and outputs.

One explicit, idempotent loader builds a pluggy ``PluginManager``: the hook specs, then
every module in the ``pixgen`` entry-point group (the built-ins enter this way too), then
plugins passed in by code, then a recipe's local plugin files. The registration hooks
fill a :class:`Registry` keyed by name; a name registered twice is an error naming both
sources.

Environment (for debugging):
- ``PIXGEN_LOAD_PLUGINS=a,b`` loads only those entry points (by entry-point name);
  an empty value loads none.
- ``PIXGEN_BLOCK_PLUGINS=a,b`` blocks those entry points.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib.util
import inspect
import os
import sys
import traceback
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import pluggy

from pixgen import hookspecs
from pixgen.errors import PixgenError, PluginLoadError, PluginRunError, UnknownPlugin
from pixgen.kinds import PLUGIN_KINDS
from pixgen.options import PluginOptions
from pixgen.plugin import Plugin

if TYPE_CHECKING:
    from pixgen.schema import Recipe

ENTRY_POINT_GROUP = "pixgen"


@dataclass(frozen=True)
class PluginInfo:
    """A registered plugin class and where it came from."""

    name: str
    kind: str
    cls: type[Plugin]
    source: str  # "pixgen 0.1.0", "file /abs/my_loss.py", "object my_module"
    file: str | None

    @property
    def summary(self) -> str:
        return self.cls.summary_line()


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """``"; did you mean 'x'?"`` or ``""``."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


@dataclass
class Registry:
    """Plugin classes by name, one name space for all kinds."""

    plugins: dict[str, PluginInfo] = field(default_factory=dict)

    def add(self, info: PluginInfo) -> None:
        existing = self.plugins.get(info.name)
        if existing is not None:
            if existing.cls is info.cls:
                return
            raise PluginLoadError(
                f"two plugins are named {info.name!r}: a {existing.kind} from {existing.source}"
                f" and a {info.kind} from {info.source}; rename one or block one with "
                "PIXGEN_BLOCK_PLUGINS"
            )
        self.plugins[info.name] = info

    def names(self, kind: str | None = None) -> list[str]:
        return sorted(n for n, i in self.plugins.items() if kind is None or i.kind == kind)

    def get(self, name: str, kind: str | None = None) -> PluginInfo:
        """The plugin ``name`` (of ``kind``, if given); :class:`UnknownPlugin` naming the
        choices, with a did-you-mean, when there is none."""
        info = self.plugins.get(name)
        if info is not None and (kind is None or info.kind == kind):
            return info
        choices = self.names(kind)
        listing = ", ".join(choices) or "none"
        if info is not None and kind is not None:
            wanted = PLUGIN_KINDS[kind]
            found = PLUGIN_KINDS[info.kind]
            raise UnknownPlugin(
                f"{name!r} is {found.article} {found.name}, not {wanted.article} {wanted.name}; "
                f"{wanted.plural}: {listing}"
            )
        what = f"{kind} plugin" if kind else "plugin"
        raise UnknownPlugin(
            f"unknown {what} {name!r}{did_you_mean(name, choices)} (available: {listing})"
        )

    def options_of(self, kind: str, name: str) -> type[PluginOptions]:
        """For recipe validation (:class:`pixgen.schema.PluginLookup`)."""
        try:
            return self.get(name, kind).cls.Options
        except UnknownPlugin as exc:
            raise ValueError(exc.message) from None


@dataclass
class PluginSet:
    """A loaded plugin manager and the registry its plugins filled."""

    pm: pluggy.PluginManager
    registry: Registry
    sources: dict[str, str]  # pluggy plugin name -> human-readable source

    @property
    def hook(self) -> Any:
        return self.pm.hook

    def has_observers(self, hook_name: str) -> bool:
        return bool(getattr(self.pm.hook, hook_name).get_hookimpls())

    def notify(self, hook_name: str, **kwargs: Any) -> None:
        """Call an observer hook (``run_started`` …); a failure names the plugin that raised."""
        hook = getattr(self.pm.hook, hook_name)
        try:
            hook(**kwargs)
        except (PixgenError, KeyboardInterrupt):
            raise
        except Exception as exc:
            raise PluginRunError(
                f"{self._raised_in(hook, exc)} failed in {hook_name}: {type(exc).__name__}: {exc}"
            ) from exc

    def _raised_in(self, hook: Any, exc: BaseException) -> str:
        """Which plugin's implementation of ``hook`` is on the traceback of ``exc``."""
        by_code = {
            impl.function.__code__: impl
            for impl in hook.get_hookimpls()
            if hasattr(impl.function, "__code__")
        }
        tb = exc.__traceback__
        while tb is not None:
            impl = by_code.get(tb.tb_frame.f_code)
            if impl is not None:
                return f"plugin {self.sources.get(impl.plugin_name, impl.plugin_name)}"
            tb = tb.tb_next
        return "a plugin"


def _entry_point_filter() -> tuple[set[str] | None, set[str]]:
    only = os.environ.get("PIXGEN_LOAD_PLUGINS")
    allowed = None if only is None else {p.strip() for p in only.split(",") if p.strip()}
    blocked = {p.strip() for p in os.environ.get("PIXGEN_BLOCK_PLUGINS", "").split(",") if p}
    return allowed, blocked


def _load_entry_points(pm: pluggy.PluginManager, sources: dict[str, str]) -> None:
    """Register every module of the ``pixgen`` entry-point group (built-ins included)."""
    allowed, blocked = _entry_point_filter()
    for name in blocked:
        pm.set_blocked(name)
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        if (allowed is not None and ep.name not in allowed) or pm.is_blocked(ep.name):
            continue
        if pm.get_plugin(ep.name) is not None:
            continue
        dist = f"{ep.dist.name} {ep.dist.version}" if ep.dist else "unknown package"
        try:
            module = ep.load()
        except Exception as exc:
            raise PluginLoadError(
                _describe_load_failure(f"plugin {ep.name!r} from {dist} ({ep.value})", exc)
            ) from exc
        _register(pm, module, ep.name, f"plugin {ep.name!r} from {dist}")
        sources[ep.name] = dist


_HOOK_NAMES = sorted(
    name for name in dir(hookspecs) if hasattr(getattr(hookspecs, name), "pixgen_spec")
)


def _register(pm: pluggy.PluginManager, plugin: object, name: str, what: str) -> None:
    """``pm.register``, after checking the plugin's hooks: a misspelt hook, a hook
    function without its ``@pixgen.hookimpl`` mark, or a plugin with no hook at all is
    the plugin's error, named with a did-you-mean."""
    _check_hooks(plugin, what)
    try:
        pm.register(plugin, name=name)
    except pluggy.PluginValidationError as exc:
        raise PluginLoadError(f"{what} is invalid: {exc}") from exc


def _check_hooks(plugin: object, what: str) -> None:
    marked: list[str] = []
    for attr in dir(plugin):
        opts = getattr(getattr(plugin, attr, None), "pixgen_impl", None)
        if isinstance(opts, dict):
            marked.append(opts.get("specname") or attr)
    for attr in marked:
        if attr not in _HOOK_NAMES:
            raise PluginLoadError(
                f"{what}: {attr!r} is marked @pixgen.hookimpl but pixgen has no such hook"
                f"{did_you_mean(attr, _HOOK_NAMES)} (hooks: {', '.join(_HOOK_NAMES)})"
            )
    if marked:
        return
    unmarked = [attr for attr in _HOOK_NAMES if callable(getattr(plugin, attr, None))]
    if unmarked:
        raise PluginLoadError(
            f"{what}: {unmarked[0]}() is not marked @pixgen.hookimpl, so pixgen would never "
            "call it; put @pixgen.hookimpl on the line above its def"
        )
    raise PluginLoadError(
        f"{what} implements no pixgen hook: a plugin registers its classes in a function "
        "such as register_losses(register), marked @pixgen.hookimpl"
    )


def _describe_load_failure(what: str, exc: BaseException) -> str:
    where = ""
    frames = traceback.extract_tb(exc.__traceback__)
    if isinstance(exc, SyntaxError) and exc.filename:
        where = f" ({exc.filename}, line {exc.lineno})"
    elif frames:
        last = frames[-1]
        where = f" ({last.filename}, line {last.lineno})"
    return f"{what} failed to load{where}: {type(exc).__name__}: {exc}"


# Loaded plugin files by path and (mtime, size): loading a recipe and running it import a
# file once, so the classes validated against are the classes that run.
_FILE_MODULES: dict[Path, tuple[tuple[int, int], ModuleType]] = {}


def load_plugin_file(path: str | os.PathLike[str]) -> ModuleType:
    """Import a local plugin file by path (a recipe's ``plugins:`` entry); a file already
    imported and unchanged since is not imported again."""
    file = Path(path).resolve()
    if not file.is_file():
        raise PluginLoadError(f"plugin file not found: {file}")
    stat = file.stat()
    stamp = (stat.st_mtime_ns, stat.st_size)
    cached = _FILE_MODULES.get(file)
    if cached is not None and cached[0] == stamp:
        return cached[1]
    module = _import_file(file)
    _FILE_MODULES[file] = (stamp, module)
    return module


def _import_file(file: Path) -> ModuleType:
    digest = hashlib.sha1(str(file).encode()).hexdigest()[:10]
    module_name = f"pixgen_local_{file.stem}_{digest}"
    spec = importlib.util.spec_from_file_location(module_name, file)
    if spec is None or spec.loader is None:
        raise PluginLoadError(f"plugin file {file} is not a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        sys.modules.pop(module_name, None)
        raise PluginLoadError(_describe_load_failure(f"plugin file {file}", exc)) from exc
    return module


def _class_file(cls: type) -> str | None:
    try:
        return inspect.getsourcefile(cls)
    except (TypeError, OSError):
        return None


def _fill_registry(plugins: PluginSet) -> None:
    pm = plugins.pm
    for plugin_kind in PLUGIN_KINDS.values():
        kind, base, hook_name = plugin_kind.name, plugin_kind.base, plugin_kind.hook
        hook = getattr(pm.hook, hook_name)
        for impl in hook.get_hookimpls():
            source = plugins.sources.get(impl.plugin_name, f"object {impl.plugin_name}")

            def register(
                cls: type, *, _kind: str = kind, _base: type[Plugin] = base, _source: str = source
            ) -> None:
                if not (isinstance(cls, type) and issubclass(cls, _base)):
                    article = PLUGIN_KINDS[_kind].article
                    raise PluginLoadError(
                        f"{_source} registered {cls!r} as {article} {_kind}, but it is not a "
                        f"subclass of pixgen.{_base.__name__}"
                    )
                plugin_class: type[Plugin] = cls  # checked just above
                if not getattr(plugin_class, "name", ""):
                    raise PluginLoadError(f"{_source}: {plugin_class.__name__} has no 'name'")
                plugins.registry.add(
                    PluginInfo(plugin_class.name, _kind, plugin_class, _source, _class_file(cls))
                )

            others = [p for p in pm.get_plugins() if p is not impl.plugin]
            caller = pm.subset_hook_caller(hook_name, remove_plugins=others)
            try:
                caller(register=register)
            except PluginLoadError:
                raise
            except Exception as exc:
                raise PluginLoadError(
                    _describe_load_failure(f"plugin {impl.plugin_name!r} ({source})", exc)
                ) from exc


def load_plugins(
    files: Sequence[str | os.PathLike[str]] = (),
    extra: Sequence[object] = (),
) -> PluginSet:
    """Build a plugin set: entry points, then ``extra`` plugin objects, then ``files``."""
    pm = pluggy.PluginManager(ENTRY_POINT_GROUP)
    pm.add_hookspecs(hookspecs)
    sources: dict[str, str] = {}
    _load_entry_points(pm, sources)
    for obj in extra:
        name = getattr(obj, "__name__", None) or f"{type(obj).__name__}@{id(obj):x}"
        if pm.is_registered(obj):
            continue
        _register(pm, obj, name, f"plugin {name!r}")
        obj_file = getattr(obj, "__file__", None)
        sources[name] = f"file {obj_file}" if obj_file else f"object {name}"
    for path in files:
        module = load_plugin_file(path)
        name = f"file:{Path(path).resolve()}"
        if pm.get_plugin(name) is None:
            _register(pm, module, name, f"plugin file {Path(path).resolve()}")
        sources[name] = f"file {Path(path).resolve()}"
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        raise PluginLoadError(f"plugin {exc.plugin!r} is invalid: {exc}") from exc
    plugins = PluginSet(pm, Registry(), sources)
    _fill_registry(plugins)
    return plugins


def plugins_for(recipe: Recipe, extra: Sequence[object] = ()) -> PluginSet:
    """The plugins a recipe runs with: the installed ones, ``extra`` objects and the
    recipe's own ``plugins:`` files."""
    return load_plugins(files=recipe.plugins, extra=extra)


_DEFAULT: PluginSet | None = None


def default_plugins() -> PluginSet:
    """The installed plugins (entry points only), loaded once per process."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = load_plugins()
    return _DEFAULT
