# shellcheck shell=bash
# lib/common.sh — constants, the inputs (FOPS_* environment) and the output helpers every other
# file uses. Sourced by flux-ops.sh only; defines functions and variables, runs nothing.
# shellcheck disable=SC2034 # the constants and inputs are used by the other lib files

# The lib's one include guard: every file sources this one, which loads once.
[[ -z ${FOPS_COMMON_LOADED:-} ]] || return 0
readonly FOPS_COMMON_LOADED=1

# Resources as resource.version.group: the versions the flux CLI (v2.7+) reads and writes itself.
# (kubectl reads a resource.group argument first as resource.version.group, misses, and then drops
# and refetches its discovery cache on every call: about 50 ms each.)
readonly KS_RES=kustomizations.v1.kustomize.toolkit.fluxcd.io
readonly HR_RES=helmreleases.v2.helm.toolkit.fluxcd.io
readonly SOURCE_RES=gitrepositories.v1.source.toolkit.fluxcd.io,ocirepositories.v1.source.toolkit.fluxcd.io,helmrepositories.v1.source.toolkit.fluxcd.io,helmcharts.v1.source.toolkit.fluxcd.io,buckets.v1.source.toolkit.fluxcd.io
# The same versions as apiVersion (the suspend patch names its objects by them).
readonly KS_API=kustomize.toolkit.fluxcd.io/v1
readonly HR_API=helm.toolkit.fluxcd.io/v2
readonly MIN_FLUX=2.7
readonly MIN_KUBECTL=1.34
# How long a cluster's API server has to answer its first request (the preflight's promise).
readonly API_TIMEOUT=5s
# How long a list may take once the API server is known to answer.
readonly LIST_TIMEOUT=30s
# `flux logs --follow` / `flux events --watch` would stop after flux's default 5m --timeout.
readonly STREAM_TIMEOUT=8760h
# Where the Flux controllers run (flux logs' --flux-namespace default).
readonly FLUX_NAMESPACE=flux-system
# The one jsonpath used by the resolver: Kind|namespace|name|spec.suspend|Ready status
# shellcheck disable=SC2016 # jsonpath, not a shell expansion
# The suspend record: annotations written in the same request as spec.suspend=true (and removed in
# the same request as spec.suspend=false): who, when (RFC 3339, UTC), why (REASON), and which
# suspend-all or namespace-wide run (its batch id).
readonly RECORD_BY=k8s-ops.io/suspended-by
readonly RECORD_AT=k8s-ops.io/suspended-at
readonly RECORD_REASON=k8s-ops.io/suspend-reason
readonly RECORD_BATCH=k8s-ops.io/suspend-batch
# The record of each object: Kind|namespace|name|by|at|reason|batch (list-suspended, status).
# shellcheck disable=SC2016 # jsonpath, not a shell expansion
readonly RECORD_FIELDS='{.metadata.annotations.k8s-ops\.io/suspended-by}{"|"}{.metadata.annotations.k8s-ops\.io/suspended-at}{"|"}{.metadata.annotations.k8s-ops\.io/suspend-reason}{"|"}{.metadata.annotations.k8s-ops\.io/suspend-batch}'
readonly RECORD_JSONPATH='{range .items[*]}{.kind}{"|"}{.metadata.namespace}{"|"}{.metadata.name}{"|"}'$RECORD_FIELDS'{"\n"}{end}'
readonly ROW_JSONPATH='{range .items[*]}{.kind}{"|"}{.metadata.namespace}{"|"}{.metadata.name}{"|"}{.spec.suspend}{"|"}{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}'

CLUSTERS="${FOPS_CLUSTERS:-infra apps}"
read -r -a CLUSTER_LIST <<<"$CLUSTERS"
CLUSTER="${FOPS_CLUSTER:-infra}"
APP="${FOPS_APP:-}"
NAMESPACE="${FOPS_NAMESPACE:-}"
TYPE="${FOPS_TYPE:-}"
FAILED="${FOPS_FAILED:-false}"
RESOURCE="${FOPS_RESOURCE:-}"
LEVEL="${FOPS_LEVEL:-}"
SINCE="${FOPS_SINCE:-}"
TIMEOUT="${FOPS_TIMEOUT:-5m}"
TAIL="${FOPS_TAIL:-}"
FOLLOW="${FOPS_FOLLOW:-}" # empty: stream when stdout is a terminal
CONTROLLER="${FOPS_CONTROLLER:-}"
WATCH="${FOPS_WATCH:-false}"
WAIT="${FOPS_WAIT:-true}"
SOURCE="${FOPS_SOURCE:-flux-system}"
SOURCE_KIND="${FOPS_SOURCE_KIND:-git}"
GITOPS_DIR="${FOPS_GITOPS_DIR:-.}"
REASON="${FOPS_REASON:-}"
BATCH="${FOPS_BATCH:-}"
ALL="${FOPS_ALL:-false}"
SUSPENDED_BY="${FOPS_SUSPENDED_BY:-}"
# status' resource families (TYPE=ks|hr|source|all), set by status_kinds.
KINDS=all

# die <exit> <message…>: the one-line error contract.
#   out: "error: <message>" on stderr. exit: <exit>, always.
die() {
  local code=$1
  shift
  printf 'error: %s\n' "$*" >&2
  exit "$code"
}

# on_exit: the script's one EXIT trap (set by flux-ops.sh; subshells do not inherit it): ends a
#   suspend patch process that got no objects (act.sh) and removes the temporary directory
#   (fanout.sh), each only in the shell that started it.
on_exit() {
  patcher_stop
  [[ -z $WORK || $WORK_OWNER != "$BASHPID" ]] || rm -rf "$WORK"
}

# say <words…>: one line on stdout. exit: 0.
say() { printf '%s\n' "$*"; }

# run <command…>: echoes "→ command" on stderr, then runs it (argv, never a string).
#   exit: the command's.
run() {
  printf '→ %s\n' "$*" >&2
  "$@"
}

# kc <kubectl args…>: kubectl on $CLUSTER (never the current context). exit: kubectl's.
kc() { kubectl --context "$CLUSTER" "$@"; }

# is_true <value>: exit 0 when the value is "true".
is_true() { [[ $1 == true ]]; }

# kind_arg <Kind>: out: the flux CLI's word for it (kustomization | helmrelease).
kind_arg() { [[ $1 == Kustomization ]] && printf kustomization || printf helmrelease; }

# kind_res <Kind>: out: its fully qualified resource name (kubectl never guesses the group).
kind_res() { [[ $1 == Kustomization ]] && printf '%s' "$KS_RES" || printf '%s' "$HR_RES"; }

# set_targets: TARGETS = the clusters this run talks to (CLUSTER, or every one of CLUSTERS for all).
set_targets() {
  if [[ $CLUSTER == all ]]; then TARGETS=("${CLUSTER_LIST[@]}"); else TARGETS=("$CLUSTER"); fi
}
