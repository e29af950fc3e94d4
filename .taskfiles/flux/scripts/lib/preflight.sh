# shellcheck shell=bash
# lib/preflight.sh — what must hold before a command talks to a cluster, checked at (almost) no cost
# when all is well:
#   tools        flux >= MIN_FLUX and kubectl >= MIN_KUBECTL: found by `hash` (a builtin); their
#                versions are asked once and remembered in a cache file, valid while it is newer
#                than both binaries (bash -nt: no process). exit 3.
#   kubeconfig   a file exists (bash -f). exit 4.
#   clusters     kubeconfig, context and API server are proven by the command's first request to
#                each cluster, made within API_TIMEOUT: cluster_get for the commands that start
#                with a kubectl list (the resolver, status), prove_clusters (one GET /readyz per
#                cluster, at once) for those that start with flux.
#   explanation  only when that request fails, explain_failure runs the detailed probes and names
#                the cause in the order the checks were always judged: no or unreadable kubeconfig,
#                missing context (exit 4), API server not answering within API_TIMEOUT (exit 5; with
#                CLUSTER=all and other clusters answering, a warning line and the command goes on).

# shellcheck source=common.sh
source "${BASH_SOURCE[0]%/*}/common.sh"

PROVEN=false         # true once the cluster(s) of this (sub)shell answered a request
declare -A API_RC=() # cluster → exit code of its GET /readyz (probe_api)

# preflight <one|all>: validation (exit 2), the tools (exit 3), a kubeconfig file (exit 4): all
#   without a process when all is well. The clusters are proven by the command's first request
#   (cluster_get) or by prove_clusters.
preflight() {
  validate "${1:-one}"
  require_tools
  require_kubeconfig_file
}

# version_ge <"vX.Y.Z…"> <"X.Y">: exit 0 when the version is at least X.Y, else 1.
version_ge() {
  local have=$1 want=$2 hmaj hmin wmaj wmin
  [[ $have =~ v?([0-9]+)\.([0-9]+) ]] || return 1
  hmaj=${BASH_REMATCH[1]} hmin=${BASH_REMATCH[2]}
  wmaj=${want%%.*} wmin=${want#*.}
  ((hmaj > wmaj || (hmaj == wmaj && hmin >= wmin)))
}

# version_cache: out: the cache file of checked tool versions ("" without XDG_CACHE_HOME and HOME).
version_cache() {
  if [[ -n ${XDG_CACHE_HOME:-} ]]; then
    printf '%s' "$XDG_CACHE_HOME/flux-ops/versions"
  elif [[ -n ${HOME:-} ]]; then
    printf '%s' "$HOME/.cache/flux-ops/versions"
  fi
}

# require_tools: flux and kubectl on PATH at their minimum versions.
#   Cached: the file holds "ok flux>=<min> <path> kubectl>=<min> <path>" once both passed; it counts
#   while it is newer than both binaries and names the same minimums and paths. Otherwise both are asked (at once) and the
#   file is rewritten when they pass (a file that cannot be written only costs the next run the ask).
#   exit: 0, or 3 with one line.
require_tools() {
  hash flux 2>/dev/null || die 3 "flux CLI not found in PATH — install flux >= $MIN_FLUX (https://fluxcd.io/flux/installation/)"
  hash kubectl 2>/dev/null || die 3 "kubectl not found in PATH — install kubectl >= $MIN_KUBECTL (https://kubernetes.io/docs/tasks/tools/)"
  local flux_bin=${BASH_CMDS[flux]} kubectl_bin=${BASH_CMDS[kubectl]} cache line="" fv="" kv=""
  cache=$(version_cache)
  if [[ -n $cache && $cache -nt $flux_bin && $cache -nt $kubectl_bin ]]; then
    read -r line 2>/dev/null <"$cache" || true
    [[ $line == "ok flux>=$MIN_FLUX $flux_bin kubectl>=$MIN_KUBECTL $kubectl_bin" ]] && return 0
  fi
  work_dir
  { flux version --client >"$WORK/flux-version" 2>/dev/null || true; } &
  local pid=$!
  kubectl version --client >"$WORK/kubectl-version" 2>/dev/null || true
  wait "$pid"
  read -r fv <"$WORK/flux-version" || true
  version_ge "$fv" "$MIN_FLUX" || die 3 "flux CLI '${fv:-unknown}' is too old — install flux >= $MIN_FLUX"
  read -r kv <"$WORK/kubectl-version" || true
  version_ge "$kv" "$MIN_KUBECTL" || die 3 "kubectl '${kv:-unknown}' is too old — install kubectl >= $MIN_KUBECTL"
  [[ -n $cache ]] || return 0
  { [[ -d ${cache%/*} ]] || mkdir -p "${cache%/*}"; } 2>/dev/null || return 0
  printf 'ok flux>=%s %s kubectl>=%s %s\n' "$MIN_FLUX" "$flux_bin" "$MIN_KUBECTL" "$kubectl_bin" 2>/dev/null >"$cache" || true
}

# api_ready: GET /readyz of $CLUSTER within API_TIMEOUT: proves kubeconfig, context and API server
#   in one request. exit: kubectl's.
api_ready() { kc --request-timeout="$API_TIMEOUT" get --raw=/readyz; }

# probe_api <cluster…>: api_ready for each, at once. out: API_RC[cluster] = its exit code.
probe_api() {
  local c code
  per_cluster api api_ready "$@"
  for c in "$@"; do
    read -r code <"$WORK/api.$c.rc"
    API_RC[$c]=$code
  done
}

# prove_clusters: for commands whose first request is a flux command: one GET /readyz per target
#   cluster, at once. exit: 0 (PROVEN=true), or 4/5 as explain_failure decides.
prove_clusters() {
  local c failed=()
  probe_api "${TARGETS[@]}"
  for c in "${TARGETS[@]}"; do [[ ${API_RC[$c]} == 0 ]] || failed+=("$c"); done
  ((${#failed[@]} == 0)) || explain_failure "${failed[@]}"
  PROVEN=true
}

# cluster_get <variable> <kubectl get args…>: sets <variable> to the stdout of
#   `kubectl --context $CLUSTER get <args…>`. Until the cluster is proven, this first request is
#   also its preflight probe: made within API_TIMEOUT, quietly; when it fails, explain_failure names
#   the cause (exits 4 or 5), and when the API server does answer, the request is made once more
#   with LIST_TIMEOUT, its stderr shown. By name, not by output: it sets PROVEN and may exit the
#   script, which a command substitution would both keep to itself.
#   exit: 0, or kubectl's exit code of that last request.
cluster_get() {
  local -n got_=$1
  shift
  if ! $PROVEN; then
    if got_=$(kc --request-timeout="$API_TIMEOUT" get "$@" 2>/dev/null); then
      PROVEN=true
      return 0
    fi
    explain_failure "$CLUSTER"
    PROVEN=true
  fi
  # shellcheck disable=SC2034 # a nameref: sets the caller's variable
  got_=$(kc --request-timeout="$LIST_TIMEOUT" get "$@")
}

# explain_failure <cluster…>: why the first request to these clusters failed, judged in order:
#   kubeconfig (exit 4), contexts (exit 4), API servers (GET /readyz unless already probed; exit 5,
#   or with CLUSTER=all and some target clusters answering a "warning:" line and exit 0).
#   exit 0 also when every one of them answers: the request itself failed, the caller says so.
explain_failure() {
  local c need=()
  require_kubeconfig "$@"
  for c in "$@"; do [[ -n ${API_RC[$c]:-} ]] || need+=("$c"); done
  ((${#need[@]} == 0)) || probe_api "${need[@]}"
  require_api "$@"
}

# require_kubeconfig_file: a kubeconfig file exists ($KUBECONFIG's, or ~/.kube/config).
#   exit: 0, or 4 with one line.
require_kubeconfig_file() {
  local f files found=false
  if [[ -n ${KUBECONFIG:-} ]]; then
    IFS=: read -r -a files <<<"$KUBECONFIG"
    for f in "${files[@]}"; do [[ -f $f ]] && found=true; done
    $found || die 4 "KUBECONFIG='$KUBECONFIG' points at no readable file — export KUBECONFIG=<path to your kubeconfig> (e.g. task op:pull)"
  else
    [[ -f ${HOME:-}/.kube/config ]] || die 4 "no kubeconfig (KUBECONFIG unset and ~/.kube/config missing) — export KUBECONFIG=<path> (e.g. task op:pull)"
  fi
}

# require_kubeconfig <cluster…>: a kubeconfig file exists, kubectl reads it, and it has a context
#   named after each cluster. exit: 0, or 4 with one line.
require_kubeconfig() {
  local contexts c
  require_kubeconfig_file
  contexts=$(kubectl config get-contexts -o name 2>/dev/null) ||
    die 4 "kubectl cannot read the kubeconfig — check it with: kubectl config get-contexts"
  for c in "$@"; do
    [[ $'\n'$contexts$'\n' == *$'\n'"$c"$'\n'* ]] ||
      die 4 "kube context '$c' not found in the kubeconfig — add it (kubectl config get-contexts lists: ${contexts//$'\n'/ } )"
  done
}

# require_api <cluster…>: judges API_RC of these clusters. exit: 0, or 5 with one line; with
#   CLUSTER=all and fewer failures than target clusters, a "warning:" line on stderr and exit 0
#   (read-only tasks still report the clusters that answer, and fail at the end).
require_api() {
  local c failed=()
  for c in "$@"; do [[ ${API_RC[$c]:-1} == 0 ]] || failed+=("$c"); done
  ((${#failed[@]} == 0)) && return 0
  local hint="is the cluster up and reachable? try: kubectl --context ${failed[0]} cluster-info"
  if [[ $CLUSTER == all ]] && ((${#failed[@]} < ${#TARGETS[@]})); then
    printf 'warning: API server of cluster(s) %s did not answer within %s — %s\n' "${failed[*]}" "$API_TIMEOUT" "$hint" >&2
    return 0
  fi
  die 5 "API server of cluster(s) ${failed[*]} did not answer within $API_TIMEOUT — $hint"
}
