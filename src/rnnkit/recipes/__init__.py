"""Ready recipes: one harness (:mod:`~rnnkit.recipes.harness`), one command line generated from
their settings (:mod:`~rnnkit.recipes.options`), one run directory
(:mod:`~rnnkit.recipes.rundir`).

:data:`RECIPES` names every recipe and where it lives; :func:`get_recipe` imports one. A
recipe module imports torch only inside its functions, so the command line can list and
describe them quickly.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rnnkit.recipes.harness import Recipe

__all__ = ["RECIPES", "RecipeEntry", "get_recipe", "version"]


@dataclass(frozen=True)
class RecipeEntry:
    """Where a recipe lives and the line ``rnnkit --help`` shows for it."""

    module: str
    summary: str


RECIPES: dict[str, RecipeEntry] = {
    "classify": RecipeEntry(
        "rnnkit.recipes.classify", "classify sequences: UEA .ts, Fashion-MNIST by rows, sentences"
    ),
    "demo": RecipeEntry(
        "rnnkit.recipes.demo", "forecast the CO2 series shipped with rnnkit a year ahead"
    ),
    "forecast": RecipeEntry(
        "rnnkit.recipes.forecast", "forecast CSV columns against persistence and seasonal naive"
    ),
    "grud": RecipeEntry(
        "rnnkit.recipes.grud", "GRU-D against GRU baselines on series with missing values"
    ),
    "g2p": RecipeEntry(
        "rnnkit.recipes.g2p", "grapheme to phoneme: encoder-decoder with attention on CMUdict"
    ),
    "lm": RecipeEntry(
        "rnnkit.recipes.lm", "language model on any text, bits per character against xz and bzip2"
    ),
    "longrange": RecipeEntry(
        "rnnkit.recipes.longrange", "the adding and copy tasks with long time lags"
    ),
    "solar": RecipeEntry(
        "rnnkit.recipes.solar", "the CNTK book's solar example: the book's files or days"
    ),
    "tag": RecipeEntry("rnnkit.recipes.tag", "tag every token: word/tag text or CoNLL columns"),
    "tree": RecipeEntry(
        "rnnkit.recipes.tree", "trees (ListOps or your files): Tree-LSTM against an LSTM on tokens"
    ),
    "visits": RecipeEntry(
        "rnnkit.recipes.visits", "next-visit diagnosis codes from visit histories"
    ),
}


def get_recipe(name: str) -> Recipe[Any]:
    """The recipe called ``name`` (its module's ``RECIPE``)."""
    if name not in RECIPES:
        raise ValueError(f"recipe: expected one of {sorted(RECIPES)}, found {name!r}")
    module = importlib.import_module(RECIPES[name].module)
    recipe: Recipe[Any] = module.RECIPE
    return recipe


def version() -> str:
    """rnnkit's version, from the installed package's metadata."""
    from importlib import metadata

    try:
        return metadata.version("rnnkit")
    except metadata.PackageNotFoundError:
        return "0.1.0"
