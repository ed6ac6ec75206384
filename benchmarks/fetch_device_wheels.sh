#!/usr/bin/env bash
# Prepare .gpuwhl/ (git-ignored via .git/info/exclude) with what the lent GPU machine
# (Python 3.12, torch preinstalled) lacks, plus a pixgen wheel for its entry points.
# Then: device run with carry [".gpuwhl"] and `bash benchmarks/device_run.sh`.
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.gpuwhl/' .git/info/exclude 2>/dev/null || echo '/.gpuwhl/' >> .git/info/exclude
mkdir -p .gpuwhl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d .gpuwhl \
    open_clip_torch==3.3.0 ftfy==6.3.1 wcwidth==0.9.4 taming-transformers-rom1504==0.0.6 \
    kornia==0.9.0 kornia_rs==0.2.0 pydantic==2.14.4 pydantic-core==2.50.5 \
    annotated-types==0.8.0 typing-inspection==0.4.5
rm -f .gpuwhl/pixgen-*.whl
.venv/bin/pip wheel -q --no-deps --no-build-isolation -w .gpuwhl .
# imageio-ffmpeg's wheel (~70 MB) exceeds what a device call may carry: its Python part
# goes in .gpuwhl/slim and the video benchmark needs an ffmpeg on the machine.
mkdir -p .gpuwhl/slim
cp -r .venv/lib/python3*/site-packages/imageio_ffmpeg .gpuwhl/slim/
rm -rf .gpuwhl/slim/imageio_ffmpeg/binaries/ffmpeg-* .gpuwhl/slim/imageio_ffmpeg/__pycache__
du -sh .gpuwhl
