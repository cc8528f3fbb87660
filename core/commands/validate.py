"""``codecfw validate RECIPE... [key=value ...]``: every error of every recipe, with YAML paths; exit 2 on any."""

from __future__ import annotations

import sys

from . import add_recipe_arguments, recipe_arguments


def run(args) -> int:
    from ..codec import build_codec
    from ..config import RecipeError, load_recipe

    failed = False
    recipes, overrides = recipe_arguments(args)
    for path in recipes:
        try:
            recipe = load_recipe(path, overrides)
        except (RecipeError, FileNotFoundError) as exc:
            failed = True
            print(str(exc), file=sys.stderr)
            continue
        line = f"{path}: ok ({recipe.semantic.kind} + {recipe.acoustic.kind} + {recipe.decoder.kind})"
        if args.build:
            try:
                codec = build_codec(recipe)
            except Exception as exc:  # noqa: BLE001 - a plugin's constructor may raise anything; report, go on
                failed = True
                print(f"{path}: valid, but building the codec failed: {type(exc).__name__}: {exc}", file=sys.stderr)
                continue
            params = sum(p.numel() for p in codec.parameters())
            line += (f"; {len(codec.streams())} streams, {codec.token_rate:g} tokens/s, "
                     f"{codec.bitrate / 1000:g} kbps, {params / 1e6:.2f}M parameters")
            allow = recipe.allow_random_frozen
            random = [p.key for p in codec.pretrained_parts() if not p.loaded and allow is not True
                      and p.key not in (allow or ())]
            if random:  # valid, but `codecfw train`/`cluster` will refuse to start from it as it is
                print(f"{path}: note: frozen parts that need pretrained weights are random: {', '.join(random)}; "
                      f"codecfw train and cluster refuse to start on them (the recipe's comments say where the "
                      f"weights come from; allow_random_frozen opts in)", file=sys.stderr)
        print(line)
    return 2 if failed else 0


def register(sub) -> None:
    p = sub.add_parser("validate", help="validate recipes and report every error at once")
    add_recipe_arguments(p, many=True)
    p.add_argument("--build", action="store_true", help="also build the codec and print its streams and bitrate")
    p.set_defaults(func=run)
