"""pluggy hook specifications: what a codecfw plugin package can implement.

A plugin package exposes a module through the entry-point group ``codecfw.plugins``::

    [project.entry-points."codecfw.plugins"]
    my_quantizer = "my_package.plugin"

and that module implements any of the hooks below with ``@codecfw.hookimpl``. Every hook receives a ``register``
callback (the llm/tox style) so hooks can grow new optional arguments without breaking plugins::

    register(kind: str, config: type[PluginConfig], factory: Callable | None = None, **capabilities)

``config`` is a pydantic model with ``kind: Literal["<kind>"]`` and ``extra="forbid"`` (subclass
:class:`codecfw.core.config.PluginConfig`). ``factory(config, context: BuildContext)`` builds the object; when
omitted, the config class's ``build(context)`` method is used.

``**capabilities`` describe a metric, an importer or a pretrained name (``needs_reference=True``, ``help=...``): for
those kinds they are the one place the capability is declared. A codec slot (semantic, acoustic, decoder) declares
what it can do on its class instead (:mod:`codecfw.core.types`: ``Decoder.objective``, ``extract_features``,
``chunk_policy()``, ``pretrained_parts()``), because the core reads it from the built slot; keyword capabilities
given for a slot kind are still accepted and shown by ``codecfw plugins``, but nothing reads them.
"""

import pluggy

hookspec = pluggy.HookspecMarker("codecfw")
hookimpl = pluggy.HookimplMarker("codecfw")

#: slot name → hook name. Slots are the registry's namespaces; a kind name is unique within its slot.
SLOT_HOOKS = {
    "semantic": "register_semantic_frontends",
    "acoustic": "register_acoustic_quantizers",
    "decoder": "register_decoders",
    "discriminator": "register_discriminators",
    "loss": "register_losses",
    "metric": "register_metrics",
    "dataset": "register_datasets",
    "pretrained": "register_pretrained",
    "importer": "register_importers",
}


@hookspec
def register_semantic_frontends(register):
    """Register semantic front-ends (slot ``semantic``): factories return a ``SemanticFrontend``."""


@hookspec
def register_acoustic_quantizers(register):
    """Register acoustic quantizers (slot ``acoustic``): factories return an ``AcousticQuantizer``."""


@hookspec
def register_decoders(register):
    """Register decoders (slot ``decoder``): factories return a ``Decoder``."""


@hookspec
def register_discriminators(register):
    """Register discriminators (slot ``discriminator``) used by adversarial objectives."""


@hookspec
def register_losses(register):
    """Register reconstruction losses (slot ``loss``) that recipes weight by name."""


@hookspec
def register_metrics(register):
    """Register evaluation metrics (slot ``metric``)."""


@hookspec
def register_datasets(register):
    """Register dataset sources (slot ``dataset``)."""


@hookspec
def register_pretrained(register):
    """Register pretrained checkpoint names (slot ``pretrained``), e.g. ``semanticodec-100tps.32k``."""


@hookspec
def register_importers(register):
    """Register ``codecfw import SOURCE`` converters (slot ``importer``): ``register(kind, ImporterSpec subclass,
    importer, arguments=add_arguments, help=...)`` where ``add_arguments(parser)`` declares the source's options and
    ``importer(spec, args) -> Path`` writes the checkpoint folder ``args.output``."""
