# Sourced by scripts/test.sh: bounded MINUTES WHAT COMMAND... runs COMMAND under a time limit (a wrong change can
# leave a test waiting on a promise nobody answers). Past MINUTES (a decimal is allowed) it stops COMMAND, says so
# and returns 124 (137 if COMMAND ignored the TERM for 30 s); otherwise COMMAND's own status. GNU timeout leads a
# process group of its own, so that it stops the servers a test started as well; Ctrl-C, which reaches only the
# terminal's group, and a TERM to the caller's subshell are passed on to it.
bounded() { # bounded MINUTES WHAT COMMAND...: runs COMMAND; past MINUTES, stops it and says so; COMMAND's status
  local minutes=$1 what=$2 pid status
  shift 2
  timeout -k 30 "${minutes}m" "$@" &
  pid=$!
  trap 'kill -TERM "$pid" 2>/dev/null' INT TERM
  while :; do
    wait "$pid"
    status=$?
    kill -0 "$pid" 2>/dev/null || break # a trapped signal ends `wait` early; the command may still be stopping
  done
  if [ "$status" = 124 ] || [ "$status" = 137 ]; then
    echo "$what: still running after $minutes min, stopped (a hung test; Deno names it: \"has been running for over\")"
  fi
  return "$status"
}
