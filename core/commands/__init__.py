"""One module per ``codecfw`` sub-command; each exposes ``register(subparsers)`` and sets ``func``."""

from __future__ import annotations

import argparse


def add_recipe_arguments(parser: argparse.ArgumentParser, many: bool = False) -> None:
    """The recipe argument(s) plus ``key.sub=value`` overrides, shared by every command that takes a recipe."""
    if many:
        parser.add_argument("recipes", nargs="+", metavar="RECIPE", help="recipe file(s) or shipped recipe name(s)")
    else:
        parser.add_argument("recipe", metavar="RECIPE", help="recipe file or shipped recipe name (e.g. xcodec)")
    parser.add_argument("-o", "--override", dest="overrides", action="append", default=[], metavar="KEY.SUB=VALUE",
                        help="override a recipe key (repeatable), e.g. -o acoustic.codebook_size=1024")


def split_overrides(values: list[str]) -> tuple[list[str], list[str]]:
    """Split positional arguments into recipes and trailing ``key=value`` overrides."""
    recipes = [v for v in values if "=" not in v]
    overrides = [v for v in values if "=" in v]
    return recipes, overrides
