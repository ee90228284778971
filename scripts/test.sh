#!/usr/bin/env bash
# Installs everything the tests need, then lints and runs the whole test suite.
#   bash scripts/test.sh            # all tests
#   bash scripts/test.sh -k judge   # extra arguments go to the main pytest run
#   CAPYUI_SKIP_VLLM=1 bash scripts/test.sh   # without the vLLM CPU venv (~3.8 GB) and its tests
# Idempotent: a second run reuses .venv (and pip's cache of the compiled llama-cpp-python).
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages: redis-server (the local Argilla), chromium (browser tests).
need_apt=()
command -v redis-server >/dev/null || need_apt+=(redis-server)
command -v chromium >/dev/null || need_apt+=(chromium)
if ((${#need_apt[@]})); then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
  else
    echo "warning: missing ${need_apt[*]} (install them with apt-get as root); their tests skip" >&2
  fi
fi

pip_install() {
  # quiet, minus the machine's notes about missing local index folders
  .venv/bin/pip install -q --disable-pip-version-check "$@" \
    2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
}
[ -x .venv/bin/python ] || python3 -m venv .venv
pip_install -r requirements-dev.txt
# data-only packages (distilabel's UltraFeedback rubrics, the MT-Bench questions); their own
# deps (CUDA torch, ray, distilabel's pins) are not needed
pip_install --no-deps -r requirements-nodeps.txt
pip_install --no-deps -e .

.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy pipelines capyui
status=0
.venv/bin/python -m pytest -ra "$@" || status=$?

# The in-process vLLM backend, on vLLM's CPU build in its own venv (the only honest check of it
# on a machine without a GPU). CAPYUI_SKIP_VLLM=1 skips it for quick local runs.
if [ "${CAPYUI_SKIP_VLLM:-0}" != 1 ]; then
  bash scripts/vllm-cpu-env
  .venv-vllm/bin/python -m pytest -ra -q tests/test_vllm.py || status=$?
fi
exit "$status"
