#!/usr/bin/env bash
# CI entry point of the Python client: pytest against a live server, then the notebooks.
# Run from anywhere after `npm ci` (for node_modules/.bin/deno) and the apt installs listed in README.md.
#
#   clients/python/run_tests.sh                 pytest, then notebooks/run_notebooks.sh
#   ZPRUNE_SKIP_NOTEBOOKS=1 clients/python/run_tests.sh   pytest only
#   clients/python/run_tests.sh -k golden       extra arguments go to pytest
#
# Exits non-zero when either part fails. Uses Debian's /usr/bin/python3 (override: ZPRUNE_PYTHON).
set -uo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
PY="${ZPRUNE_PYTHON:-/usr/bin/python3}"
[ -x "$PY" ] || PY="$(command -v python3)"
export PYTHONDONTWRITEBYTECODE=1

echo "== python client: pytest ($("$PY" --version 2>&1))"
start=$(date +%s)
(cd "$HERE" && "$PY" -m pytest -p no:cacheprovider -rfEs --durations=5 tests "$@")
pytest_status=$?
echo "== pytest exit $pytest_status in $(( $(date +%s) - start )) s"

nb_status=0
if [ -z "${ZPRUNE_SKIP_NOTEBOOKS:-}" ]; then
  echo "== notebooks"
  start=$(date +%s)
  ZPRUNE_PYTHON="$PY" "$REPO/notebooks/run_notebooks.sh"
  nb_status=$?
  echo "== notebooks exit $nb_status in $(( $(date +%s) - start )) s"
fi

if [ "$pytest_status" != 0 ] || [ "$nb_status" != 0 ]; then
  echo "== python client: FAILED (pytest $pytest_status, notebooks $nb_status)"
  exit 1
fi
echo "== python client: passed"
