#!/usr/bin/env bash
# Executes both notebooks headlessly against a zprune server and checks their outputs.
#
#   notebooks/run_notebooks.sh            starts a CPU server on a free port (deno run -A main.ts), stops it at the end
#   ZPRUNE_URL=http://host:port notebooks/run_notebooks.sh   uses that server instead
#
# Needs: jupyter nbconvert and ipykernel for /usr/bin/python3 (Debian: jupyter-nbconvert python3-ipykernel),
# numpy, msgpack, torch, matplotlib; Deno (node_modules/.bin/deno after `npm ci`, or `deno` on PATH), whose
# Jupyter kernel is installed into a temporary folder (`deno jupyter --install`), not into your home.
# Executed notebooks are written to $ZPRUNE_NOTEBOOK_OUT (default: a temporary folder), never over the sources.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
PY="${ZPRUNE_PYTHON:-/usr/bin/python3}"
[ -x "$PY" ] || PY="$(command -v python3)"
if [ -n "${ZPRUNE_DENO:-}" ]; then DENO="$ZPRUNE_DENO"
elif [ -x "$REPO/node_modules/.bin/deno" ]; then DENO="$REPO/node_modules/.bin/deno"
else DENO="$(command -v deno)"; fi

WORK="$(mktemp -d)"
OUT="${ZPRUNE_NOTEBOOK_OUT:-$WORK/out}"
mkdir -p "$OUT"
SERVER_PID=""
cleanup() {
  if [ -n "$SERVER_PID" ]; then
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  rm -rf "$WORK/home"
}
trap cleanup EXIT

if [ -z "${ZPRUNE_URL:-}" ]; then
  # Port 0: the kernel picks a free port at bind time, so no other process can take it between choosing and binding;
  # the server's "zprune listening on URL" line says which.
  (cd "$REPO" && exec env -u ZPRUNE_TOKEN ZPRUNE_BACKEND=cpu PORT=0 NO_COLOR=1 "$DENO" run -A main.ts) \
    >"$WORK/server.log" 2>&1 &
  SERVER_PID=$!
  healthy=0
  for _ in $(seq 1 450); do
    if [ -z "${ZPRUNE_URL:-}" ]; then
      ZPRUNE_URL="$(sed -n 's/^zprune listening on \(http:[^ ]*\) .*/\1/p' "$WORK/server.log" | head -n 1)"
      [ -z "$ZPRUNE_URL" ] || export ZPRUNE_URL
    fi
    if [ -n "${ZPRUNE_URL:-}" ] &&
      "$PY" -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1] + "/healthz", timeout=2)' \
        "$ZPRUNE_URL" 2>/dev/null; then healthy=1; break; fi
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then echo "server exited:"; cat "$WORK/server.log"; exit 1; fi
    sleep 0.2
  done
  if [ "$healthy" != 1 ]; then echo "server not healthy after 90 s:"; cat "$WORK/server.log"; exit 1; fi
fi
echo "notebooks: server $ZPRUNE_URL"

# Deno's kernelspec, in a private Jupyter data folder.
mkdir -p "$WORK/home"
HOME="$WORK/home" "$DENO" jupyter --install >"$WORK/deno-install.log" 2>&1 || { cat "$WORK/deno-install.log"; exit 1; }
export JUPYTER_PATH="$WORK/home/.local/share/jupyter${JUPYTER_PATH:+:$JUPYTER_PATH}"

status=0
export ZPRUNE_NOTEBOOK_RESULTS="$OUT/prune_remote_deno.results.json"
rm -f "$ZPRUNE_NOTEBOOK_RESULTS"
for nb in prune_remote prune_remote_deno; do
  start=$(date +%s)
  if (cd "$HERE" && "$PY" -m jupyter nbconvert --to notebook --execute --ExecutePreprocessor.timeout=900 \
        "$nb.ipynb" --output-dir "$OUT" --output "$nb.executed.ipynb" >"$WORK/$nb.log" 2>&1); then
    echo "notebooks: $nb executed in $(( $(date +%s) - start )) s"
  else
    echo "notebooks: $nb FAILED to execute:"; tail -40 "$WORK/$nb.log"; status=1
  fi
done
[ "$status" = 0 ] || exit 1

echo "notebooks: executed copies in $OUT"
"$PY" "$HERE/check_notebooks.py" "$OUT/prune_remote.executed.ipynb" "$OUT/prune_remote_deno.executed.ipynb" \
  --reference "$REPO/models/zp-llama-9m/reference.json" --deno-results "$ZPRUNE_NOTEBOOK_RESULTS"
