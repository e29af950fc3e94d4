#!/usr/bin/env bash
# flux-ops.sh — the one entry point behind `task flux:*` (.taskfiles/flux/Taskfile.yaml): checks
# what a command needs, then runs it. The work lives in lib/, one file per concern:
#   common.sh     constants, inputs, output helpers      resolve.sh  APP/NAMESPACE → Flux objects
#   validate.sh   input validation (exit 2)               act.sh      suspend, resume, reconcile, bulk
#   preflight.sh  tools, kubeconfig, contexts, API        read.sh     status, check, events, diff, …
#   fanout.sh     the per-cluster fan-out, the one trap   logs.sh     the controllers' logs
#
# Inputs come ONLY from the environment (set by the `env:` of the Taskfile's runner task `ops`, never spliced into a
# shell line), so no user value is ever parsed by a shell:
#   FOPS_CLUSTERS  configured clusters (root Taskfile var CLUSTERS, space separated)
#   FOPS_CLUSTER   target cluster = kube context, or "all" for read-only commands
#   FOPS_APP FOPS_NAMESPACE FOPS_TYPE FOPS_FAILED FOPS_RESOURCE FOPS_LEVEL FOPS_SINCE FOPS_TAIL
#   FOPS_FOLLOW FOPS_CONTROLLER FOPS_WATCH FOPS_WAIT FOPS_SOURCE FOPS_SOURCE_KIND FOPS_GITOPS_DIR
#
# Usage: flux-ops.sh <command> [args]; the commands are those of main() below.
# Every error is ONE line on stderr, "error: <problem> — <fix>", and the exit code says which:
#   0 done   1 the operation failed (not found, ambiguous, not suspended / not Ready …)
#   2 bad input   3 bash, flux or kubectl missing or too old   4 kubeconfig or context missing
#   5 API server not answering within 5s   6 listing the cluster's Flux objects failed
set -euo pipefail
# bash 3.2 (macOS' /bin/bash) and 4.0-4.3 fail on empty arrays under `set -u` and lack mapfile/${x,,}:
# refuse them at once, in syntax they still parse.
bash_is_new_enough() { # bash_is_new_enough <major> <minor>: exit 0 for bash >= 4.4
  (($1 > 4 || ($1 == 4 && $2 >= 4)))
}
if ! bash_is_new_enough "${BASH_VERSINFO[0]}" "${BASH_VERSINFO[1]}"; then
  printf 'error: bash %s is too old — flux-ops.sh needs bash >= 4.4 (macOS: brew install bash)\n' "$BASH_VERSION" >&2
  exit 3
fi

FOPS_LIB=${BASH_SOURCE[0]%/*}/lib
[[ ${BASH_SOURCE[0]} == */* ]] || FOPS_LIB=lib
# shellcheck source=lib/common.sh
source "$FOPS_LIB/common.sh"
# shellcheck source=lib/validate.sh
source "$FOPS_LIB/validate.sh"
# shellcheck source=lib/fanout.sh
source "$FOPS_LIB/fanout.sh"
# shellcheck source=lib/preflight.sh
source "$FOPS_LIB/preflight.sh"
# shellcheck source=lib/resolve.sh
source "$FOPS_LIB/resolve.sh"
# shellcheck source=lib/act.sh
source "$FOPS_LIB/act.sh"
# shellcheck source=lib/read.sh
source "$FOPS_LIB/read.sh"
# shellcheck source=lib/logs.sh
source "$FOPS_LIB/logs.sh"

# main <command> [args]: every command starts with `preflight one|all` (validation, tools); its
# first request to a cluster then proves kubeconfig, context and API server (lib/preflight.sh).
main() {
  local cmd=${1:-}
  shift || true
  case $cmd in
  preflight) # the whole preflight at once, for an operator: flux-ops.sh preflight [one|all]
    preflight "${1:-one}"
    prove_clusters
    ;;
  validate) validate "${1:-one}" ;;
  resolve) preflight one && resolve "${1:-ks-first}" ;;
  suspend | resume | reconcile) preflight one && cmd_act "$cmd" ;;
  count) cmd_count "${1:-}" ;;
  bulk) cmd_bulk "$@" ;;
  status) status_kinds && preflight all && cmd_status ;;
  check) preflight all && cmd_check ;;
  list-suspended) preflight all && cmd_list_suspended ;;
  events) preflight all && cmd_events ;;
  alerts) preflight all && cmd_alerts ;;
  logs) preflight one && cmd_logs ;;
  diff) preflight one && cmd_diff ;;
  tree) preflight one && cmd_tree ;;
  trace) preflight one && cmd_trace ;;
  reconcile-source) preflight one && cmd_reconcile_source ;;
  *) die 2 "unknown command '${cmd//[^[:print:]]/?}' — this script is run by task flux:*; see task --list" ;;
  esac
}

trap on_exit EXIT
main "$@"
