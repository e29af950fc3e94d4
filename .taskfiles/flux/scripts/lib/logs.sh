# shellcheck shell=bash
# lib/logs.sh — the Flux controllers' logs: flux logs (every controller, filtered to APP's objects),
# or one CONTROLLER's Deployment logs printed the way flux logs prints them.

# shellcheck source=common.sh
source "${BASH_SOURCE[0]%/*}/common.sh"

# cmd_logs: streams at a terminal (FOLLOW unset), prints the lines so far without one.
#   exit: flux logs' / kubectl logs', or the resolver's.
cmd_logs() {
  # FOLLOW unset: stream at a terminal (the operator's Ctrl-C ends it), print and exit otherwise.
  if [[ -z $FOLLOW ]]; then if [[ -t 1 ]]; then FOLLOW=true; else FOLLOW=false; fi; fi
  local want_kind="" want_ns=$NAMESPACE targets="" kind ns _rest kinds=() nss=()
  if [[ -n $APP ]]; then
    targets=$(resolve ks-first)
    # one stream: the kind when all targets share it, the namespace when all share it
    while IFS='|' read -r kind ns _rest; do
      [[ " ${kinds[*]} " == *" $kind "* ]] || kinds+=("$kind")
      [[ " ${nss[*]} " == *" $ns "* ]] || nss+=("$ns")
    done <<<"$targets"
    ((${#kinds[@]} == 1)) && want_kind=${kinds[0]}
    if ((${#nss[@]} == 1)); then want_ns=${nss[0]}; else want_ns=""; fi
  else
    prove_clusters
  fi
  if [[ -n $CONTROLLER ]]; then
    controller_logs "$targets"
    return
  fi
  local args=(--context "$CLUSTER")
  [[ -n $LEVEL ]] && args+=(--level "$LEVEL")
  [[ -n $SINCE ]] && args+=(--since "$SINCE")
  [[ -n $TAIL ]] && args+=(--tail "$TAIL")
  is_true "$FOLLOW" && args+=(--follow --timeout "$STREAM_TIMEOUT")
  [[ -n $want_kind ]] && args+=(--kind "$want_kind")
  if [[ -n $want_ns ]]; then args+=(-n "$want_ns"); else args+=(-A); fi
  [[ -n $APP ]] && args+=(--name "$APP")
  run flux logs "${args[@]}"
}

# controller_logs <resolver rows of APP, or "">: `flux logs` reads every Flux controller at once,
#   so this is kubectl logs of that controller's Deployment, filtered (LEVEL; with APP its resolved
#   objects exactly, else NAMESPACE) and printed the way flux logs prints them:
#   "<ts> <level> <Kind>/<name>.<ns> - <msg>". exit: kubectl logs'.
controller_logs() {
  local args=(--context "$CLUSTER" -n "$FLUX_NAMESPACE" logs "deployment/$CONTROLLER")
  [[ -n $SINCE ]] && args+=(--since "$SINCE")
  [[ -n $TAIL ]] && args+=(--tail "$TAIL")
  is_true "$FOLLOW" && args+=(--follow)
  run kubectl "${args[@]}" | format_logs "$1"
}

# field <json line> <key> <variable>: sets <variable> to the string value of the first "key":"…"
#   ("" if none): by name, not by output, so that format_logs forks nothing per line. exit: 0.
# shellcheck disable=SC2034 # value_ is a nameref: it sets the caller's variable
field() {
  local -n value_=$3
  local re="\"$2\":\"(([^\"\\\\]|\\\\.)*)\""
  value_=""
  [[ $1 =~ $re ]] && value_=${BASH_REMATCH[1]//\\\"/\"}
  return 0
}

# format_logs <resolver rows or "">: JSON log lines (stdin) → flux logs lines (stdout).
#   No subshell per line: a controller writes thousands of lines. exit: 0.
format_logs() {
  local rows=$'\n'$1 line level kind name ns text
  while IFS= read -r line; do
    [[ $line == "{"* ]] || continue
    field "$line" level level
    [[ -z $LEVEL || $level == "$LEVEL" ]] || continue
    field "$line" "reconciler kind" kind
    [[ -n $kind ]] || field "$line" controllerKind kind
    field "$line" name name
    field "$line" namespace ns
    if [[ -n $APP ]]; then
      [[ $rows == *$'\n'"$kind|$ns|$name|"* ]] || continue
    else
      [[ -z $NAMESPACE || $ns == "$NAMESPACE" ]] || continue
    fi
    field "$line" ts text
    printf '%s %s %s%s - ' "$text" "$level" "$kind" "${name:+/$name.$ns}"
    field "$line" msg text
    printf '%s ' "$text"
    field "$line" error text
    printf '%s\n' "$text"
  done
}
