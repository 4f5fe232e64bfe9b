#!/usr/bin/env bash
# The whole test suite: Deno's tests (CPU, WebGPU on any adapter, Bun, end to end), then the WebGPU parity tests again
# on emulated arithmetic beside the Python client's pytest suite and notebooks against a live server. Ends with one
# line "N passed, N failed".
set -uo pipefail
cd "$(dirname "$0")/.."
export NO_COLOR=1
log=$(mktemp -d)
passed=0
failed=0

# Each part runs under a time limit (scripts/bounded.sh), so that a test that hangs fails the run with its closing line
# instead of holding it until the CI's own limit. The limits are 5 to 10 times what the parts take on CI's 2 cores
# (deno test 7.5 min, Python 3 min, emulated 2 min on 2026-12-02), and together stay under its 90 minutes.
. scripts/bounded.sh
# Ctrl-C stops the whole run (its parts then end as above), not just the part running.
trap 'echo "stopped by Ctrl-C"; exit 130' INT

# Static checks (format, lint, type check of every module) count as one test.
if [ $# -eq 0 ]; then
  if ./node_modules/.bin/deno task check > "$log/check.txt" 2>&1; then
    passed=$((passed + 1)); echo "deno task check: ok"
  else
    failed=$((failed + 1)); tail -40 "$log/check.txt"; echo "deno task check: FAILED"
  fi
fi

# Deno: its summary reads "ok | 40 passed | 0 failed (12s)" or "FAILED | 39 passed | 1 failed (12s)".
# The full suite has just type-checked every module (`deno check .`, tests and workers included), so its tests run
# without checking again: `deno test` would check each worker module anew every time a test starts that worker (1 to
# 2 s a start here; gpu/webgpu_backend_test.ts took 80 s with those checks and 11 s without), which made the tests
# that bound a worker restart's time depend on the machine's load. A filtered run keeps Deno's own check.
deno_bin=node_modules/.bin/deno
no_check=()
if [ $# -eq 0 ]; then no_check=(--no-check); fi
bounded 40 "deno test" "$deno_bin" test -A "${no_check[@]}" "$@" 2>&1 | tee "$log/deno.txt"
deno_status=${PIPESTATUS[0]}
summary=$(grep -E '^(ok|FAILED) \| [0-9]+ passed' "$log/deno.txt" | tail -1)
p=$(sed -E 's/.*\| ([0-9]+) passed.*/\1/' <<<"$summary")
f=$(sed -E 's/.*\| ([0-9]+) failed.*/\1/' <<<"$summary")
if [ -z "$summary" ]; then # stopped (a time limit, a crash) before its summary: count the tests that finished
  p=$(grep -cE '^[^ ].* \.\.\. ok \(' "$log/deno.txt")
  f=$(grep -cE '^[^ ].* \.\.\. FAILED \(' "$log/deno.txt")
fi
passed=$((passed + ${p:-0}))
failed=$((failed + ${f:-0}))
if [ "$deno_status" != 0 ] && { [ "${f:-0}" = 0 ] || [ -z "$summary" ]; }; then
  failed=$((failed + 1)); echo "deno test exited $deno_status"
fi

# The WebGPU parity tests (their golden cases included) and the crafted-sum tests once more, on kernels whose float
# divisions and inverseSqrts are moved by up to 3 and 2 ULPs, hashed per input (WGSL's least accurate arithmetic,
# which lavapipe's is not; see bench/z_error_emulate.ts): the f32 error model must hold there too. One test, full suite
# only; not counted where no WebGPU adapter exists (the GPU tests are then ignored). It runs beside the Python suite:
# the two share nothing (each serves on its own free port), and on CI's two cores together they took 192 s where one
# after the other took 274 s (98 + 176), the Python suite keeping to its own answers under the load.
emulated=(bench/z_error_emulate.ts --div=3 --rsqrt=2 --test tests/gpu_parity_test.ts tests/crafted_sums_test.ts)
emulated_pid=""
if [ $# -eq 0 ]; then
  bounded 20 "emulated WGSL arithmetic" "$deno_bin" run -A "${emulated[@]}" > "$log/emulated.txt" 2>&1 &
  emulated_pid=$!
  # A run stopped early (Ctrl-C, a CI timeout) does not leave it computing.
  trap 'if [ -n "$emulated_pid" ]; then kill "$emulated_pid" 2>/dev/null; fi' EXIT
fi

# Python client and notebooks (only for the full suite, not when Deno test filters were given).
if [ $# -eq 0 ] && [ -x clients/python/run_tests.sh ]; then
  bounded 20 "python client and notebooks" clients/python/run_tests.sh 2>&1 | tee "$log/py.txt"
  py_status=${PIPESTATUS[0]}
  line=$(grep -E '^=+ .*(passed|failed|error).* in [0-9.]+s' "$log/py.txt" | tail -1)
  p=$(grep -oE '[0-9]+ passed' <<<"$line" | grep -oE '[0-9]+' || true)
  f=$(grep -oE '[0-9]+ (failed|errors?)' <<<"$line" | awk '{s += $1} END {print s + 0}')
  passed=$((passed + ${p:-0}))
  failed=$((failed + ${f:-0}))
  # The notebooks count as one test each way: they ran top to bottom and showed the expected figures, or not.
  if grep -q '^== notebooks exit 0' "$log/py.txt"; then passed=$((passed + 1));
  elif grep -q '^== notebooks exit' "$log/py.txt"; then failed=$((failed + 1)); fi
  if [ "$py_status" != 0 ] && [ "${f:-0}" = 0 ] && ! grep -q '^== notebooks exit [1-9]' "$log/py.txt"; then
    failed=$((failed + 1))
  fi
fi

if [ -n "$emulated_pid" ]; then
  wait "$emulated_pid"
  emulated_status=$?
  emulated_pid=""
  what="emulated WGSL arithmetic (WebGPU parity, crafted sums)"
  summary=$(grep -E '^(ok|FAILED) \| [0-9]+ passed' "$log/emulated.txt" | tail -1)
  if [ "$emulated_status" = 0 ] && grep -qE '\| 0 passed|[0-9]+ ignored' <<<"$summary"; then
    echo "$what: skipped (no WebGPU adapter: $summary)"
  elif [ "$emulated_status" = 0 ]; then
    passed=$((passed + 1)); echo "$what: ok ($summary)"
  else
    failed=$((failed + 1)); tail -60 "$log/emulated.txt"
    echo "$what: FAILED; rerun: ./node_modules/.bin/deno run -A ${emulated[*]}"
  fi
fi

rm -rf "$log"
echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
