# An example --slurm_setup file: the environment every SLURM job of a sweep
# sets up before its run. `python -m vit_jax.launch --backend=slurm
# --slurm_setup=launch/slurm_setup.sh` copies these lines into each batch
# script after its `cd` to the code (see one with --dry_run). Copy this
# file, edit it for your cluster and point --slurm_setup (or a profile in
# launch/profiles/) at your copy.

# Modules your cluster provides, e.g. (names differ per site; see
# `module avail`):
#   module load cuda/12.4 cudnn/9.1
# A virtual environment made with the README's install command on a
# shared file system, when VIT_JAX_VENV names it (else --slurm_python or
# the launcher's own Python runs the job):
if [ -n "${VIT_JAX_VENV:-}" ]; then
  source "$VIT_JAX_VENV/bin/activate"
fi
# Each job's log says what it runs with.
echo "=== setup: $(command -v python3 || echo 'no python3 on PATH'), host $(hostname)"
