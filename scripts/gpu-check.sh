#!/usr/bin/env bash
# The device check: ticketlab on a CUDA GPU, on the machine as it is (offline too: README, "The GPU check").
#
#   scripts/gpu-check.sh [STEP ...]          # default: every step, in this order
#
#   env          GPU, driver (nvidia-smi), torch, CUDA, cuDNN, float32 precision (always runs first; without a
#                GPU it prints one line and the check stops there, exit 3)
#   wheels       the carried wheels (.whl/*.whl: sacred, pymongo, SecantusDB, ... for this Python) into GPU_CHECK_SITE
#   tests        the CUDA tests: pytest -m cuda over the test files that mark some
#   experiments  a lottery run, a Supermask run and a population (conv2) with training.device=cuda into a local
#                SecantusDB; their status, device and float32 precision read back
#   bench-round  bench/masked_step.py: library loop vs bare loop, one lottery round of LeNet-300-100 and of Conv6
#   bench-lenet  bench/population.py: LeNet-300-100 alone and in populations of 8, 27 and 55
#   bench-conv6  bench/population.py: Conv6 alone and in populations of 8, 27 and 55
#   throughput   bench/population.py: ms per member-step, eager and as CUDA graphs, of LeNet-300-100 alone and in
#                populations of 1, 8, 27, 55, 110, 220, and of Conv6 alone and of 1, 8, 27; graphs vs eager exact
#   full-round   bench/full_round.py: one full-protocol round (50,000 steps) of the FC criteria study's 55 runs as
#                one population, timed; the study's wall time projected from it
#   compile      bench/population.py: LeNet-300-100, K=55, torch.compile(mode="reduce-overhead") of the step vs
#                eager and graphs, and whether its numbers are the eager step's (compilers offline: may fail alone)
#
# Each step runs under its own timeout, all of them within GPU_CHECK_BUDGET seconds (default 480: under 9 minutes
# in the worst case); a summary table comes last. The whole log goes to $OUT/gpu-check.log (OUT: default
# ./gpu-check-out), working files (run database, pytest's) to a folder in /tmp, removed at the end. Nothing is
# installed outside GPU_CHECK_SITE (default /tmp/site): the machine's own Python environment is used as it is.
#
# Environment: PYTHON (default python3), GPU_CHECK_DEVICE (cuda; cpu: a dry run of every step on the CPU at tiny
# sizes, to check the plumbing where there is no GPU), OUT, GPU_CHECK_SITE, GPU_CHECK_BUDGET.
# Exit status: 0 every step passed, 1 a step failed or timed out, 2 a bad argument, 3 no GPU.
set -uo pipefail
cd "$(dirname "$0")/.."

STEPS=(env wheels tests experiments bench-round bench-lenet bench-conv6 throughput full-round compile)
# seconds; the first seven 480 together (each step may take 5 s more to be killed); the last three are issue 23's
# measurements: `tests throughput full-round compile` take about 5 minutes on an H200 (GPU_CHECK_BUDGET=540)
declare -A LIMIT=([env]=20 [wheels]=30 [tests]=130 [experiments]=105 [bench-round]=75 [bench-lenet]=50
                  [bench-conv6]=70 [throughput]=150 [full-round]=150 [compile]=120)

export PYTHON=${PYTHON:-python3}
export GPU_CHECK_DEVICE=${GPU_CHECK_DEVICE:-cuda}
export GPU_CHECK_SITE=${GPU_CHECK_SITE:-/tmp/site}
BUDGET=${GPU_CHECK_BUDGET:-480}
export OUT=${OUT:-$PWD/gpu-check-out}
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 PYTHONWARNINGS=${PYTHONWARNINGS:-ignore}
export PYTHONPATH="$GPU_CHECK_SITE:$PWD${PYTHONPATH:+:$PYTHONPATH}" PATH="$GPU_CHECK_SITE/bin:$PATH"

case "$GPU_CHECK_DEVICE" in cuda | cpu) ;; *)
    echo "gpu-check: GPU_CHECK_DEVICE=$GPU_CHECK_DEVICE is not valid; valid choices: cuda, cpu" >&2; exit 2 ;;
esac
selected=(env)  # always first: it is the GPU check
for step in "$@"; do
    if [ -z "${LIMIT[$step]:-}" ]; then
        echo "gpu-check: unknown step '$step'; valid steps: ${STEPS[*]}" >&2
        exit 2
    fi
    [ "$step" != env ] && selected+=("$step")
done
[ $# -eq 0 ] && selected=("${STEPS[@]}")
if [[ " ${selected[*]} " != *" wheels "* ]]; then  # every step after env imports what the wheels carry
    selected=(env wheels "${selected[@]:1}")
fi

mkdir -p "$OUT"
export WORK
WORK=$(mktemp -d /tmp/gpu-check.XXXXXX)
exec > >(tee -a "$OUT/gpu-check.log") 2>&1
tee_pid=$!

finish() {  # finish STATUS: stop what the check left running, let the log catch up, exit
    if [ -f "$WORK/home/db.pid" ]; then
        TICKETLAB_HOME="$WORK/home" "$PYTHON" -m experiments.localdb stop > /dev/null 2>&1
    fi
    rm -rf "$WORK"
    exec 1>&- 2>&-
    wait "$tee_pid" 2> /dev/null
    exit "$1"
}

note() {  # note TEXT: the step's one-line result, for the summary table
    printf '%s\n' "$*" > "$WORK/note"
}

# ---------------------------------------------------------------------------------------------------------- steps

step_env() {
    "$PYTHON" - <<'EOF'
import os, platform, shutil, subprocess, sys

import torch

from masking import training

want = os.environ["GPU_CHECK_DEVICE"]
if want == "cuda" and not torch.cuda.is_available():
    print(f"gpu-check: torch {torch.__version__} (CUDA {torch.version.cuda}) sees no CUDA GPU on this machine; "
          "nothing to check (GPU_CHECK_DEVICE=cpu dry-runs every step on the CPU)")
    sys.exit(3)
smi = "nvidia-smi not found"
if shutil.which("nvidia-smi"):
    smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                         capture_output=True, text=True, timeout=15).stdout.strip() or "nvidia-smi printed nothing"
device = torch.device(want)
print(f"python {platform.python_version()} at {sys.executable}; torch {torch.__version__}, CUDA {torch.version.cuda}, "
      f"cuDNN {torch.backends.cudnn.version()}")
print(f"nvidia-smi: {smi}")
if want == "cuda":
    props = torch.cuda.get_device_properties(0)
    print(f"torch sees {torch.cuda.device_count()} GPU(s); cuda:0 {props.name}, compute capability "
          f"{props.major}.{props.minor}, {props.multi_processor_count} SMs, {props.total_memory / 2**30:.0f} GiB")
gpu = torch.device("cuda", 0)
print(f"float32 precision (fp32_precision API): torch's defaults {training.fp32_precision(gpu)} on CUDA, "
      f"{training.fp32_precision(torch.device('cpu'))} on the CPU; ticketlab sets "
      f"{training.FP32_PRECISION} for CUDA runs")
with open(os.path.join(os.environ["WORK"], "note"), "w") as note:
    name = torch.cuda.get_device_name(0) if want == "cuda" else platform.processor() or platform.machine()
    driver = smi.split(", ")[1] if smi.count(", ") >= 2 else "?"
    print(f"{name}; torch {torch.__version__}, CUDA {torch.version.cuda}, driver {driver}", file=note)
EOF
}

step_wheels() {
    shopt -s nullglob
    local wheels=(.whl/*.whl)
    if "$PYTHON" -c "import sacred, pymongo, secantus" 2> /dev/null; then
        note "$PYTHON has what the steps import: nothing installed"
    elif [ ${#wheels[@]} -eq 0 ]; then
        note "no carried wheels in .whl/: $PYTHON's own packages"
    else
        "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
            --target "$GPU_CHECK_SITE" "${wheels[@]}" || return 1
        note "${#wheels[@]} wheels into $GPU_CHECK_SITE"
    fi
    "$PYTHON" -c "import sacred, pymongo, gridfs, secantus
from experiments.localdb import server_executable
print('sacred', sacred.__version__, 'pymongo', pymongo.__version__, 'SecantusDB', server_executable())"
}

step_tests() {
    local files
    mapfile -t files < <(grep -l "pytest.mark.cuda" tests/test_*.py)
    echo "test files with CUDA tests: ${files[*]}"
    "$PYTHON" -m pytest -q -m cuda -p no:cacheprovider --basetemp "$WORK/pytest" -o addopts="-ra --strict-markers" \
        "${files[@]}" \
        | tee "$WORK/tests.out"
    local rc=${PIPESTATUS[0]}
    note "$(tail -n 1 "$WORK/tests.out")"
    return "$rc"
}

step_experiments() {
    export TICKETLAB_HOME="$WORK/home" TICKETLAB_DATA="$WORK/home/data" TICKETLAB_FAILURE_DIR="$WORK/home/failed"
    local port db rc=0
    port=$("$PYTHON" -c "from experiments.localdb import free_port; print(free_port())")
    "$PYTHON" -m experiments.localdb start --port "$port" || return 1
    db="127.0.0.1:$port:gpucheck"
    local shared=(fast data.name=synthetic "training.device=$GPU_CHECK_DEVICE") convs=(arch.name=conv2
        data.synthetic_shape=cifar)
    if [ "$GPU_CHECK_DEVICE" = cpu ]; then  # the plumbing only: a few steps, no conv net
        shared+=(training.iterations=20 training.eval_every=10 data.synthetic_train=1200 data.val_size=200
                 data.synthetic_test=200)
        convs=()
    fi
    echo "+ lottery"; "$PYTHON" -m experiments.lottery -m "$db" with "${shared[@]}" seed=1 || rc=1
    echo "+ supermask"; "$PYTHON" -m experiments.supermask -m "$db" with "${shared[@]}" seed=1 || rc=1
    echo "+ population ${convs[*]:-(lenet300_100)}"
    "$PYTHON" -m experiments.population -m "$db" --members "seed=1; criterion.name=random,seed=2; seed=3" \
        with "${shared[@]}" "${convs[@]}" pruning.rounds=1 || rc=1
    "$PYTHON" - "$port" <<'EOF' || rc=1
import os, sys

import pymongo

expected = "cuda:0" if os.environ["GPU_CHECK_DEVICE"] == "cuda" else "cpu"
runs = list(pymongo.MongoClient(f"127.0.0.1:{sys.argv[1]}")["gpucheck"]["runs"].find(sort=[("_id", 1)]))
print(f"{'run':>3} {'experiment':10} {'status':10} {'device':7} {'fp32':5} {'population':10} {'result':>7}")
for run in runs:
    execution = run.get("info", {}).get("execution", {})
    population = run.get("info", {}).get("population")
    print(f"{run['_id']:>3} {run['experiment']['name']:10} {run['status']:10} {execution.get('device', '?'):7} "
          f"{execution.get('fp32_precision', '?'):5} {population['index'] if population else '-':>10} "
          f"{run.get('result') or 0:7.4f}")
good = [r for r in runs if r["status"] == "COMPLETED" and r["info"]["execution"]["device"] == expected
        and r["info"]["execution"]["fp32_precision"] == "ieee"]
with open(os.path.join(os.environ["WORK"], "note"), "w") as note:
    print(f"{len(good)} of {len(runs)} runs COMPLETED on {expected} at ieee float32 (5 expected)", file=note)
sys.exit(0 if len(good) == len(runs) == 5 else 1)
EOF
    "$PYTHON" -m experiments.localdb stop
    return "$rc"
}

step_bench_round() {
    local args=(--device "$GPU_CHECK_DEVICE" --steps 300 --repeats 3 --round-steps 1000 --archs lenet300_100,conv6)
    [ "$GPU_CHECK_DEVICE" = cpu ] && args=(--device cpu --steps 20 --repeats 1 --round-steps 50 --archs lenet300_100)
    "$PYTHON" bench/masked_step.py "${args[@]}" | tee "$WORK/bench.out"
    local rc=${PIPESTATUS[0]}
    note "$(awk '/: one lottery round/ {arch = $1} /s per 1,000 steps, all included/ {
        printf "%s%s %s ms/step", (n++ ? ", " : "a round, evaluations included: "), arch, $1}' "$WORK/bench.out")"
    return "$rc"
}

bench_population() {  # bench_population ARCH: eager steps, as the first GPU run measured them
    local args=(--device "$GPU_CHECK_DEVICE" --arch "$1" --sizes 8,27,55 --repeats 3 --variants eager)
    [ "$GPU_CHECK_DEVICE" = cpu ] && args=(--device cpu --arch "$1" --sizes 2 --repeats 1 --variants eager
                                           --block-seconds 0.02 --train 240)
    "$PYTHON" bench/population.py "${args[@]}" | tee "$WORK/bench.out"
    local rc=${PIPESTATUS[0]}
    note "$(summaries "$WORK/bench.out")"
    return "$rc"
}
step_bench_lenet() { bench_population lenet300_100; }
step_bench_conv6() { bench_population conv6; }

summaries() {  # summaries FILE: the "summary:" lines of a bench's output, joined, without the word
    sed -n 's/^summary: //p' "$1" | paste -sd '|' | sed 's/|/ | /g'
}

step_throughput() {
    local lenet=(--device "$GPU_CHECK_DEVICE" --arch lenet300_100 --sizes 1,8,27,55,110,220 --repeats 3
                 --variants eager,graphs) conv=(--device "$GPU_CHECK_DEVICE" --arch conv6 --sizes 1,8,27 --repeats 3
                 --variants eager,graphs)
    if [ "$GPU_CHECK_DEVICE" = cpu ]; then  # the plumbing only: tiny data, short blocks, Conv2 for Conv6
        lenet=(--device cpu --arch lenet300_100 --sizes 1,2 --repeats 1 --block-seconds 0.02 --train 1200)
        conv=(--device cpu --arch conv2 --sizes 2 --repeats 1 --block-seconds 0.02 --train 240)
    fi
    local rc=0
    "$PYTHON" bench/population.py "${lenet[@]}" | tee "$WORK/bench.out"
    [ "${PIPESTATUS[0]}" -eq 0 ] || rc=1
    "$PYTHON" bench/population.py "${conv[@]}" | tee -a "$WORK/bench.out"
    [ "${PIPESTATUS[0]}" -eq 0 ] || rc=1
    note "$(summaries "$WORK/bench.out")"
    return "$rc"
}

step_full_round() {
    local args=(--device "$GPU_CHECK_DEVICE")
    [ "$GPU_CHECK_DEVICE" = cpu ] && args=(--device cpu --members 3 --steps 20 --eval-every 10 --train 1200
                                           --val 200 --test 200)
    "$PYTHON" bench/full_round.py "${args[@]}" | tee "$WORK/bench.out"
    local rc=${PIPESTATUS[0]}
    note "$(summaries "$WORK/bench.out")"
    return "$rc"
}

step_compile() {
    local args=(--device "$GPU_CHECK_DEVICE" --arch lenet300_100 --sizes 55 --repeats 3
                --variants eager,graphs,compile)
    [ "$GPU_CHECK_DEVICE" = cpu ] && args=(--device cpu --arch lenet300_100 --sizes 2 --repeats 1
                                           --block-seconds 0.02 --train 1200 --variants eager,compile
                                           --compile-backend eager)
    "$PYTHON" bench/population.py "${args[@]}" | tee "$WORK/bench.out"
    local rc=${PIPESTATUS[0]}
    note "$(grep -h '^exact: compile\|failed' "$WORK/bench.out" | head -n 1); $(summaries "$WORK/bench.out")"
    return "$rc"
}

export -f note step_env step_wheels step_tests step_experiments step_bench_round step_bench_lenet step_bench_conv6 \
    bench_population summaries step_throughput step_full_round step_compile

# ---------------------------------------------------------------------------------------------------------- run

declare -a ROWS
failed=0
for step in "${selected[@]}"; do
    left=$((BUDGET - SECONDS))
    limit=${LIMIT[$step]}
    [ "$left" -lt "$limit" ] && limit=$left
    if [ "$limit" -lt 5 ]; then
        ROWS+=("$step|skipped|0|out of the ${BUDGET} s budget")
        failed=1
        continue
    fi
    rm -f "$WORK/note"
    started=$SECONDS
    if [ "$step" = env ]; then  # its output waits: without a GPU, its one line is all the check prints
        timeout --kill-after=5 "$limit" bash -c step_env > "$WORK/env.out" 2>&1
        rc=$?
        if [ "$rc" -eq 3 ]; then
            cat "$WORK/env.out"
            finish 3
        fi
        echo "gpu-check $(date -u +%FT%TZ) on $(hostname): steps ${selected[*]}; device $GPU_CHECK_DEVICE; log" \
             "$OUT/gpu-check.log"
        echo
        echo "=== env (limit ${limit} s)"
        cat "$WORK/env.out"
    else
        echo
        echo "=== $step (limit ${limit} s)"
        timeout --kill-after=5 "$limit" bash -c "step_${step//-/_}"
        rc=$?
    fi
    took=$((SECONDS - started))
    case $rc in
        0) status=ok ;;
        124 | 137) status="TIMEOUT"; failed=1 ;;
        *) status="FAILED ($rc)"; failed=1 ;;
    esac
    ROWS+=("$step|$status|$took|$(head -n 1 "$WORK/note" 2> /dev/null)")
    if [ "$step" = env ] && [ "$rc" -ne 0 ]; then
        break  # without a working torch nothing else can run
    fi
done

echo
echo "=== summary ($SECONDS s of the ${BUDGET} s budget; device $GPU_CHECK_DEVICE)"
printf '%-12s %-11s %5s  %s\n' step status s result
for row in "${ROWS[@]}"; do
    IFS='|' read -r step status took result <<< "$row"
    printf '%-12s %-11s %5s  %s\n' "$step" "$status" "$took" "$result"
done
finish "$failed"
