# shellcheck shell=bash
# lib/fanout.sh — the one per-cluster fan-out: a function run for several clusters at once, each in
# its own subshell with CLUSTER set to it, results in one temporary directory that the one EXIT trap
# (on_exit) removes. Used by the API probes, status and every CLUSTER=all command.

# shellcheck source=common.sh
source "${BASH_SOURCE[0]%/*}/common.sh"

WORK="" WORK_OWNER=""

# work_dir: WORK = the temporary directory, created on first use by the shell that needs it and
#   removed by on_exit, the one EXIT trap, when that shell ends (a subshell that creates it, e.g.
#   the resolver's $(…), sets the trap for itself: subshells do not inherit traps). A subshell uses
#   its parent's. exit: 0, or mktemp's.
work_dir() {
  [[ -n $WORK ]] && return 0
  WORK=$(mktemp -d)
  WORK_OWNER=$BASHPID
  ((BASH_SUBSHELL == 0)) || trap on_exit EXIT
}

# per_cluster <tag> <function> <cluster…>: runs <function> for every cluster at once, in a subshell
#   with CLUSTER=<cluster> and errexit on, as if it were the script run for that cluster.
#   out: $WORK/<tag>.<cluster>.out (stdout), .err (stderr), .rc (its exit code). exit: 0.
per_cluster() {
  local tag=$1 fn=$2 c pids=()
  shift 2
  work_dir
  for c in "$@"; do
    {
      set +e
      (
        set -e
        CLUSTER=$c
        "$fn"
      ) >"$WORK/$tag.$c.out" 2>"$WORK/$tag.$c.err"
      echo $? >"$WORK/$tag.$c.rc"
    } &
    pids+=($!)
  done
  wait "${pids[@]}" # these only: a suspend's patch process (act.sh) may be waiting for its input
}

# fanout <function>: CLUSTER=all → <function> for every cluster at once, then each cluster's output
#   (stdout and stderr as written) with every line labelled "[cluster] ", and "[cluster] ✗ failed
#   (exit N)" after a failed one. exit: 1 if any cluster failed, else 0.
fanout() {
  local c rc=0 code
  FANOUT_FN=$1
  per_cluster fan fanout_one "${CLUSTER_LIST[@]}"
  for c in "${CLUSTER_LIST[@]}"; do
    sed "s/^/[$c] /" "$WORK/fan.$c.out"
    read -r code <"$WORK/fan.$c.rc"
    [[ $code == 0 ]] || {
      say "[$c] ✗ failed (exit $code)"
      rc=1
    }
  done
  return "$rc"
}

# fanout_one: one cluster of fanout: $FANOUT_FN with stderr merged into stdout, in order.
fanout_one() { "$FANOUT_FN" 2>&1; }
