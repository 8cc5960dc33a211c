#!/bin/bash
# Pack what training needs beyond a stock PyTorch image into one folder, for a GPU machine that
# cannot reach a package index (an air-gapped hospital server, a lent accelerator).
#
#   bash training/gpu_kit/build.sh [KIT_DIR]      # default .devpkgs (git-ignored via .git/info/exclude)
#
# The kit holds cp312 manylinux wheels of the training stack that such images lack (MONAI,
# cc3d, pydantic, pydicom, nibabel), SimpleITK stripped and xz-compressed (53 MB -> 29 MB), the
# real TotalSegmentator samples, and run.sh, which installs them under /tmp/site and runs
# python -m training.timed_run in a fixed slot. On the machine, from the repository root:
#
#   CONFIG=training/configs/default_model_stage20.yaml MINUTES=9 bash KIT_DIR/run.sh
set -euo pipefail
KIT=${1:-.devpkgs}
PYVER=${PYVER:-3.12}
mkdir -p "$KIT/whl" "$KIT/real"
fetch() {
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$PYVER" --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 \
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
        -d "$1" "$2"
}
for name in monai==1.6.1 connected-components-3d==4.1.1 pydantic==2.14.4 pydantic_core==2.50.5 \
            annotated_types typing_inspection pydicom==3.0.2 nibabel; do
    fetch "$KIT/whl" "$name"
done
if [ ! -f "$KIT/sitk/SimpleITK/_SimpleITK.abi3.so.xz" ]; then
    tmp=$(mktemp -d)
    fetch "$tmp" SimpleITK==2.5.7
    mkdir -p "$KIT/sitk" && (cd "$KIT/sitk" && unzip -q -o "$tmp"/simpleitk-*.whl 'SimpleITK/*')
    strip --strip-unneeded "$KIT"/sitk/SimpleITK/_SimpleITK*.so
    xz -6 -f "$KIT"/sitk/SimpleITK/_SimpleITK*.so
    rm -rf "$tmp"
fi
if [ -d ../shared/data/real/totalsegmentator ]; then
    cp -r ../shared/data/real/totalsegmentator "$KIT/real/"
fi
cp "$(dirname "$0")/run.sh" "$KIT/run.sh"
du -sh "$KIT"
