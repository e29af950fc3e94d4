# shellcheck shell=bash
# lib/read.sh — the read-only commands: status, list-suspended, check, events, alerts, diff, tree,
# trace (logs: lib/logs.sh). With CLUSTER=all (where offered) every cluster is read at once.

# shellcheck source=common.sh
source "${BASH_SOURCE[0]%/*}/common.sh"

# cmd_check: flux check. exit: flux's (CLUSTER=all: 1 if any cluster failed).
cmd_check() {
  prove_clusters
  if [[ $CLUSTER == all ]]; then
    fanout cmd_check_one
    return
  fi
  cmd_check_one
}
cmd_check_one() { run flux check --context "$CLUSTER"; }

# status_resources: out: the resources KINDS selects.
status_resources() {
  case $KINDS in
  ks) printf '%s' "$KS_RES" ;;
  hr) printf '%s' "$HR_RES" ;;
  source) printf '%s' "$SOURCE_RES" ;;
  *) printf '%s' "$KS_RES,$HR_RES,$SOURCE_RES" ;;
  esac
}

# status_rows: $CLUSTER's objects as CLUSTER|KIND|NAMESPACE|NAME|READY|SUSPENDED|RECORD|MESSAGE
#   lines; RECORD is the suspend record of a suspended object (record_of's phrase), else empty.
#   The list is the cluster's first request: within API_TIMEOUT unless PROVEN. exit: kubectl's.
status_rows() {
  local scope=(-A) sel=() timeout=$API_TIMEOUT
  [[ -n $NAMESPACE ]] && scope=(-n "$NAMESPACE")
  [[ -n $APP ]] && sel=(--field-selector "metadata.name=$APP")
  $PROVEN && timeout=$LIST_TIMEOUT
  # shellcheck disable=SC2016 # jsonpath, not a shell expansion
  kc --request-timeout="$timeout" get "$(status_resources)" "${scope[@]}" "${sel[@]}" -o \
    'jsonpath={range .items[*]}{.kind}{"|"}{.metadata.namespace}{"|"}{.metadata.name}{"|"}{.status.conditions[?(@.type=="Ready")].status}{"|"}{.spec.suspend}{"|"}'"$RECORD_FIELDS"'{"|"}{.status.conditions[?(@.type=="Ready")].message}{"\n"}{end}' |
    awk -v c="$CLUSTER" -F'|' 'NF {
      gsub(/[\t\r]/, " ", $10)
      record = ""
      if ($5 == "true") {
        if ($6 == "") record = "unrecorded (suspended by another tool or by hand)"
        else record = "by " $6 " at " $7 ($9 == "" ? "" : ", batch " $9) ($8 == "" ? "" : ": " $8)
      }
      printf "%s|%s|%s|%s|%s|%s|%s|%s\n", c, $1, $2, $3, ($4 == "" ? "Unknown" : $4), ($5 == "true" ? "true" : "false"), record, $10
    }'
}

# cmd_status: one table with a CLUSTER column, not-ready first, every target cluster listed at once.
#   A cluster whose list fails: explain_failure (exit 4/5; CLUSTER=all with others answering: a
#   warning), the list once more, and "error: cluster <c>: <its error>"; the others are still shown.
#   exit: 0, or 1 when a cluster's list failed.
cmd_status() {
  local c rc=0 failed=() line code
  per_cluster rows status_rows "${TARGETS[@]}"
  for c in "${TARGETS[@]}"; do
    read -r code <"$WORK/rows.$c.rc"
    [[ $code == 0 ]] || failed+=("$c")
  done
  if ((${#failed[@]} > 0)); then
    explain_failure "${failed[@]}"
    PROVEN=true
    per_cluster rows status_rows "${failed[@]}"
    for c in "${failed[@]}"; do
      read -r code <"$WORK/rows.$c.rc"
      [[ $code == 0 ]] && continue
      line=""
      read -r line <"$WORK/rows.$c.err" || true
      printf 'error: cluster %s: %s\n' "$c" "$line" >&2
      rc=1
    done
  fi
  for c in "${TARGETS[@]}"; do cat "$WORK/rows.$c.out"; done | { if is_true "$FAILED"; then awk -F'|' '$5 != "True"'; else cat; fi; } |
    awk -F'|' '{ print ($5 == "True" ? 1 : 0) "|" $0 }' | sort -t'|' -k1,1 -k2,2 -k3,3 -k4,4 -k5,5 | cut -d'|' -f2- |
    awk -F'|' '
      BEGIN { h = "CLUSTER|KIND|NAMESPACE|NAME|READY|SUSPENDED|MESSAGE"; n = 0 }
      { rows[++n] = $0 }
      END {
        split(h, hc, "|"); for (i = 1; i <= 6; i++) w[i] = length(hc[i])
        for (r = 1; r <= n; r++) { split(rows[r], f, "|"); for (i = 1; i <= 6; i++) if (length(f[i]) > w[i]) w[i] = length(f[i]) }
        for (i = 1; i <= 6; i++) printf "%-" w[i] "s  ", hc[i]; print hc[7]
        for (r = 1; r <= n; r++) { split(rows[r], f, "|"); for (i = 1; i <= 6; i++) printf "%-" w[i] "s  ", f[i]; print f[8]; if (f[5] != "True") bad++ }
        printf "\n%d object(s), %d not ready\n", n, bad
        for (r = 1; r <= n; r++) { split(rows[r], f, "|"); if (f[6] == "true") { if (!s++) print "\nSuspended:"; printf "  %s %s %s/%s %s\n", f[1], f[2], f[3], f[4], f[7] } }
      }'
  return "$rc"
}

# cmd_list_suspended: the suspended Kustomizations and HelmReleases (CLUSTER=all: every cluster).
#   exit: 0, or the resolver's (CLUSTER=all: 1 if any cluster failed).
cmd_list_suspended() {
  if [[ $CLUSTER == all ]]; then
    prove_clusters
    fanout cmd_list_suspended
    return
  fi
  local out records kind ns name _rest
  out=$(resolve ks-first suspended)
  if [[ -z $out ]]; then
    say "no suspended Kustomization or HelmRelease on cluster $CLUSTER"
    return 0
  fi
  # Who, when and why, from the annotations the suspend tasks write (one more list).
  records=$(kc --request-timeout="$LIST_TIMEOUT" get "$KS_RES,$HR_RES" -A -o "jsonpath=$RECORD_JSONPATH") || records=""
  printf '%-14s %-24s %-32s %s\n' KIND NAMESPACE NAME SUSPENDED
  while IFS='|' read -r kind ns name _rest; do
    printf '%-14s %-24s %-32s %s\n' "$kind" "$ns" "$name" "$(record_of "$kind|$ns|$name" "$records")"
  done <<<"$out"
}

# record_of <Kind|ns|name> <records>: out: the object's suspend record as one phrase:
#   "by <who> at <when>[, batch <id>][: <why>]", or "unrecorded (…)" when no suspend task wrote one.
record_of() {
  local line by at reason batch
  while IFS= read -r line; do
    [[ $line == "$1|"* ]] || continue
    IFS='|' read -r by at reason batch <<<"${line#"$1|"}"
    [[ -n $by ]] || break
    printf '%s' "by $by at $at${batch:+, batch $batch}${reason:+: $reason}"
    return 0
  done <<<"$2"
  printf '%s' "unrecorded (suspended by another tool or by hand)"
}

# cmd_events: Flux events of the cluster or NAMESPACE, or APP's own events; WATCH=true streams.
#   exit: 2 WATCH with CLUSTER=all; 0, or 1 when an APP object's events could not be read.
cmd_events() {
  if [[ $CLUSTER == all ]]; then
    is_true "$WATCH" && die 2 "WATCH=true needs one cluster — use CLUSTER=${CLUSTER_LIST[0]}"
    prove_clusters
    fanout cmd_events
    return
  fi
  local stream=()
  is_true "$WATCH" && stream=(--watch --timeout "$STREAM_TIMEOUT")
  if [[ -z $APP ]]; then
    $PROVEN || prove_clusters
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

# events_one <Kind> <ns> <name> [stream args…]: flux events --for; a HelmRelease using
#   spec.chartRef makes --for fail, then the object's Kubernetes events. exit: the last command's.
events_one() {
  local kind=$1 ns=$2 name=$3
  shift 3
  if run flux events -n "$ns" --for "$kind/$name" --context "$CLUSTER" "$@"; then return 0; fi
  say "(flux events --for cannot resolve $kind $ns/$name, e.g. spec.chartRef; reading Kubernetes events instead)" >&2
  local watch=()
  (($# > 0)) && watch=(--watch)
  run kubectl --context "$CLUSTER" -n "$ns" get events \
    --field-selector "involvedObject.kind=$kind,involvedObject.name=$name" --sort-by=.lastTimestamp "${watch[@]}"
}

# cmd_alerts: Alerts, Providers and recent Warning events. exit: the last flux command's.
cmd_alerts() {
  $PROVEN || prove_clusters
  if [[ $CLUSTER == all ]]; then
    fanout cmd_alerts
    return
  fi
  local scope=(-A)
  [[ -n $NAMESPACE ]] && scope=(-n "$NAMESPACE")
  say "# Alerts"
  run flux get alerts "${scope[@]}" --context "$CLUSTER"
  say "# Providers"
  run flux get alert-providers "${scope[@]}" --context "$CLUSTER"
  say "# Recent warnings (what alerts are sent for)"
  run flux events "${scope[@]}" --types Warning --context "$CLUSTER"
}

# cmd_diff: flux diff kustomization of APP's Kustomization against GITOPS_DIR/<spec.path>.
#   out: per Kustomization "✓ no drift" or "≠ drift found" (both exit 0); a note for HelmReleases.
#   exit: 2 without APP or GITOPS_DIR, or spec.path not under it; flux diff's code when ≥ 2.
cmd_diff() {
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

# cmd_tree: flux tree of APP's Kustomization (default the root flux-system). exit: flux's.
cmd_tree() {
  local name=${APP:-flux-system} ns=${NAMESPACE:-} row
  if [[ -n $APP ]]; then
    row=$(TYPE=ks resolve ks-first)
    row=${row%%$'\n'*}
    ns=${row#*|}
    ns=${ns%%|*}
  else
    prove_clusters
  fi
  run flux tree kustomization "$name" -n "${ns:-flux-system}" --context "$CLUSTER"
}

# cmd_trace: flux trace of RESOURCE (with NAMESPACE), or of APP's objects (HelmRelease first).
#   exit: 2 without RESOURCE/APP or NAMESPACE; flux's (APP: 1 if any trace failed).
cmd_trace() {
  if [[ -n $RESOURCE ]]; then
    [[ -n $NAMESPACE ]] || die 2 "NAMESPACE is required with RESOURCE — e.g. RESOURCE=$RESOURCE NAMESPACE=observability"
    prove_clusters
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
