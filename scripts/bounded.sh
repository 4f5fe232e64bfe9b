# Sourced by scripts/test.sh: bounded MINUTES WHAT COMMAND... runs COMMAND under a time limit (a wrong change can
# leave a test waiting on a promise nobody answers). Past MINUTES (a decimal is allowed) it stops COMMAND, says so
# and returns 124 (137 if COMMAND ignored the TERM for 30 s); otherwise COMMAND's own status. GNU timeout leads a
# process group of its own, so that it stops the servers a test started as well; Ctrl-C, which reaches only the
# terminal's group, and a TERM to the caller's subshell are passed on to it.
bounded() { # bounded MINUTES WHAT COMMAND...: runs COMMAND; past MINUTES, stops it and says so; COMMAND's status
  local minutes=$1 what=$2 pid="" status signals=0 n traps
  shift 2
  traps=$(trap -p INT TERM)
  # Set before the command starts: a signal between its start and a later trap ended this shell without passing it on,
  # leaving the command, in a group of its own, to run for the whole limit. Until `pid` is known, `signals` keeps it.
  trap 'signals=$((signals + 1)); if [ -n "$pid" ]; then kill -TERM "$pid" 2>/dev/null; fi' INT TERM
  timeout -k 30 "${minutes}m" "$@" &
  pid=$!
  if [ "$signals" != 0 ]; then kill -TERM "$pid" 2>/dev/null; fi
  while :; do
    n=$signals
    wait "$pid"
    status=$?
    # A trapped signal ends `wait` early with 128 + its number, whether or not the command has ended: wait again. Bash
    # keeps a reaped background command's status for every later `wait`, so this gets its own.
    [ "$signals" = "$n" ] && break
  done
  trap - INT TERM
  eval "$traps" # the caller's own, if it had any
  if [ "$status" = 124 ] || [ "$status" = 137 ]; then
    echo "$what: still running after $minutes min, stopped (a hung test; Deno names it: \"has been running for over\")"
  fi
  return "$status"
}
