#!/usr/bin/env bash
# Create .venv and install pyro_flowvi with its test and docs extras.
#
# torch is installed first: this environment has a CPU wheel of torch 2.13.0 on disk, which
# "torch==2.13.0" picks up (any other request would pull a multi-GB CUDA build).  Elsewhere, keep
# your own build: a torch already importable in .venv is left alone, or set PYRO_FLOWVI_TORCH
# (e.g. PYRO_FLOWVI_TORCH="torch --index-url https://download.pytorch.org/whl/cu124").
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
PIP=(.venv/bin/python -m pip --disable-pip-version-check)
if ! .venv/bin/python -c "import torch" >/dev/null 2>&1; then
  # shellcheck disable=SC2086
  "${PIP[@]}" install -q ${PYRO_FLOWVI_TORCH:-torch==2.13.0}
fi
"${PIP[@]}" install -q -e ".[test,docs]"
.venv/bin/python -c "import torch, pyro, pyro_flowvi; print(f'pyro_flowvi {pyro_flowvi.__version__}: torch {torch.__version__}, pyro {pyro.__version__}')"
