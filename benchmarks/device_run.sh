#!/usr/bin/env bash
# Everything measured on a lent GPU, in one call (device time is short), most wanted first,
# each part under its own time limit and writing to $OUT as it goes:
#   1. the GPU-marked tests (engine vs reference at full size, no host sync in a step,
#      cuDNN flag, CLIP, video)
#   2. bench_step.py at 512² (issue 7): reference, pixgen eager (cuDNN timed and by
#      heuristics), compiled (inductor's layout, and NHWC forced), pixel; each engine
#      variant profiled over 5 more steps
#   3. bench_step.py at 256², compiled only (its compilation is long: a separate limit)
#   4. bench_video.py at 512² (issue 6): the CLIP-guided loop, then the weight-free one
#   5. bench_strokes.py: the strokes generator's rasteriser at 224² and 512² (last: what
#      time is left)
# STAGE=train instead trains the embedded shapes CLIP on the GPU (issue 4, not needed now).
# About 9.5 minutes in all (run it with timeout_s 590).
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
STAGE=${STAGE:-bench}
if [ "$STAGE" = train ]; then
  timeout ${TRAIN_S:-230} python3 -m tools.shapes.train --device cuda --seed 0 \
      --minutes ${TRAIN_MIN:-3.5} --out "$OUT/shapes" 2>&1 | tail -n 60 > "$OUT/train.log"
  tail -n 25 "$OUT/train.log"
fi
if [ "$STAGE" = bench ]; then
  timeout ${TESTS_S:-100} python3 -m pytest -q -s -m gpu -p no:cacheprovider \
      tests/test_step_equivalence.py tests/test_speed_gpu.py tests/test_clip_gpu.py \
      tests/test_video.py 2>&1 | grep -v WARNING \
      | tail -n 15 | tee "$OUT/gpu_tests.log"
  timeout ${BENCH512_S:-230} python3 benchmarks/bench_step.py --device cuda --sizes 512 \
      --steps 20 --warmup 3 --compile-warmup 8 --profile 5 \
      --modes eager,eager:cudnn-heuristics,reduce-overhead,reduce-overhead:channels-last \
      --json "$OUT/bench_step_512.json" 2>&1 \
      | grep -v WARNING | tee "$OUT/bench_step_512.log" | tail -n 10
  timeout ${BENCH256_S:-100} python3 benchmarks/bench_step.py --device cuda --sizes 256 \
      --steps 30 --warmup 3 --compile-warmup 8 --modes reduce-overhead --no-pixel --profile 5 \
      --json "$OUT/bench_step_256.json" 2>&1 | grep -v WARNING \
      | tee "$OUT/bench_step_256.log" | tail -n 6
  timeout ${VIDEO_CLIP_S:-70} python3 benchmarks/bench_video.py --device cuda --size 512 \
      --guide clip --steps 150 --repeats 3 --json "$OUT/bench_video_clip.json" 2>&1 \
      | grep -v WARNING | tail -n 6 | tee "$OUT/bench_video_clip.log"
  timeout ${VIDEO_S:-60} python3 benchmarks/bench_video.py --device cuda --size 512 \
      --steps 300 --repeats 3 --json "$OUT/bench_video.json" 2>&1 \
      | tail -n 6 | tee "$OUT/bench_video.log"
  timeout ${STROKES_S:-25} python3 benchmarks/bench_strokes.py --device cuda --sizes 224,512 \
      --strokes 256,1024 --steps 20 --json "$OUT/bench_strokes.json" 2>&1 \
      | tail -n 6 | tee "$OUT/bench_strokes.log"
fi
