#!/bin/bash
# Run on the GPU machine from the repository root, with the kit beside it (build.sh wrote both):
# install the kit's wheels under /tmp/site, then one training slot of python -m training.timed_run.
# CONFIG, MINUTES (the whole slot, preparation included), WORKERS (batch builders), OUT (where the
# log, summary and model go) and RUN_DIR (the config's output_dir) are read from the environment.
set -u
KIT=$(cd "$(dirname "$0")" && pwd)
OUT=${OUT:-runs/gpu_slot}
CONFIG=${CONFIG:-training/configs/default_model_stage20.yaml}
RUN_DIR=${RUN_DIR:-runs/default_model_s20}
mkdir -p "$OUT"
T0=$(date +%s)
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    "$KIT"/whl/*.whl || { echo "pip install of the kit failed"; exit 1; }
cp -r "$KIT/sitk/SimpleITK" /tmp/site/
python3 -c "import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], 'wb'))" \
    /tmp/site/SimpleITK/_SimpleITK.abi3.so.xz /tmp/site/SimpleITK/_SimpleITK.abi3.so || exit 1
rm -f /tmp/site/SimpleITK/_SimpleITK.abi3.so.xz
export PYTHONPATH=/tmp/site:$PWD OMP_NUM_THREADS=1 PYTHONUNBUFFERED=1
if [ -d "$KIT/real/totalsegmentator" ] && [ ! -d ../shared/data/real/totalsegmentator ]; then
    mkdir -p ../shared/data/real && cp -r "$KIT/real/totalsegmentator" ../shared/data/real/
fi
nvidia-smi -L || true
python3 -c "import torch, monai, SimpleITK, cc3d, pydantic, pydicom, nibabel, training.train; \
print('torch', torch.__version__, 'cuda', torch.cuda.is_available())" || exit 1
echo "setup took $(( $(date +%s) - T0 )) s"
python3 -m training.timed_run "$CONFIG" --minutes "${MINUTES:-8.6}" --device cuda \
    --workers "${WORKERS:-15}" --summary "$OUT/summary.json" > "$OUT/log.txt" 2>&1
echo "timed_run rc $? after $(( $(date +%s) - T0 )) s"
tail -25 "$OUT/log.txt"
cp "$RUN_DIR/model.pt" "$RUN_DIR/config.yaml" "$OUT/" 2>&1
ls -la "$RUN_DIR" "$OUT"
