#!/usr/bin/env bash
# Runs once inside the new environment, in Snakemake's working directory (the repository root).
set -euo pipefail
python -m pip install --no-input -e .
