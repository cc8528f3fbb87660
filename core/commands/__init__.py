"""One module per ``codecfw`` sub-command; each exposes ``register(subparsers)`` and sets ``func``."""

from __future__ import annotations

import argparse


def add_recipe_arguments(parser: argparse.ArgumentParser, many: bool = False) -> None:
    """The recipe argument(s) plus ``key.sub=value`` overrides, shared by every command that takes a recipe.

    Overrides follow the recipe as plain ``KEY.SUB=VALUE`` words (``codecfw train xcodec train.lr=3e-4``) or come as
    repeatable ``--override KEY.SUB=VALUE``; ``-o`` always names an output, in every command.
    """
    if many:
        parser.add_argument("recipes", nargs="+", metavar="RECIPE|KEY.SUB=VALUE",
                            help="recipe file(s) or shipped recipe name(s), then overrides applied to each")
    else:
        parser.add_argument("recipe", metavar="RECIPE", help="recipe file or shipped recipe name (e.g. xcodec)")
        parser.add_argument("overrides", nargs="*", metavar="KEY.SUB=VALUE",
                            help="override recipe keys, e.g. acoustic.codebook_size=1024 train.lr=3e-4")
    parser.add_argument("--override", dest="override_options", action="append", default=[], metavar="KEY.SUB=VALUE",
                        help="an override (repeatable); same as a trailing KEY.SUB=VALUE")


def recipe_arguments(args: argparse.Namespace) -> tuple[list[str], list[str]]:
    """(recipes, overrides) from arguments declared by :func:`add_recipe_arguments`."""
    if hasattr(args, "recipes"):
        recipes, overrides = separate_overrides(args.recipes)
    else:
        recipes, overrides = [args.recipe], list(args.overrides)
        bad = [o for o in overrides if "=" not in o]
        if bad:
            raise SystemExit(f"codecfw: overrides must look like KEY.SUB=VALUE, got {' '.join(bad)}")
    return recipes, overrides + list(args.override_options)


def separate_overrides(values: list[str]) -> tuple[list[str], list[str]]:
    """Split positional arguments into recipes and ``key=value`` overrides."""
    recipes = [v for v in values if "=" not in v]
    overrides = [v for v in values if "=" in v]
    return recipes, overrides
