"""``codecfw schema``: the JSON Schema of a recipe, including every registered plugin's config."""

from __future__ import annotations

import json


def run(args) -> int:
    from ..config import build_recipe_model

    print(json.dumps(build_recipe_model().model_json_schema(), indent=2))
    return 0


def register(sub) -> None:
    p = sub.add_parser("schema", help="print the recipe JSON Schema (with all plugin configs)")
    p.set_defaults(func=run)
