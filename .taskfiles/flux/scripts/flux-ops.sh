#!/usr/bin/env bash
# flux-ops.sh — the one implementation behind `task flux:*` (.taskfiles/flux/Taskfile.yaml).
#
# Inputs come ONLY from the environment (set by the Taskfile's `env:` block, never spliced into a
# shell line), so no user value is ever parsed by a shell:
#   FOPS_CLUSTERS  configured clusters (root Taskfile var CLUSTERS, space separated)
#   FOPS_CLUSTER   target cluster = kube context, or "all" for read-only commands
#   FOPS_APP FOPS_NAMESPACE FOPS_TYPE FOPS_FAILED FOPS_RESOURCE FOPS_LEVEL FOPS_SINCE FOPS_TAIL
#   FOPS_FOLLOW FOPS_CONTROLLER FOPS_WATCH FOPS_WAIT FOPS_SOURCE FOPS_SOURCE_KIND FOPS_GITOPS_DIR
#
# Usage: flux-ops.sh <command> [args]; commands are listed in main() at the bottom.
# Every error is ONE line on stderr: "error: <problem> — <fix>", exit != 0.
set -euo pipefail
# bash 3.2 (macOS' /bin/bash) and 4.0-4.3 fail on empty arrays under `set -u` and lack mapfile/${x,,}:
# refuse them at once, in syntax they still parse.
if ((BASH_VERSINFO[0] < 4 || (BASH_VERSINFO[0] == 4 && BASH_VERSINFO[1] < 4))); then
  printf 'error: bash %s is too old — flux-ops.sh needs bash >= 4.4 (macOS: brew install bash)\n' "$BASH_VERSION" >&2
  exit 3
fi

readonly KS_RES=kustomizations.kustomize.toolkit.fluxcd.io
readonly HR_RES=helmreleases.helm.toolkit.fluxcd.io
readonly SOURCE_RES=gitrepositories.source.toolkit.fluxcd.io,ocirepositories.source.toolkit.fluxcd.io,helmrepositories.source.toolkit.fluxcd.io,helmcharts.source.toolkit.fluxcd.io,buckets.source.toolkit.fluxcd.io
readonly MIN_FLUX=2.7
readonly MIN_KUBECTL=1.34
readonly API_TIMEOUT=5s
# `flux logs --follow` / `flux events --watch` would stop after flux's default 5m --timeout.
readonly STREAM_TIMEOUT=8760h
# Where the Flux controllers run (flux logs' --flux-namespace default).
readonly FLUX_NAMESPACE=flux-system
# The one jsonpath used by the resolver: Kind|namespace|name|spec.suspend|Ready status
# shellcheck disable=SC2016 # jsonpath, not a shell expansion
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
KINDS=all

die() { # die <exit> <message>: the one-line error contract
  local code=$1
  shift
  printf 'error: %s\n' "$*" >&2
  exit "$code"
}
say() { printf '%s\n' "$*"; }
run() { # echo then run one flux/kubectl command (argv, never a string)
  printf '→ %s\n' "$*" >&2
  "$@"
}
kc() { kubectl --context "$CLUSTER" "$@"; }

# ---------------------------------------------------------------------------------------------
# Input validation (pure bash, no command runs before it passes)
# ---------------------------------------------------------------------------------------------
readonly DNS_LABEL='^[a-z0-9]([-a-z0-9]*[a-z0-9])?$'

is_true() { [[ $1 == true ]]; }

check_bool() { # check_bool NAME value
  [[ $2 =~ ^(true|false)$ ]] || die 2 "$1='$2' is not a boolean — use $1=true or $1=false"
}

check_name() { # check_name VAR value maxlen
  local var=$1 value=$2 max=$3
  [[ -z $value ]] && return 0
  if ((${#value} > max)); then
    die 2 "$var is ${#value} characters long — a Kubernetes name has at most $max"
  fi
  [[ $value =~ $DNS_LABEL ]] ||
    die 2 "$var='${value//[^[:print:]]/?}' is not a valid Kubernetes name — use lowercase letters, digits and '-' (e.g. $var=odoo)"
}

# validate <cluster-scope>: scope "one" (a single cluster) or "all" (CLUSTER=all allowed)
validate() {
  local scope=${1:-one} c ok=false
  if [[ $CLUSTER == all ]]; then
    [[ $scope == all ]] || die 2 "CLUSTER=all is only for read-only tasks (status, check, events, alerts, list-suspended) — pick one of: $CLUSTERS"
    ok=true
  fi
  for c in "${CLUSTER_LIST[@]}"; do [[ $CLUSTER == "$c" ]] && ok=true; done
  for c in "${CLUSTER_LIST[@]}"; do check_name CLUSTERS "$c" 63; done
  local allowed=$CLUSTERS
  [[ $scope == all ]] && allowed+=" all"
  $ok || die 2 "unknown CLUSTER='${CLUSTER//[^[:print:]]/?}' — use one of: $allowed"
  check_name APP "$APP" 253
  check_name NAMESPACE "$NAMESPACE" 63
  check_name SOURCE "$SOURCE" 253
  case $TYPE in
  '' | ks | kustomization | hr | helmrelease) ;;
  *) die 2 "TYPE='${TYPE//[^[:print:]]/?}' is not supported — use TYPE=ks or TYPE=hr" ;;
  esac
  case $KINDS in
  all | ks | hr | source) ;;
  *) die 2 "TYPE='${KINDS//[^[:print:]]/?}' is not supported — use TYPE=ks, hr, source or all" ;;
  esac
  case $SOURCE_KIND in
  git | oci | helm | bucket | chart) ;;
  *) die 2 "SOURCE_KIND='${SOURCE_KIND//[^[:print:]]/?}' is not supported — use git, oci, helm, bucket or chart" ;;
  esac
  check_bool FAILED "$FAILED"
  [[ -z $FOLLOW ]] || check_bool FOLLOW "$FOLLOW"
  case $CONTROLLER in
  '' | source-controller | kustomize-controller | helm-controller | notification-controller) ;;
  source | kustomize | helm | notification) CONTROLLER+=-controller ;;
  *) die 2 "CONTROLLER='${CONTROLLER//[^[:print:]]/?}' is not a Flux controller — use source, kustomize, helm or notification (e.g. CONTROLLER=helm)" ;;
  esac
  check_bool WATCH "$WATCH"
  check_bool WAIT "$WAIT"
  [[ -z $LEVEL || $LEVEL =~ ^(debug|info|error)$ ]] || die 2 "LEVEL='${LEVEL//[^[:print:]]/?}' is not supported — use LEVEL=debug, info or error"
  [[ -z $SINCE || $SINCE =~ ^[0-9]+(s|m|h)$ ]] || die 2 "SINCE='${SINCE//[^[:print:]]/?}' is not a duration — use e.g. SINCE=30s, 10m or 2h"
  [[ $TIMEOUT =~ ^[1-9][0-9]{0,4}(s|m|h)$ ]] || die 2 "TIMEOUT='${TIMEOUT//[^[:print:]]/?}' is not a duration — use e.g. TIMEOUT=90s, 5m or 1h"
  [[ -z $TAIL || $TAIL =~ ^[0-9]{1,7}$ ]] || die 2 "TAIL='${TAIL//[^[:print:]]/?}' is not a line count — use e.g. TAIL=100"
  if [[ -n $RESOURCE ]]; then
    [[ ${#RESOURCE} -le 300 && $RESOURCE =~ ^[a-z][a-z0-9.]*/[a-z0-9]([-a-z0-9.]*[a-z0-9])?$ ]] ||
      die 2 "RESOURCE='${RESOURCE//[^[:print:]]/?}' is not <kind>/<name> — use e.g. RESOURCE=deploy/gatus NAMESPACE=observability"
  fi
}

# ---------------------------------------------------------------------------------------------
# Preflight: tools, kubeconfig, contexts, API server (each failure says what to do)
# ---------------------------------------------------------------------------------------------
version_ge() { # version_ge "vX.Y.Z…" "X.Y"
  local have=$1 want=$2 hmaj hmin wmaj wmin
  [[ $have =~ v?([0-9]+)\.([0-9]+) ]] || return 1
  hmaj=${BASH_REMATCH[1]} hmin=${BASH_REMATCH[2]}
  wmaj=${want%%.*} wmin=${want#*.}
  ((hmaj > wmaj || (hmaj == wmaj && hmin >= wmin)))
}

# The probes are read-only and independent of each other, so they run at once (one process each,
# in the background); their results are then judged in a fixed order (tools, kubeconfig, contexts,
# API servers), so the first problem reported is the one a probe-by-probe preflight would report.
PROBES=""

probe() { # probe <name> <command…>: output to $PROBES/<name>, exit code to $PROBES/<name>.rc
  local name=$1
  shift
  if "$@" >"$PROBES/$name" 2>/dev/null; then echo 0; else echo $?; fi >"$PROBES/$name.rc"
}

probe_ok() { [[ $(<"$PROBES/$1.rc") == 0 ]]; }

start_probes() {
  local c
  PROBES=$(mktemp -d)
  # shellcheck disable=SC2064 # expand now: the directory is known
  trap "rm -rf '$PROBES'" EXIT
  probe flux-version flux version --client &
  probe kubectl-version kubectl version --client &
  probe contexts kubectl config get-contexts -o name &
  for c in $(target_clusters); do
    probe "api-$c" kubectl --context "$c" --request-timeout="$API_TIMEOUT" get --raw=/readyz &
  done
  wait
}

require_tools() {
  local v
  v=$(head -n1 "$PROBES/flux-version")
  version_ge "$v" "$MIN_FLUX" || die 3 "flux CLI '${v:-unknown}' is too old — install flux >= $MIN_FLUX"
  v=$(head -n1 "$PROBES/kubectl-version")
  version_ge "$v" "$MIN_KUBECTL" || die 3 "kubectl '${v:-unknown}' is too old — install kubectl >= $MIN_KUBECTL"
}

target_clusters() {
  if [[ $CLUSTER == all ]]; then printf '%s\n' "${CLUSTER_LIST[@]}"; else printf '%s\n' "$CLUSTER"; fi
}

require_kubeconfig() {
  local f found=false contexts c
  if [[ -n ${KUBECONFIG:-} ]]; then
    local IFS=:
    for f in $KUBECONFIG; do [[ -f $f ]] && found=true; done
    unset IFS
    $found || die 4 "KUBECONFIG='$KUBECONFIG' points at no readable file — export KUBECONFIG=<path to your kubeconfig> (e.g. task op:pull)"
  else
    [[ -f $HOME/.kube/config ]] || die 4 "no kubeconfig (KUBECONFIG unset and ~/.kube/config missing) — export KUBECONFIG=<path> (e.g. task op:pull)"
  fi
  probe_ok contexts || die 4 "kubectl cannot read the kubeconfig — check it with: kubectl config get-contexts"
  contexts=$(<"$PROBES/contexts")
  while read -r c; do
    grep -qxF -- "$c" <<<"$contexts" ||
      die 4 "kube context '$c' not found in the kubeconfig — add it (kubectl config get-contexts lists: $(tr '\n' ' ' <<<"$contexts"))"
  done < <(target_clusters)
}

require_api() {
  local c failed=() list
  mapfile -t list < <(target_clusters)
  for c in "${list[@]}"; do
    probe_ok "api-$c" || failed+=("$c")
  done
  ((${#failed[@]} == 0)) && return 0
  local hint="is the cluster up and reachable? try: kubectl --context ${failed[0]} cluster-info"
  if [[ $CLUSTER == all ]] && ((${#failed[@]} < ${#list[@]})); then
    # Read-only tasks over every cluster still report the ones that answer (and fail at the end).
    printf 'warning: API server of cluster(s) %s did not answer within %s — %s\n' "${failed[*]}" "$API_TIMEOUT" "$hint" >&2
    return 0
  fi
  die 5 "API server of cluster(s) ${failed[*]} did not answer within $API_TIMEOUT — $hint"
}

cmd_preflight() { # preflight [one|all]
  validate "${1:-one}"
  command -v flux >/dev/null 2>&1 || die 3 "flux CLI not found in PATH — install flux >= $MIN_FLUX (https://fluxcd.io/flux/installation/)"
  command -v kubectl >/dev/null 2>&1 || die 3 "kubectl not found in PATH — install kubectl >= $MIN_KUBECTL (https://kubernetes.io/docs/tasks/tools/)"
  start_probes
  require_tools
  require_kubeconfig
  require_api
}

# ---------------------------------------------------------------------------------------------
# THE resolver: APP / NAMESPACE / TYPE / FAILED / bulk → "Kind|namespace|name|suspend|ready" rows
# ---------------------------------------------------------------------------------------------
resources_for_type() {
  case $TYPE in
  ks | kustomization) printf '%s' "$KS_RES" ;;
  hr | helmrelease) printf '%s' "$HR_RES" ;;
  *) printf '%s,%s' "$KS_RES" "$HR_RES" ;;
  esac
}

# rows <scope-args…>: one server-side (field-)filtered list
rows() {
  kc --request-timeout=30s get "$(resources_for_type)" "$@" -o "jsonpath=$ROW_JSONPATH"
}

order_rows() { # order_rows ks-first|hr-first  (stdin rows → stdout)
  local first=Kustomization second=HelmRelease
  [[ $1 == hr-first ]] && first=HelmRelease second=Kustomization
  local all
  all=$(cat)
  grep "^$first|" <<<"$all" || true
  grep "^$second|" <<<"$all" || true
}

close_names() { # names close to $APP (substring or edit distance <= 2), one line
  kc --request-timeout=30s get "$(resources_for_type)" -A -o 'jsonpath={range .items[*]}{.metadata.name}{"\n"}{end}' 2>/dev/null |
    sort -u | awk -v want="$APP" '
      function dist(a, b,   i, j, la, lb, d, c) {
        la = length(a); lb = length(b)
        for (i = 0; i <= la; i++) d[i, 0] = i
        for (j = 0; j <= lb; j++) d[0, j] = j
        for (i = 1; i <= la; i++) for (j = 1; j <= lb; j++) {
          c = (substr(a, i, 1) == substr(b, j, 1)) ? 0 : 1
          d[i, j] = d[i-1, j] + 1
          if (d[i, j-1] + 1 < d[i, j]) d[i, j] = d[i, j-1] + 1
          if (d[i-1, j-1] + c < d[i, j]) d[i, j] = d[i-1, j-1] + c
        }
        return d[la, lb]
      }
      NF && (index($0, want) || index(want, $0) || dist($0, want) <= 2) { out = out (out ? ", " : "") $0; n++ }
      n >= 5 { exit }
      END { print out }'
}

# resolve <ks-first|hr-first> [bulk-filter]: prints ordered rows or fails with one line.
#   bulk-filter: suspended | unsuspended | failed | any (no APP/NAMESPACE needed)
resolve() {
  local order=$1 filter=${2:-} out scope=(-A) what
  [[ -n $NAMESPACE ]] && scope=(-n "$NAMESPACE")
  if [[ -n $APP ]]; then
    out=$(rows "${scope[@]}" --field-selector "metadata.name=$APP") ||
      die 6 "listing Flux objects on cluster $CLUSTER failed — check: kubectl --context $CLUSTER get $KS_RES -A"
    if [[ -z $out ]]; then
      local near
      near=$(close_names || true)
      what="no Kustomization or HelmRelease named '$APP'${NAMESPACE:+ in namespace $NAMESPACE} on cluster $CLUSTER"
      die 1 "$what — ${near:+did you mean: $near? }list them with: task flux:status CLUSTER=$CLUSTER"
    fi
    local dup
    dup=$(cut -d'|' -f1 <<<"$out" | sort | uniq -d | head -n1)
    if [[ -n $dup ]]; then
      local cands
      cands=$(awk -F'|' -v k="$dup" '$1 == k { printf "%s%s/%s", (n++ ? ", " : ""), $2, $3 }' <<<"$out")
      die 1 "'$APP' is ambiguous on cluster $CLUSTER: $dup $cands — add NAMESPACE=<one of those namespaces>"
    fi
  elif [[ -n $NAMESPACE || -n $filter ]]; then
    out=$(rows "${scope[@]}") ||
      die 6 "listing Flux objects on cluster $CLUSTER failed — check: kubectl --context $CLUSTER get $KS_RES -A"
    if [[ -z $out && -z $filter ]]; then
      die 1 "no Kustomization or HelmRelease in namespace $NAMESPACE on cluster $CLUSTER — list them with: task flux:status CLUSTER=$CLUSTER"
    fi
  else
    die 2 "APP or NAMESPACE is required — e.g. APP=odoo or NAMESPACE=business"
  fi
  case $filter in
  suspended) out=$(awk -F'|' '$4 == "true"' <<<"$out") ;;
  unsuspended) out=$(awk -F'|' '$4 != "true"' <<<"$out") ;;
  failed) out=$(awk -F'|' '$4 != "true" && $5 != "True"' <<<"$out") ;;
  esac
  [[ -z $out ]] && return 0
  order_rows "$order" <<<"$out"
}

kind_arg() { [[ $1 == Kustomization ]] && printf kustomization || printf helmrelease; }
kind_res() { [[ $1 == Kustomization ]] && printf '%s' "$KS_RES" || printf '%s' "$HR_RES"; }

# ---------------------------------------------------------------------------------------------
# Writes: each one is followed by a check of the real state on the cluster
# ---------------------------------------------------------------------------------------------
get_field() { # get_field Kind ns name jsonpath
  kc --request-timeout=30s -n "$2" get "$(kind_res "$1")" "$3" -o "jsonpath=$4"
}

act_one() { # act_one suspend|resume|reconcile Kind ns name
  local action=$1 kind=$2 ns=$3 name=$4 got msg
  local ref="$kind $ns/$name"
  case $action in
  suspend)
    run flux suspend "$(kind_arg "$kind")" "$name" -n "$ns" --context "$CLUSTER" || true
    got=$(get_field "$kind" "$ns" "$name" '{.spec.suspend}' || true)
    [[ $got == true ]] || {
      say "✗ $ref is NOT suspended on $CLUSTER (spec.suspend='$got')" >&2
      return 1
    }
    say "✓ $ref suspended on $CLUSTER"
    ;;
  resume)
    local wait_args=()
    is_true "$WAIT" || wait_args=(--wait=false)
    run flux resume "$(kind_arg "$kind")" "$name" -n "$ns" --context "$CLUSTER" --timeout "$TIMEOUT" "${wait_args[@]}" || true
    got=$(get_field "$kind" "$ns" "$name" '{.spec.suspend}' || true)
    [[ $got != true ]] || {
      say "✗ $ref is still suspended on $CLUSTER" >&2
      return 1
    }
    if is_true "$WAIT"; then
      got=$(get_field "$kind" "$ns" "$name" '{.status.conditions[?(@.type=="Ready")].status}' || true)
      if [[ $got != True ]]; then
        msg=$(get_field "$kind" "$ns" "$name" '{.status.conditions[?(@.type=="Ready")].message}' || true)
        say "✗ $ref resumed on $CLUSTER but is not Ready (Ready=$got): $msg" >&2
        return 1
      fi
    fi
    if is_true "$WAIT"; then say "✓ $ref resumed on $CLUSTER and Ready"; else say "✓ $ref resumed on $CLUSTER"; fi
    ;;
  reconcile)
    got=$(get_field "$kind" "$ns" "$name" '{.spec.suspend}' || true)
    if [[ $got == true ]]; then
      say "✗ $ref is suspended on $CLUSTER — resume it first: task flux:resume APP=$name NAMESPACE=$ns CLUSTER=$CLUSTER" >&2
      return 1
    fi
    if ! run flux reconcile "$(kind_arg "$kind")" "$name" -n "$ns" --with-source --context "$CLUSTER" --timeout "$TIMEOUT"; then
      say "✗ $ref failed to reconcile on $CLUSTER — see: task flux:events APP=$name NAMESPACE=$ns CLUSTER=$CLUSTER" >&2
      return 1
    fi
    got=$(get_field "$kind" "$ns" "$name" '{.status.conditions[?(@.type=="Ready")].status}' || true)
    msg=$(get_field "$kind" "$ns" "$name" '{.status.conditions[?(@.type=="Ready")].message}' || true)
    [[ $got == True ]] || {
      say "✗ $ref reconciled on $CLUSTER but is not Ready (Ready=$got): $msg" >&2
      return 1
    }
    say "✓ $ref reconciled on $CLUSTER: $msg"
    ;;
  esac
}

act_rows() { # act_rows action  (stdin rows)
  local action=$1 kind ns name _s _r rc=0 n=0
  while IFS='|' read -r kind ns name _s _r; do
    [[ -z $kind ]] && continue
    n=$((n + 1))
    act_one "$action" "$kind" "$ns" "$name" </dev/null || rc=1
  done
  ((n > 0)) || say "nothing to $action on cluster $CLUSTER"
  return "$rc"
}

order_for() { [[ $1 == resume ]] && printf hr-first || printf ks-first; }

cmd_act() { # act suspend|resume|reconcile  (APP or NAMESPACE, or FAILED=true for reconcile)
  local action=$1 targets
  validate one
  if [[ $action == reconcile ]] && is_true "$FAILED"; then
    targets=$(resolve ks-first failed)
  else
    targets=$(resolve "$(order_for "$action")")
  fi
  act_rows "$action" <<<"$targets"
}

# bulk filters: suspend-all → not yet suspended; resume-all → suspended; reconcile → FAILED
bulk_filter() {
  case $1 in
  suspend) printf unsuspended ;;
  resume) printf suspended ;;
  reconcile) printf failed ;;
  esac
}

cmd_count() { # count suspend|resume|reconcile → number of objects a bulk run would touch ("-" = not bulk)
  local action=$1
  validate one
  if [[ $action == reconcile ]] && ! is_true "$FAILED"; then
    say -
    return 0
  fi
  local targets
  targets=$(resolve "$(order_for "$action")" "$(bulk_filter "$action")")
  grep -c . <<<"$targets" || true
}

cmd_bulk() { # bulk suspend|resume|reconcile: every matching object of the cluster (or NAMESPACE)
  local action=$1 targets
  validate one
  if [[ $action == reconcile ]] && ! is_true "$FAILED"; then
    cmd_act reconcile
    return
  fi
  [[ -z $APP ]] || die 2 "APP cannot be combined with a bulk operation — use task flux:$action APP=$APP instead"
  targets=$(resolve "$(order_for "$action")" "$(bulk_filter "$action")")
  act_rows "$action" <<<"$targets"
}

# ---------------------------------------------------------------------------------------------
# Read-only commands
# ---------------------------------------------------------------------------------------------
# fanout <command>: CLUSTER=all → run "$0 <command>" per cluster in parallel, label each line.
fanout() {
  local cmd=$1 tmp c rc=0 pids=() i=0
  tmp=$(mktemp -d)
  # shellcheck disable=SC2064 # expand now: tmp is local
  trap "rm -rf '$tmp'" EXIT
  for c in "${CLUSTER_LIST[@]}"; do
    FOPS_CLUSTER=$c bash "${BASH_SOURCE[0]}" "$cmd" >"$tmp/$c.out" 2>&1 &
    pids+=($!)
  done
  for c in "${CLUSTER_LIST[@]}"; do
    if wait "${pids[$i]}"; then echo 0 >"$tmp/$c.rc"; else echo $? >"$tmp/$c.rc"; fi
    i=$((i + 1))
  done
  for c in "${CLUSTER_LIST[@]}"; do
    sed "s/^/[$c] /" "$tmp/$c.out"
    [[ $(cat "$tmp/$c.rc") == 0 ]] || {
      say "[$c] ✗ failed (exit $(cat "$tmp/$c.rc"))"
      rc=1
    }
  done
  return "$rc"
}

cmd_check() {
  validate all
  [[ $CLUSTER == all ]] && {
    fanout check
    return
  }
  run flux check --context "$CLUSTER"
}

status_resources() {
  case $KINDS in
  ks) printf '%s' "$KS_RES" ;;
  hr) printf '%s' "$HR_RES" ;;
  source) printf '%s' "$SOURCE_RES" ;;
  *) printf '%s,%s,%s' "$KS_RES" "$HR_RES" "$SOURCE_RES" ;;
  esac
}

status_rows() { # status_rows <cluster>: CLUSTER|KIND|NAMESPACE|NAME|READY|SUSPENDED|MESSAGE
  local c=$1 scope=(-A) sel=()
  [[ -n $NAMESPACE ]] && scope=(-n "$NAMESPACE")
  [[ -n $APP ]] && sel=(--field-selector "metadata.name=$APP")
  kubectl --context "$c" --request-timeout=30s get "$(status_resources)" "${scope[@]}" "${sel[@]}" -o \
    'jsonpath={range .items[*]}{.kind}{"|"}{.metadata.namespace}{"|"}{.metadata.name}{"|"}{.status.conditions[?(@.type=="Ready")].status}{"|"}{.spec.suspend}{"|"}{.status.conditions[?(@.type=="Ready")].message}{"\n"}{end}' |
    awk -v c="$c" -F'|' 'NF { gsub(/[\t\r]/, " ", $6); printf "%s|%s|%s|%s|%s|%s|%s\n", c, $1, $2, $3, ($4 == "" ? "Unknown" : $4), ($5 == "true" ? "true" : "false"), $6 }'
}

cmd_status() {  # one table, CLUSTER column, not-ready first
  case $TYPE in # status takes TYPE=ks|hr|source|all (the resource families to show)
  '' | all) KINDS=all ;;
  ks | kustomization) KINDS=ks ;;
  hr | helmrelease) KINDS=hr ;;
  source | sources) KINDS=source ;;
  *) die 2 "TYPE='${TYPE//[^[:print:]]/?}' is not supported by status — use TYPE=ks, hr, source or all" ;;
  esac
  TYPE=
  validate all
  local tmp c rc=0 pids=() i=0 list
  tmp=$(mktemp -d)
  # shellcheck disable=SC2064
  trap "rm -rf '$tmp'" EXIT
  mapfile -t list < <(target_clusters)
  for c in "${list[@]}"; do
    status_rows "$c" >"$tmp/$c.rows" 2>"$tmp/$c.err" &
    pids+=($!)
  done
  for c in "${list[@]}"; do
    wait "${pids[$i]}" || {
      printf 'error: cluster %s: %s\n' "$c" "$(head -n1 "$tmp/$c.err")" >&2
      rc=1
    }
    i=$((i + 1))
  done
  cat "$tmp"/*.rows 2>/dev/null | { if is_true "$FAILED"; then awk -F'|' '$5 != "True"'; else cat; fi; } |
    awk -F'|' '{ print ($5 == "True" ? 1 : 0) "|" $0 }' | sort -t'|' -k1,1 -k2,2 -k3,3 -k4,4 -k5,5 | cut -d'|' -f2- |
    awk -F'|' '
      BEGIN { h = "CLUSTER|KIND|NAMESPACE|NAME|READY|SUSPENDED|MESSAGE"; n = 0 }
      { rows[++n] = $0 }
      END {
        split(h, hc, "|"); for (i = 1; i <= 6; i++) w[i] = length(hc[i])
        for (r = 1; r <= n; r++) { split(rows[r], f, "|"); for (i = 1; i <= 6; i++) if (length(f[i]) > w[i]) w[i] = length(f[i]) }
        for (i = 1; i <= 6; i++) printf "%-" w[i] "s  ", hc[i]; print hc[7]
        for (r = 1; r <= n; r++) { split(rows[r], f, "|"); for (i = 1; i <= 6; i++) printf "%-" w[i] "s  ", f[i]; print f[7]; if (f[5] != "True") bad++ }
        printf "\n%d object(s), %d not ready\n", n, bad
      }'
  return "$rc"
}

cmd_list_suspended() {
  validate all
  [[ $CLUSTER == all ]] && {
    fanout list-suspended
    return
  }
  local out
  out=$(resolve ks-first suspended)
  if [[ -z $out ]]; then
    say "no suspended Kustomization or HelmRelease on cluster $CLUSTER"
    return 0
  fi
  awk -F'|' 'BEGIN { printf "%-14s %-24s %s\n", "KIND", "NAMESPACE", "NAME" } { printf "%-14s %-24s %s\n", $1, $2, $3 }' <<<"$out"
}

cmd_events() {
  validate all
  local stream=()
  is_true "$WATCH" && stream=(--watch --timeout "$STREAM_TIMEOUT")
  if [[ $CLUSTER == all ]]; then
    is_true "$WATCH" && die 2 "WATCH=true needs one cluster — use CLUSTER=$(target_clusters_first)"
    fanout events
    return
  fi
  if [[ -z $APP ]]; then
    if [[ -n $NAMESPACE ]]; then run flux events -n "$NAMESPACE" --context "$CLUSTER" "${stream[@]}"; else run flux events -A --context "$CLUSTER" "${stream[@]}"; fi
    return
  fi
  local targets kind ns name _s _r pids=() rc=0 p
  targets=$(resolve ks-first)
  while IFS='|' read -r kind ns name _s _r; do
    [[ -z $kind ]] && continue
    say "# events of $kind $ns/$name on $CLUSTER"
    if is_true "$WATCH"; then
      events_one "$kind" "$ns" "$name" "${stream[@]}" </dev/null &
      pids+=($!)
    else
      events_one "$kind" "$ns" "$name" </dev/null || rc=1
    fi
  done <<<"$targets"
  for p in "${pids[@]}"; do wait "$p" || rc=1; done
  return "$rc"
}

target_clusters_first() { printf '%s' "${CLUSTER_LIST[0]}"; }

events_one() { # flux events --for; HelmReleases with spec.chartRef make --for fail → kubectl events
  local kind=$1 ns=$2 name=$3
  shift 3
  if run flux events -n "$ns" --for "$kind/$name" --context "$CLUSTER" "$@"; then return 0; fi
  say "(flux events --for cannot resolve $kind $ns/$name, e.g. spec.chartRef; reading Kubernetes events instead)" >&2
  local watch=()
  (($# > 0)) && watch=(--watch)
  run kubectl --context "$CLUSTER" -n "$ns" get events \
    --field-selector "involvedObject.kind=$kind,involvedObject.name=$name" --sort-by=.lastTimestamp "${watch[@]}"
}

cmd_alerts() {
  validate all
  [[ $CLUSTER == all ]] && {
    fanout alerts
    return
  }
  local scope=(-A)
  [[ -n $NAMESPACE ]] && scope=(-n "$NAMESPACE")
  say "# Alerts"
  run flux get alerts "${scope[@]}" --context "$CLUSTER"
  say "# Providers"
  run flux get alert-providers "${scope[@]}" --context "$CLUSTER"
  say "# Recent warnings (what alerts are sent for)"
  run flux events "${scope[@]}" --types Warning --context "$CLUSTER"
}

cmd_logs() {
  validate one
  # FOLLOW unset: stream at a terminal (the operator's Ctrl-C ends it), print and exit otherwise.
  if [[ -z $FOLLOW ]]; then if [[ -t 1 ]]; then FOLLOW=true; else FOLLOW=false; fi; fi
  local want_kind="" want_ns=$NAMESPACE targets="" kinds nss
  if [[ -n $APP ]]; then
    targets=$(resolve ks-first)
    kinds=$(cut -d'|' -f1 <<<"$targets" | sort -u)
    nss=$(cut -d'|' -f2 <<<"$targets" | sort -u)
    # one stream: the kind when all targets share it, the namespace when all share it
    [[ $(grep -c . <<<"$kinds") == 1 ]] && want_kind=$kinds
    if [[ $(grep -c . <<<"$nss") == 1 ]]; then want_ns=$nss; else want_ns=""; fi
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

# One controller's lines: `flux logs` reads every Flux controller at once, so this is kubectl logs
# of that controller's Deployment, filtered (LEVEL; with APP its resolved objects exactly, else
# NAMESPACE) and printed the way flux logs prints them: "<ts> <level> <Kind>/<name>.<ns> - <msg>".
controller_logs() { # controller_logs <resolver rows of APP, or "">
  local args=(--context "$CLUSTER" -n "$FLUX_NAMESPACE" logs "deployment/$CONTROLLER")
  [[ -n $SINCE ]] && args+=(--since "$SINCE")
  [[ -n $TAIL ]] && args+=(--tail "$TAIL")
  is_true "$FOLLOW" && args+=(--follow)
  run kubectl "${args[@]}" | format_logs "$1"
}

field() { # field <json line> <key>: REPLY = the string value of the first "key":"…" ("" if none)
  local re="\"$2\":\"(([^\"\\\\]|\\\\.)*)\""
  REPLY=""
  [[ $1 =~ $re ]] && REPLY=${BASH_REMATCH[1]//\\\"/\"}
  return 0
}

format_logs() { # format_logs <resolver rows or "">: JSON log lines (stdin) → flux logs lines
  # No subshell per line: a controller writes thousands of lines.
  local rows=$'\n'$1 line level kind name ns
  while IFS= read -r line; do
    [[ $line == "{"* ]] || continue
    field "$line" level && level=$REPLY
    [[ -z $LEVEL || $level == "$LEVEL" ]] || continue
    field "$line" "reconciler kind" && kind=$REPLY
    [[ -n $kind ]] || { field "$line" controllerKind && kind=$REPLY; }
    field "$line" name && name=$REPLY
    field "$line" namespace && ns=$REPLY
    if [[ -n $APP ]]; then
      [[ $rows == *$'\n'"$kind|$ns|$name|"* ]] || continue
    else
      [[ -z $NAMESPACE || $ns == "$NAMESPACE" ]] || continue
    fi
    field "$line" ts && printf '%s %s %s%s - ' "$REPLY" "$level" "$kind" "${name:+/$name.$ns}"
    field "$line" msg && printf '%s ' "$REPLY"
    field "$line" error && printf '%s\n' "$REPLY"
  done
}

cmd_diff() {
  validate one
  [[ -n $APP ]] || die 2 "APP is required — e.g. task flux:diff APP=odoo CLUSTER=$CLUSTER"
  [[ -d $GITOPS_DIR ]] || die 2 "GITOPS_DIR='$GITOPS_DIR' is not a directory — set GITOPS_DIR=<your checkout of the GitOps repo>"
  local targets kind ns name _s _r path local_dir rc=0 hrs=""
  targets=$(resolve ks-first)
  while IFS='|' read -r kind ns name _s _r; do
    [[ -z $kind ]] && continue
    if [[ $kind == HelmRelease ]]; then
      hrs+="$ns/$name "
      continue
    fi
    path=$(get_field Kustomization "$ns" "$name" '{.spec.path}') || die 6 "cannot read spec.path of Kustomization $ns/$name on $CLUSTER"
    path=${path#./}
    path=${path%/}
    local_dir="$GITOPS_DIR/${path}"
    [[ -d $local_dir ]] || die 2 "Kustomization $ns/$name has spec.path ./$path, not found under GITOPS_DIR=$GITOPS_DIR — set GITOPS_DIR to your checkout of its source"
    local drc=0
    run flux diff kustomization "$name" -n "$ns" --path "$local_dir" --progress-bar=false --context "$CLUSTER" </dev/null || drc=$?
    case $drc in
    0) say "✓ Kustomization $ns/$name: no drift between $local_dir and cluster $CLUSTER" ;;
    1) say "≠ Kustomization $ns/$name: drift found (above) — it will be applied on the next reconcile (task flux:reconcile APP=$name CLUSTER=$CLUSTER)" ;;
    *)
      say "✗ flux diff of Kustomization $ns/$name failed (exit $drc)" >&2
      rc=$drc
      ;;
    esac
  done <<<"$targets"
  if [[ -n $hrs ]]; then
    say "ℹ HelmRelease ${hrs% }: flux diff shows changes to the HelmRelease object (spec.values above), not the rendered chart;" \
      "for the manifest diff use 'helm diff upgrade' (helm-diff plugin) or 'helm template' on the chart with those values."
  fi
  return "$rc"
}

cmd_tree() {
  validate one
  local name=${APP:-flux-system} ns=${NAMESPACE:-}
  if [[ -n $APP ]]; then
    local row
    row=$(TYPE=ks resolve ks-first | head -n1)
    ns=$(cut -d'|' -f2 <<<"$row")
  fi
  run flux tree kustomization "$name" -n "${ns:-flux-system}" --context "$CLUSTER"
}

cmd_trace() {
  validate one
  if [[ -n $RESOURCE ]]; then
    [[ -n $NAMESPACE ]] || die 2 "NAMESPACE is required with RESOURCE — e.g. RESOURCE=$RESOURCE NAMESPACE=observability"
    run flux trace "$RESOURCE" -n "$NAMESPACE" --context "$CLUSTER"
    return
  fi
  [[ -n $APP ]] || die 2 "RESOURCE or APP is required — e.g. RESOURCE=deploy/gatus NAMESPACE=observability, or APP=gatus"
  local targets kind ns name _s _r rc=0
  targets=$(resolve hr-first)
  while IFS='|' read -r kind ns name _s _r; do
    [[ -z $kind ]] && continue
    run flux trace "$(kind_arg "$kind")/$name" -n "$ns" --context "$CLUSTER" </dev/null || rc=1
  done <<<"$targets"
  return "$rc"
}

cmd_reconcile_source() {
  validate one
  local ns=${NAMESPACE:-flux-system} got
  run flux reconcile source "$SOURCE_KIND" "$SOURCE" -n "$ns" --context "$CLUSTER" ||
    die 1 "source $SOURCE_KIND $ns/$SOURCE failed to reconcile on $CLUSTER — see: task flux:events CLUSTER=$CLUSTER NAMESPACE=$ns"
  local res=gitrepositories.source.toolkit.fluxcd.io
  case $SOURCE_KIND in
  oci) res=ocirepositories.source.toolkit.fluxcd.io ;;
  helm) res=helmrepositories.source.toolkit.fluxcd.io ;;
  bucket) res=buckets.source.toolkit.fluxcd.io ;;
  chart) res=helmcharts.source.toolkit.fluxcd.io ;;
  esac
  got=$(kc --request-timeout=30s -n "$ns" get "$res" "$SOURCE" -o 'jsonpath={.status.artifact.revision}' || true)
  say "✓ source $SOURCE_KIND $ns/$SOURCE on $CLUSTER at revision ${got:-unknown}"
}

main() {
  local cmd=${1:-}
  shift || true
  case $cmd in
  preflight) cmd_preflight "$@" ;;
  validate) validate "$@" ;;
  resolve) validate one && resolve "${1:-ks-first}" ;;
  suspend | resume | reconcile) cmd_act "$cmd" ;;
  count) cmd_count "$@" ;;
  bulk) cmd_bulk "$@" ;;
  status) cmd_status ;;
  check) cmd_check ;;
  list-suspended) cmd_list_suspended ;;
  events) cmd_events ;;
  alerts) cmd_alerts ;;
  logs) cmd_logs ;;
  diff) cmd_diff ;;
  tree) cmd_tree ;;
  trace) cmd_trace ;;
  reconcile-source) cmd_reconcile_source ;;
  *) die 2 "unknown command '${cmd//[^[:print:]]/?}' — this script is run by task flux:*; see task --list" ;;
  esac
}

main "$@"
