#!/usr/bin/env bash
# Creates .venv-bench: the forecasting peers of bench/bench_forecast.py (darts, neuralforecast)
# beside rnnkit, with torch pinned so that pip never replaces it.
#
#   bash bench/forecast_env.sh            # creates or updates .venv-bench in the repository root
#   PYTHON=python3.11 bash bench/forecast_env.sh
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv-bench"
python="${PYTHON:-python3}"

constraints="$(mktemp)"
trap 'rm -f "$constraints"' EXIT
# torch's local version (+cpu) is matched by the pin's public version.
cat >"$constraints" <<'PINS'
torch==2.13.0
darts==0.48.1
neuralforecast==3.3.0
PINS

[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
pip=("$venv/bin/python" -m pip install --constraint "$constraints")
"${pip[@]}" "torch==2.13.0"
"${pip[@]}" "darts==0.48.1" "neuralforecast==3.3.0"
"${pip[@]}" -e "$root"
"$venv/bin/python" - <<'CHECK'
import darts, neuralforecast, torch, rnnkit  # noqa: F401
from importlib.metadata import version
print({name: version(name) for name in ("torch", "darts", "neuralforecast", "rnnkit")})
assert version("torch").split("+")[0] == "2.13.0", version("torch")
CHECK
