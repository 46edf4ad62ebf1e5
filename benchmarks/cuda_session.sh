#!/usr/bin/env bash
# Every CUDA check and figure of issue 4 in one run, for a short lease on a GPU machine.
#
#   OUT=cuda-results bash benchmarks/cuda_session.sh [SHARED_DIR]
#
# Needs python3 with torch (CUDA), numpy, opencv, safetensors, huggingface_hub, tqdm and pytest;
# lrfer itself is installed without dependencies (nothing is downloaded). SHARED_DIR (default
# ../shared) holds images/ (the group photos); it is linked to ../shared when that is absent. Each
# step has its own time limit and log, and a failing step does not stop the next ones. The logs come
# back in $OUT as files when they are at most 7, else as logs.tar.gz; the archive is rewritten after
# every step, so a call stopped at the device tool's limit still brings back each finished step's
# log. The GPU tests come first (CUDA vs CPU results), then the benchmarks, then a torch.profiler
# trace of `lrfer predict` on a folder (is the command waiting on the GPU, or the GPU on the host?).
# All steps at their limits take longer than one 10-minute device call: STEPS="pipeline" (say) runs
# only the steps named, and STEPS="" none (the links and env.log only). BASE=DIR, a copy of an
# earlier commit's tree (`git archive REV | tar -x -C DIR`), adds first_use_base, pipeline_480_base
# and predict_folder_base: those benchmarks on that code, right after the current code's, on the
# same machine; and predict_folder_ab, the two codes in turn, twice. The *_v7 steps repeat a step
# with TORCH_CUDNN_V8_API_DISABLED=1: torch's cuDNN v7 convolution API, which picks an algorithm by
# a heuristic call instead of building a v8 execution plan for each new shape (is the first-use gap
# the plans? does steady state keep its speed? do the CUDA tests still pass?).
set -u
export PYTHONUNBUFFERED=1
OUT=${OUT:-cuda-results}
mkdir -p "$OUT" && OUT=$(cd "$OUT" && pwd)  # absolute: pack_logs runs in $LOGS
LOGS=$(mktemp -d)
shared=${1:-../shared}
if [ ! -e ../shared ] && [ -d "$shared" ]; then ln -s "$(cd "$shared" && pwd)" ../shared; fi
# BASE's benchmarks look for the photos next to BASE, as these look next to the repository.
if [ -n "${BASE:-}" ] && [ ! -d "$BASE/../shared/images" ] && [ -d "$shared" ]; then ln -sfn "$(cd "$shared" && pwd)" "$BASE/../shared"; fi

STEPS=${STEPS-tests_cuda graphs_ab host_calls first_use first_use_v7 first_use_base throughput pipeline loader pipeline_480 pipeline_480_base predict_folder predict_folder_streams predict_list predict_folder_v7 predict_folder_base predict_folder_ab predict_folder_vary video profile_folder tests_cuda_v7}  # a subset to rerun only those

pack_logs() {  # every log so far in $OUT/logs.tar.gz: the device tool returns at most 8 files
    (cd "$LOGS" && tar -czf "$OUT/.logs.tar.gz" -- *.log) && mv "$OUT/.logs.tar.gz" "$OUT/logs.tar.gz"
}

step() {  # step SECONDS NAME COMMAND...: run with a time limit, log to $LOGS/NAME.log, pack the logs
    local limit=$1 name=$2 start=$SECONDS
    shift 2
    case " $STEPS " in *" $name "*) ;; *) return ;; esac
    echo "=== $name: $*"
    timeout "$limit" "$@" >"$LOGS/$name.log" 2>&1
    echo "=== $name: exit $? after $((SECONDS - start)) s"
    pack_logs
}

{
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm --format=csv
    nproc
    python3 -c "import torch, numpy, cv2; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.is_available(), 'cudnn', torch.backends.cudnn.version(), 'numpy', numpy.__version__, 'cv2', cv2.__version__)"
    python3 -m pip install -q --no-deps --no-build-isolation --no-index -e . && python3 -c "import lrfer; print('lrfer', lrfer.__version__)"
} >"$LOGS/env.log" 2>&1
cat "$LOGS/env.log"
pack_logs

# Each *_v7 step runs its twin's very command (one array each) with only the variable added.
V7=(env TORCH_CUDNN_V8_API_DISABLED=1)
TESTS_CUDA=(python3 -m pytest -q -p no:cacheprovider tests/test_cuda.py "tests/test_train.py::test_training_on_cuda_resumes_like_an_uninterrupted_run")
FIRST_USE=(python3 benchmarks/first_use.py --device cuda --width 480 --steps 64,32,256,192,96)
PREDICT_FOLDER=(python3 benchmarks/predict_folder.py --device cuda --width 480 --count 4000 --image-batch 64,64,256,256 --workers 8 --stages)

step 90 tests_cuda "${TESTS_CUDA[@]}"
# What each new convolution shape costs the first time in a process (cuDNN's plan), per step size.
step 60 first_use "${FIRST_USE[@]}"
step 60 first_use_v7 "${V7[@]}" "${FIRST_USE[@]}"
if [ -n "${BASE:-}" ]; then
    step 60 first_use_base python3 "$BASE/benchmarks/first_use.py" --device cuda --width 480 --steps 64,32,256,192,96
fi
step 100 throughput python3 benchmarks/throughput.py --device cuda --batches 1,64,1024,8192 --rounds 3 --compile
step 120 pipeline python3 benchmarks/pipeline.py --device cuda --detector auto,mtcnn --widths 1920,960,480 --batch 1,64,256 \
    --runs 2 --crowd 320,160 --detect-stages
# The decoding workers alone on this host's cores: the main thread's cost per photo, before / now.
step 60 loader python3 benchmarks/loader.py --count 4000 --image-batch 256 --workers 8 --score-ms 0.5
# The 480 px target alone, short: the upload stage of one copy per step (stop 18) against BASE's copy per photo.
step 60 pipeline_480 python3 benchmarks/pipeline.py --device cuda --detector auto --widths 480 --batch 64,256 --runs 3
if [ -n "${BASE:-}" ]; then
    step 60 pipeline_480_base python3 "$BASE/benchmarks/pipeline.py" --device cuda --detector auto --widths 480 --batch 64,256 --runs 3
fi
# Each image batch twice: the first run makes cuDNN's plans for its shapes, the second finds them made.
# --stages splits every run by stage: where the first runs (313-404 photos/s on the H100 in stop 20,
# against 967-1,159 again) lose their time.
step 100 predict_folder "${PREDICT_FOLDER[@]}"
# lrfer.graphs (stop 37, not yet run on a GPU): BlazeFace, R-/O-Net and the expression model replayed as
# CUDA graphs against the eager calls, in turn, twice; each recorded in its warm-up run.
step 150 graphs_ab python3 benchmarks/predict_folder.py --device cuda --width 480 --count 4000 --image-batch 64,256 \
    --cuda-graphs 0,1 --rounds 2 --workers 8
# The torch calls per step that the host still makes with real graphs (against the CPU count of stop 37).
step 60 host_calls python3 benchmarks/host_calls.py --device cuda --width 480 --photos 256,64
# Image batches scored one, two and three at a time (--streams: threads and CUDA streams of their
# own), in turn, twice: does one batch's GPU work overlap another's host work (stop 34)? The first
# round includes the new threads' cuDNN plans (made per thread), the second is the steady state.
step 200 predict_folder_streams python3 benchmarks/predict_folder.py --device cuda --width 480 --count 4000 --image-batch 64,256 \
    --streams 1,2,3 --rounds 2 --workers 8
# Recognizer.predict on a list (the Python API), one step of up to 256 photos at a time against two on
# CUDA streams of their own (stop 35; predict's default on CUDA stays 1 until this has run).
step 120 predict_list python3 benchmarks/predict_list.py --device cuda --width 480 --count 2000 --streams 1,2 --rounds 2
step 100 predict_folder_v7 "${V7[@]}" "${PREDICT_FOLDER[@]}"
if [ -n "${BASE:-}" ]; then  # its own script puts its tree first on sys.path
    step 100 predict_folder_base python3 "$BASE/benchmarks/predict_folder.py" --device cuda --width 480 --count 4000 --image-batch 64,64,256,256 --workers 8
    # This code against BASE's, alternating, twice each, 256 photos per step (no synchronised timers):
    # one run of each, as in stop 33 (700-704 against 882), cannot tell a change from the spread.
    step 200 predict_folder_ab bash -c 'for round in 1 2; do for tree in . "$1"; do echo "## $tree, round $round"
        python3 "$tree/benchmarks/predict_folder.py" --device cuda --width 480 --count 4000 --image-batch 256,256 --workers 8 | grep "^| cuda"
        done; done' _ "$BASE"
fi
step 80 predict_folder_vary python3 benchmarks/predict_folder.py --device cuda --width 480 --vary-width 160 --count 2000 --image-batch 64,64 --workers 8
# Videos: decoding in predict_video's read-ahead thread against decoding in the model's thread (stop 25).
step 90 video python3 benchmarks/video.py --device cuda --width 480 --frames 1024 --codec MJPG --memory-frames 0
step 90 profile_folder python3 benchmarks/predict_folder.py --device cuda --width 480 --count 1000 --image-batch 64,64 --workers 8 --torch-profile
step 90 tests_cuda_v7 "${V7[@]}" "${TESTS_CUDA[@]}"

for name in $STEPS; do
    [ -f "$LOGS/$name.log" ] || continue
    echo "##### $name"
    tail -n 60 "$LOGS/$name.log"
done
shopt -s nullglob
logs=("$LOGS"/*.log)
if [ "${#logs[@]}" -le 7 ]; then  # with the archive, at most 8 files
    cp -- "${logs[@]}" "$OUT"/
else
    echo "${#logs[@]} logs are in $OUT/logs.tar.gz (the device tool returns at most 8 files)"
fi
rm -rf -- "$LOGS"
