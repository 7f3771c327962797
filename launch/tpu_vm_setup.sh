#!/bin/bash
# Prepares a Cloud TPU VM worker to run vit_jax. The TPU VM back end runs it
# on every worker of every VM, in the unpacked code directory, before the
# VM's first run (the default of --tpu_setup: `bash launch/tpu_vm_setup.sh
# PYTHON`, PYTHON being --tpu_python). Edit it, or give --tpu_setup, for
# images that need more (a venv, a pinned libtpu, data on a local disk).
#
# Usage: bash launch/tpu_vm_setup.sh [PYTHON]   (default python3)
set -euo pipefail
python="${1:-python3}"

# The same dependencies as everywhere else: requirements.txt.
"$python" -m pip install -q -r requirements.txt
# The TPU runtime (libtpu) for exactly the jax just installed: jax's `tpu`
# extra at the installed version, so pip changes nothing else.
version="$("$python" -c 'import jax; print(jax.__version__)')"
"$python" -m pip install -q "jax[tpu]==$version"
