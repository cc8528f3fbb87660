"""``codecfw plugins``: each plugin's distribution, version, kinds per slot and load status."""

from __future__ import annotations

import json


def run(args) -> int:
    from ..registry import get_registry

    registry = get_registry()
    infos = list(registry.plugins.values())
    if args.json:
        print(json.dumps([i.as_dict() for i in infos], indent=2))
    else:
        if not infos:
            print("no plugins loaded (is CODECFW_DISABLE_PLUGIN_AUTOLOAD set?)")
        for info in infos:
            print(f"{info.name}  [{info.status}]  {info.distribution} {info.version}  ({info.module})")
            for slot, kinds in sorted(info.kinds.items()):
                print(f"    {slot}: {', '.join(sorted(kinds))}")
            if info.error:
                print(f"    error: {info.error}")
    return 1 if registry.failures() and args.strict else 0


def register(sub) -> None:
    p = sub.add_parser("plugins", help="list plugins, their kinds and load status")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--strict", action="store_true", help="exit 1 if any plugin failed to load")
    p.set_defaults(func=run)
