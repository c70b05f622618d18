# Sourced at the top of a device call (`source scripts/device_env.sh`): the carried wheels installed into /tmp/site
# (the device's python has torch but not hydra, omegaconf, submitit, open_clip), the repository on PYTHONPATH,
# runs/ and $OUT made, and `el MESSAGE` printing the seconds since the call began.
mkdir -p runs "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:$PWD
T0=$(date +%s)
el() { echo "[$(( $(date +%s) - T0 )) s] $*"; }
