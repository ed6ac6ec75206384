#!/usr/bin/env bash
# Everything measured on a lent GPU, in one call (device time is short):
#   1. train the embedded shapes CLIP (issue 4)
#   2. the GPU-marked tests
#   3. bench_step.py (issue 7) and bench_video.py (issue 6)
# Run from the repository root on the GPU machine with the wheels of what it lacks in
# .gpuwhl/ (prepared by benchmarks/fetch_device_wheels.sh); results go to $OUT.
set -u
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .gpuwhl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD/.gpuwhl/slim
FFMPEG=$(command -v ffmpeg || true)
[ -n "$FFMPEG" ] && export IMAGEIO_FFMPEG_EXE=$FFMPEG
python3 - <<'PY' 2>&1 | tee "$OUT/env.txt"
import torch, sys, shutil
print("python", sys.version.split()[0], "torch", torch.__version__, torch.cuda.get_device_name())
print("ffmpeg", shutil.which("ffmpeg"))
import pixgen, open_clip, taming, kornia, pydantic
print("imports ok", pixgen.__file__)
PY
STAGE=${STAGE:-all}
if [ "$STAGE" = all ] || [ "$STAGE" = train ]; then
  timeout ${TRAIN_S:-230} python3 -m pixgen.shapes.train --device cuda --seed 0 \
      --minutes ${TRAIN_MIN:-3.5} --out "$OUT/shapes" 2>&1 | tail -n 60 > "$OUT/train.log"
  tail -n 25 "$OUT/train.log"
fi
if [ "$STAGE" = all ] || [ "$STAGE" = bench ]; then
  timeout 90 python3 -m pytest -q -m gpu -p no:cacheprovider tests/test_step_equivalence.py \
      tests/test_video.py 2>&1 | tail -n 15 | tee "$OUT/gpu_tests.log"
  timeout ${BENCH_S:-240} python3 benchmarks/bench_step.py --device cuda --sizes 512,256 \
      --json "$OUT/bench_step.json" 2>&1 | grep -v WARNING | tee "$OUT/bench_step.log" | tail -n 12
  timeout ${VIDEO_S:-70} python3 benchmarks/bench_video.py --device cuda --size 512 \
      --json "$OUT/bench_video.json" 2>&1 | tail -n 12 | tee "$OUT/bench_video.log"
fi
