#!/usr/bin/env bash
# One prepared check for a machine with an NVIDIA GPU (run it as ONE call, no network needed):
#
#   1. environment: torch, CUDA, the GPU and its memory (no CUDA: says so, exits 0);
#   2. the tests that need CUDA (found by bench/gpu_check.py gpu-tests), with pytest;
#   3. CPU-vs-GPU agreement in float64 of every command on the shipped samples: each run with
#      --device cpu and --device cuda, every table column compared (floats within 1e-6 relative
#      or 1e-9 absolute, everything else equal): `agree <command> max_rel=<x> PASS|FAIL`;
#   4. speed of jacobian, estimate-gap and transitions on a CIFAR-size MLP
#      (3072-100-100-100-100-10, two checkpoints, random uint8 images: 10,000 train, 2,000
#      test), float32, in-process: the median of 2 timed runs (after a warm-up on the GPU):
#      `speed <command> cpu=<s> gpu=<s> ratio=<cpu/gpu>`.
#
# Usage (from anywhere; ~3-6 min, at most ~8):  bash bench/gpu_check.sh
#   $OUT set: the whole log also goes to $OUT/gpu_check.txt.
#   GPU_CHECK_DEVICE=cpu  dry run of stages 2-4 without a GPU (cpu against cpu: max_rel 0).
#   GPU_CHECK_TRAIN / GPU_CHECK_TEST  sizes of the random CIFAR sets (10000 / 2000).
#   GPU_CHECK_COLD=1  stage 4 also times one run per device in a fresh process.
#   PYTHON  the interpreter (default python, else .venv/bin/python if python lacks torch).
# Every stage has its own time limit; a failing stage prints FAIL and the rest still runs; the
# exit code is 1 if any stage failed (grep '^RESULT' for the one-line verdict).
set -u

cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 2
ROOT=$(pwd)
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
PY=${PYTHON:-python}
if ! "$PY" -c 'import torch' >/dev/null 2>&1 && [ -x "$ROOT/.venv/bin/python" ]; then
    PY="$ROOT/.venv/bin/python"
fi
DEVICE=${GPU_CHECK_DEVICE:-cuda}
N_TRAIN=${GPU_CHECK_TRAIN:-10000}
N_TEST=${GPU_CHECK_TEST:-2000}
COLD=${GPU_CHECK_COLD:-0}
export MPLBACKEND=Agg NO_COLOR=1 COLUMNS=200 PYTHONWARNINGS=ignore::DeprecationWarning

TMP=$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX") || exit 2
trap 'rm -rf "$TMP"' EXIT
T0=$SECONDS
HELPER=("$PY" "$ROOT/bench/gpu_check.py")

# Stage deadlines, in seconds from the start (the whole script stays under 8 minutes: each
# command's timeout is cut to its stage's deadline, and a command that ignores SIGTERM is
# killed 10 s later).
END_STAGE1=45
END_STAGE2=150
END_STAGE3=300
END_STAGE4=460

FAILED=()
fail() { FAILED+=("$1"); }

# limit DEADLINE CAP: a command's timeout, the smaller of CAP and the time left to DEADLINE
# (at least 1: `timeout 0` would mean no limit at all).
limit() {
    local left=$(($1 - (SECONDS - T0)))
    ((left < 1)) && left=1
    if ((left < $2)); then echo "$left"; else echo "$2"; fi
}

# show_tail FILE: the last lines of a failed command's stderr, indented.
show_tail() { tail -n "${2:-8}" "$1" 2>/dev/null | sed 's/^/    | /'; }

stage1() {
    echo "== stage 1: environment"
    echo "python=$PY root=$ROOT device_under_test=$DEVICE date=$(date -u +%FT%TZ)"
    if command -v nvidia-smi >/dev/null 2>&1; then
        timeout -k 5 20 nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 |
            sed 's/^/nvidia-smi: /'
    fi
    local log="$TMP/env.txt"
    if ! timeout -k 10 "$(limit $END_STAGE1 40)" "${HELPER[@]}" env >"$log" 2>&1; then
        cat "$log"
        echo "stage1 FAIL (torch does not import or CUDA does not answer; the other stages still run)"
        fail stage1
        return
    fi
    cat "$log"
    if [[ "$DEVICE" == cuda* ]] && ! grep -q '^cuda_available=True' "$log"; then
        echo "no CUDA device: stages 2-4 need one (GPU_CHECK_DEVICE=cpu dry-runs them on the CPU)"
        echo "RESULT PASS (stage 1 only, no CUDA) elapsed=$((SECONDS - T0))s"
        exit 0
    fi
    echo "stage1 PASS"
}

stage2() {
    echo "== stage 2: tests that need CUDA"
    local ids
    mapfile -t ids < <(timeout -k 5 30 "${HELPER[@]}" gpu-tests 2>/dev/null)
    if ((${#ids[@]} == 0)); then
        echo "stage2 FAIL (found no test that mentions CUDA)"
        fail stage2
        return
    fi
    printf 'test-node %s\n' "${ids[@]}"
    # Whole files with -k NAME or NAME...: a module that cannot be imported (an optional package
    # missing) or skips itself (pytest.importorskip) then costs its own tests only.
    local files=() names=() id
    for id in "${ids[@]}"; do
        files+=("${id%%::*}")
        names+=("${id##*::}")
    done
    mapfile -t files < <(printf '%s\n' "${files[@]}" | sort -u)
    local expr
    expr=$(printf ' or %s' "${names[@]}")
    expr=${expr# or }
    local extra=()
    # tests/conftest.py imports hypothesis; where it is absent, skip the conftest (it only sets
    # one torch thread and a hypothesis profile) rather than lose the whole stage.
    if ! "$PY" -c 'import hypothesis' >/dev/null 2>&1; then
        echo "note: hypothesis does not import: pytest --noconftest"
        extra+=(--noconftest -p no:hypothesispytest)
    fi
    local log="$TMP/pytest.txt" rc
    timeout -k 10 "$(limit $END_STAGE2 120)" "$PY" -m pytest -o addopts= -p no:cacheprovider -q -rfEs \
        --continue-on-collection-errors ${extra[@]+"${extra[@]}"} -k "$expr" "${files[@]}" >"$log" 2>&1
    rc=$?
    local rc_pytest=$rc
    grep -E '^(FAILED|ERROR|SKIPPED)' "$log" | cut -c1-220
    # A test module that does not import for want of an optional package (no importorskip) is
    # a skip, not a failure: every error a collection error naming a missing module, no FAILED.
    local n_err n_coll n_missing
    n_err=$(grep -c '^ERROR ' "$log")
    n_coll=$(grep -cE '^ERROR [^ :]+\.py( |$)' "$log")
    n_missing=$(grep -cE '^E +(ModuleNotFoundError|ImportError): No module named' "$log")
    if ((rc == 1 && n_err > 0 && n_err == n_coll && n_missing >= n_coll)) && ! grep -q '^FAILED' "$log"; then
        echo "note: $n_coll test module(s) not collected for a missing package: counted as skipped"
        grep -E '^E +(ModuleNotFoundError|ImportError): No module named' "$log" | sed 's/^E */    /'
        rc=0
    fi
    local last
    last=$(grep -E '[0-9]+ (passed|failed|skipped|error)' "$log" | tail -n 1)
    echo "pytest rc=$rc_pytest summary: ${last:-none}"
    if ((rc == 0)); then
        echo "stage2 PASS"
    else
        ((rc == 124)) && echo "pytest ran past its time limit"
        show_tail "$log" 25
        echo "stage2 FAIL"
        fail stage2
    fi
}

# agree NAME COMMAND ARGS...: one helper process runs the command in float64 on cpu and on
# $DEVICE (where it takes those options; otherwise twice as it is) and compares both tables.
agree() {
    local name=$1 tmo log="$TMP/agree-$1.log"
    shift
    tmo=$(limit $END_STAGE3 90)
    if ((tmo < 3)); then
        echo "agree $name max_rel=nan FAIL (stage 3 out of time)"
        fail "agree-$name"
        return
    fi
    timeout -k 10 "$tmo" "${HELPER[@]}" agree --device "$DEVICE" --tmp "$TMP" "$name" -- "$@" >"$log" 2>"$log.err"
    local rc=$?
    if ((rc == 0)); then
        cat "$log"
        return
    fi
    if grep -q "^agree $name " "$log"; then
        cat "$log"
    else
        echo "agree $name max_rel=nan FAIL (exit $rc$( ((rc == 124)) && echo ": timed out after ${tmo}s"))"
    fi
    show_tail "$log.err"
    fail "agree-$name"
}

stage3() {
    echo "== stage 3: cpu vs $DEVICE, float64, every command on the shipped samples"
    local S="$ROOT/sample_checkpoints"
    local D3="$S/digits-64-64-64-10" BN="$S/mnist1d-40-100-100-10-bn/epoch=60.safetensors"
    local NOBIAS="$S/digits-64-64-10-nobias/epoch=80.safetensors"
    agree info info "$D3/epoch=80.safetensors" "$BN" "$S/mnist1d-40-100-100-10-wd-lightning/epoch=60.pt"
    agree datasets datasets
    agree bound bound "$S"/digits-*/epoch=80.safetensors --data digits-test --limit 300
    agree bound-nodata bound "$S"/digits-*/epoch=80.safetensors "$BN"
    agree bound-bn bound "$BN" --data mnist1d-test --limit 300
    agree jacobian jacobian "$D3/epoch=30.safetensors" "$D3/epoch=80.safetensors" "$NOBIAS" \
        --data digits-test --limit 300 --seed 3
    agree jacobian-bn jacobian "$BN" --data mnist1d-test --limit 200 --tangent all
    agree activations activations "$D3/epoch=80.safetensors" "$NOBIAS" --data digits-test
    agree activations-bn activations "$BN" --data mnist1d-test --limit 300 --per-unit
    agree regions regions "$D3/epoch=80.safetensors" --data digits --test digits-test --limit 400 --seed 2
    agree regions-bn regions "$BN" --data mnist1d-test --limit 200
    agree transitions transitions "$D3/epoch=80.safetensors" --data digits-test --count 12 --seed 4 --jacobian
    agree transitions-random transitions "$D3/epoch=80.safetensors" --trajectory random-ellipse --count 6 --seed 4
    agree estimate-gap estimate-gap "$S"/digits-64-64-64-10*/epoch={30,80}.safetensors \
        "$S"/digits-64-32-10/epoch={30,80}.safetensors --train digits --test digits-test --limit 300
}

# speed NAME ARGS...: the tsens command on cpu and on $DEVICE, each in one helper process (tsens
# imported before timing): the median of 2 timed runs (1 where a second would not fit the time
# left), after one warm-up run on the GPU; with
# GPU_CHECK_COLD=1 first one run in a fresh process (start-up, imports, CUDA context, data).
speed() {
    local name=$1
    shift
    local dev tmo line t_cpu="" t_gpu="" c_cpu="" c_gpu=""
    for dev in cpu "$DEVICE"; do
        tmo=$(limit $END_STAGE4 150)
        if ((tmo < 5)); then
            echo "speed $name cpu=${t_cpu:-nan} gpu=nan ratio=nan FAIL (stage 4 out of time before --device $dev)"
            fail "speed-$name"
            return
        fi
        local warm=1 cold=()
        [ "$dev" = cpu ] && [ -z "$t_cpu" ] && warm=0
        [ "$COLD" = 1 ] && cold=(--cold)
        line=$(timeout -k 10 "$tmo" "${HELPER[@]}" speed --device "$dev" ${cold[@]+"${cold[@]}"} --warmup "$warm" --repeat 2 \
            --budget $((tmo * 4 / 5)) -- \
            "$@" --dtype float32 -o "$TMP/speed-$name-$dev.parquet" --force -q 2>"$TMP/speed-$name-$dev.log")
        echo "    $name ${line:-time device=$dev (no result: timed out after ${tmo}s?)}"
        if ! grep -q 'median=' <<<"$line"; then
            echo "speed $name cpu=${t_cpu:-nan} gpu=nan ratio=nan FAIL (--device $dev failed or timed out)"
            show_tail "$TMP/speed-$name-$dev.log"
            fail "speed-$name"
            return
        fi
        if [ -z "$t_cpu" ]; then
            t_cpu=$(grep -o 'median=[^ ]*' <<<"$line" | cut -d= -f2)
            c_cpu=$(grep -o 'cold=[^ ]*' <<<"$line" | cut -d= -f2)
        else
            t_gpu=$(grep -o 'median=[^ ]*' <<<"$line" | cut -d= -f2)
            c_gpu=$(grep -o 'cold=[^ ]*' <<<"$line" | cut -d= -f2)
        fi
    done
    local ratio
    ratio=$(ratio_of "$t_cpu" "$t_gpu")
    if [ "$COLD" = 1 ]; then
        echo "speed $name cpu=$t_cpu gpu=$t_gpu ratio=$ratio cold_cpu=$c_cpu cold_gpu=$c_gpu" \
            "cold_ratio=$(ratio_of "$c_cpu" "$c_gpu")"
    else
        echo "speed $name cpu=$t_cpu gpu=$t_gpu ratio=$ratio"
    fi
}

ratio_of() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f\n", a / b; else print "inf" }'; }

stage4() {
    echo "== stage 4: speed, cpu vs $DEVICE, float32, CIFAR-size MLP"
    local C="$TMP/cifar"
    if ! timeout -k 10 90 "${HELPER[@]}" make-cifar "$C" --checkpoints 2 --train "$N_TRAIN" --test "$N_TEST" \
        >"$TMP/make.txt" 2>&1; then
        show_tail "$TMP/make.txt"
        echo "stage4 FAIL (could not write the CIFAR-size checkpoints and data)"
        fail stage4
        return
    fi
    grep -v '^checkpoint=' "$TMP/make.txt"
    local ckpts=("$C"/run0/*.safetensors)
    speed jacobian jacobian "${ckpts[@]}" --data "$C/train.npz"
    speed transitions transitions "${ckpts[@]}" --data "$C/test.npz" --count 100 --seed 1
    speed estimate-gap estimate-gap "${ckpts[@]}" --train "$C/train.npz" --test "$C/test.npz"
}

main() {
    stage1 # a failure here (torch does not import, CUDA does not answer) is reported, not fatal
    echo "stage1 elapsed=$((SECONDS - T0))s"
    stage2
    echo "stage2 elapsed=$((SECONDS - T0))s"
    stage3
    echo "stage3 elapsed=$((SECONDS - T0))s"
    stage4
    echo "stage4 elapsed=$((SECONDS - T0))s"
    if ((${#FAILED[@]})); then
        echo "RESULT FAIL stages: ${FAILED[*]} elapsed=$((SECONDS - T0))s"
        exit 1
    fi
    echo "RESULT PASS elapsed=$((SECONDS - T0))s"
}

if [ -n "${OUT:-}" ] && mkdir -p "$OUT" 2>/dev/null; then
    main 2>&1 | tee "$OUT/gpu_check.txt"
    exit "${PIPESTATUS[0]}"
fi
main
