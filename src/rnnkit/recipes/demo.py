"""``rnnkit demo``: ``rnnkit forecast`` on the weekly Mauna Loa CO2 series shipped inside the
package (``--preset co2`` by default): 104 weeks in, the next 52 out, against "the same week
one year before" on the last 10 % of the series. Its 59 missing weeks are filled for the input,
flagged by a mask and left out of every error. Every option of ``rnnkit forecast`` applies.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rnnkit.recipes.forecast import ForecastRecipe

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["RECIPE", "DemoRecipe"]


DESCRIPTION = __doc__ or ""


class DemoRecipe(ForecastRecipe):
    """The forecast recipe with the CO2 preset as its defaults; its runs load back as
    ``demo`` runs (``run.json``'s recipe name)."""

    name = "demo"
    summary = "forecast the CO2 series shipped with rnnkit a year ahead, against seasonal naive"
    description = DESCRIPTION

    def default_preset(self, argv: Sequence[str]) -> str | None:
        return "co2"


RECIPE = DemoRecipe()
