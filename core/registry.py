"""Plugin discovery and the kind registry.

pluggy isolates nothing: ``load_setuptools_entrypoints`` aborts on the first broken plugin and a raising hookimpl
stops the hooks after it. codecfw therefore loads each entry point of the group ``codecfw.plugins`` on its own
and calls each plugin's hookimpls on their own, recording failures in :class:`PluginInfo` instead of crashing.
codecfw's built-in plugins are discovered through the very same entry points as a third party's.

Environment variables (read when the registry is created):

``CODECFW_DISABLE_PLUGIN_AUTOLOAD=1``
    load no entry points at all (tests register what they need by hand).
``CODECFW_LOAD_PLUGINS=a,b``
    allow-list: load only these entry-point names.
``CODECFW_DISABLE_PLUGINS=x,y``
    block-list: skip these entry-point names (shown as ``blocked``).
``CODECFW_STRICT_PLUGINS=1``
    any plugin failure raises :class:`PluginError` (for CI).
"""

from __future__ import annotations

import importlib.metadata as md
import os
import threading
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Callable

import pluggy
from pydantic import BaseModel

from . import hookspecs
from .hookspecs import SLOT_HOOKS

ENTRY_POINT_GROUP = "codecfw.plugins"
BUILTIN_DISTRIBUTION = "codecfw"


def _dist_name(ep: Any) -> str:
    return ep.dist.name if getattr(ep, "dist", None) is not None else ""


class PluginError(RuntimeError):
    """A plugin could not be loaded or registered, or two plugins claim the same kind."""


@dataclass
class Registration:
    """One registered kind: its slot, the pydantic config class, how to build it, and who registered it."""

    slot: str
    kind: str
    config: type[BaseModel]
    factory: Callable[..., Any] | None
    plugin: str
    distribution: str
    version: str
    capabilities: dict[str, Any] = field(default_factory=dict)

    def build(self, config: BaseModel, context: Any = None) -> Any:
        if self.factory is not None:
            return self.factory(config, context)
        build = getattr(config, "build", None)
        if build is None:
            raise PluginError(f"{self.slot} kind {self.kind!r} ({self.distribution}) has neither a factory nor a "
                              f"config.build(context) method")
        return build(context)


@dataclass
class PluginInfo:
    """Load status of one plugin (one entry point, or one module registered by hand)."""

    name: str
    distribution: str
    version: str
    module: str
    status: str = "ok"  # ok | failed | blocked
    error: str | None = None
    kinds: dict[str, list[str]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "distribution": self.distribution, "version": self.version,
                "module": self.module, "status": self.status, "error": self.error, "kinds": self.kinds}


def _env_list(name: str) -> list[str] | None:
    value = os.environ.get(name)
    if value is None or not value.strip():
        return None
    return [v.strip() for v in value.split(",") if v.strip()]


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


class Registry:
    """All kinds registered by all plugins, per slot.

    ``Registry()`` is empty; :func:`get_registry` returns the process-wide registry with entry points loaded.
    """

    def __init__(self, strict: bool | None = None) -> None:
        self.strict = _env_flag("CODECFW_STRICT_PLUGINS") if strict is None else strict
        self.pm = pluggy.PluginManager("codecfw")
        self.pm.add_hookspecs(hookspecs)
        self.plugins: dict[str, PluginInfo] = {}
        self._kinds: dict[str, dict[str, Registration]] = {slot: {} for slot in SLOT_HOOKS}

    # -- discovery -------------------------------------------------------------------------------------------
    def load_entry_points(self) -> None:
        """Load every entry point of ``codecfw.plugins`` one by one, honouring the environment variables."""
        if _env_flag("CODECFW_DISABLE_PLUGIN_AUTOLOAD"):
            return
        allow = _env_list("CODECFW_LOAD_PLUGINS")
        block = set(_env_list("CODECFW_DISABLE_PLUGINS") or [])
        # codecfw's own plugins load first: a third party that registers a built-in kind, or reuses a built-in
        # entry-point name, is the failed duplicate (naming both), never the one that silently replaces it.
        eps = sorted(md.entry_points(group=ENTRY_POINT_GROUP),
                     key=lambda e: (_dist_name(e) != BUILTIN_DISTRIBUTION, _dist_name(e), e.name))
        for ep in eps:
            dist = ep.dist.name if ep.dist is not None else "<unknown>"
            version = ep.dist.version if ep.dist is not None else "?"
            info = PluginInfo(name=ep.name, distribution=dist, version=version, module=ep.value)
            if ep.name in self.plugins:  # the same entry point name from two distributions
                other = self.plugins[ep.name]
                self._fail(info, f"entry point name {ep.name!r} of {dist} {version} is also used by "
                                 f"{other.distribution} {other.version}")
                self.plugins[f"{ep.name}@{dist}"] = info
                continue
            self.plugins[ep.name] = info
            if (allow is not None and ep.name not in allow) or ep.name in block:
                info.status = "blocked"
                self.pm.set_blocked(ep.name)
                continue
            try:
                module = ep.load()
            except BaseException as exc:  # noqa: BLE001 - a plugin may raise anything, even SystemExit
                if isinstance(exc, KeyboardInterrupt):
                    raise
                self._fail(info, f"import of {ep.value} failed: {type(exc).__name__}: {exc}", exc)
                continue
            self._register_module(module, info)

    def register_module(self, module: ModuleType | object, name: str | None = None, distribution: str = "<local>",
                        version: str = "0") -> PluginInfo:
        """Register a plugin object by hand (tests, notebooks). Goes through the same checks as an entry point."""
        name = name or getattr(module, "__name__", repr(module))
        info = PluginInfo(name=name, distribution=distribution, version=version, module=name)
        self.plugins[name] = info
        self._register_module(module, info)
        return info

    def _register_module(self, module: Any, info: PluginInfo) -> None:
        try:
            self.pm.register(module, name=info.name)
            self.pm.check_pending()
        except BaseException as exc:  # noqa: BLE001
            if isinstance(exc, KeyboardInterrupt):
                raise
            if self.pm.is_registered(module):
                self.pm.unregister(module)
            self._fail(info, f"registering {info.module} failed: {type(exc).__name__}: {exc}", exc)
            return
        # Call this plugin's hookimpls only, one by one: one raising hook must not hide the others.
        pending: list[Registration] = []
        for slot, hook_name in SLOT_HOOKS.items():
            hook = getattr(self.pm.hook, hook_name)
            for impl in hook.get_hookimpls():
                if impl.plugin is not module:
                    continue

                def register(kind: str, config: type[BaseModel], factory: Callable | None = None,
                             _slot: str = slot, **capabilities: Any) -> None:
                    pending.append(Registration(_slot, kind, config, factory, info.name, info.distribution,
                                                info.version, capabilities))

                try:
                    impl.function(register)
                except BaseException as exc:  # noqa: BLE001
                    if isinstance(exc, KeyboardInterrupt):
                        raise
                    self.pm.unregister(module)
                    self._fail(info, f"{hook_name} raised {type(exc).__name__}: {exc}", exc)
                    return
        try:
            for reg in pending:
                self._check(reg)
        except PluginError as exc:
            self.pm.unregister(module)
            self._fail(info, str(exc), exc)
            return
        for reg in pending:
            self._kinds[reg.slot][reg.kind] = reg
            info.kinds.setdefault(reg.slot, []).append(reg.kind)

    def _check(self, reg: Registration) -> None:
        if not isinstance(reg.config, type) or not issubclass(reg.config, BaseModel):
            raise PluginError(f"{reg.slot} kind {reg.kind!r}: config must be a pydantic model class, got {reg.config!r}")
        kind_field = reg.config.model_fields.get("kind")
        if kind_field is None or kind_field.default != reg.kind:
            raise PluginError(f"{reg.slot} kind {reg.kind!r}: {reg.config.__name__} needs the field "
                              f"kind: Literal[{reg.kind!r}] = {reg.kind!r}")
        existing = self._kinds[reg.slot].get(reg.kind)
        if existing is not None:
            raise PluginError(f"{reg.slot} kind {reg.kind!r} is registered twice: by {existing.distribution} "
                              f"{existing.version} (plugin {existing.plugin}) and by {reg.distribution} {reg.version} "
                              f"(plugin {reg.plugin})")

    def _fail(self, info: PluginInfo, message: str, exc: BaseException | None = None) -> None:
        info.status = "failed"
        info.error = message
        if self.strict:
            raise PluginError(f"plugin {info.name} ({info.distribution} {info.version}): {message}") from exc

    # -- queries ---------------------------------------------------------------------------------------------
    def kinds(self, slot: str) -> dict[str, Registration]:
        if slot not in self._kinds:
            raise KeyError(f"unknown slot {slot!r}; slots are {', '.join(self._kinds)}")
        return dict(self._kinds[slot])

    def get(self, slot: str, kind: str) -> Registration:
        kinds = self.kinds(slot)
        if kind not in kinds:
            known = ", ".join(sorted(kinds)) or "none registered"
            raise KeyError(f"unknown {slot} kind {kind!r}; known kinds: {known}")
        return kinds[kind]

    def build(self, slot: str, config: BaseModel, context: Any = None) -> Any:
        """Build the object described by a validated plugin config."""
        return self.get(slot, config.kind).build(config, context)  # type: ignore[attr-defined]

    def failures(self) -> list[PluginInfo]:
        return [p for p in self.plugins.values() if p.status == "failed"]


_REGISTRY: Registry | None = None
_LOCK = threading.Lock()


def get_registry(reload: bool = False) -> Registry:
    """The process-wide registry, with entry points loaded on first use."""
    global _REGISTRY
    with _LOCK:
        if _REGISTRY is None or reload:
            registry = Registry()
            registry.load_entry_points()
            _REGISTRY = registry
        return _REGISTRY


def set_registry(registry: Registry | None) -> None:
    """Replace the process-wide registry (tests)."""
    global _REGISTRY
    _REGISTRY = registry
