# shellcheck shell=bash
# lib/act.sh — the writes: suspend, resume, reconcile (one app, a namespace, or in bulk after the
# prompt) and reconcile-source. Every write ends with the real state read from the cluster, and the
# command fails unless it is what was asked: flux exits 0 on several non-changes.

# shellcheck source=common.sh
source "${BASH_SOURCE[0]%/*}/common.sh"

# The suspend patch is `flux suspend`'s own (a JSON merge patch of spec.suspend, flux v2.7–v2.9,
# recorded under flux's field manager "flux": the stored object is the same as after flux suspend)
# plus the suspend record in the same request (suspend_patch); kubectl patches the objects of its
# stdin list one by one, in order, going on after a failed one, and prints each stored object: the
# write is its own read-back.

# suspend_patch <batch id or "">: out: spec.suspend=true with the record: who (SUSPENDED_BY, else
#   $USER@$HOSTNAME), when (now, UTC), why (REASON) and the batch; an empty REASON or batch removes
#   an earlier one. Inputs were validated (no '"', '\', control chars).
suspend_patch() {
  local by=${SUSPENDED_BY:-${USER:-$(id -un 2>/dev/null || echo unknown)}@${HOSTNAME:-unknown}} at reason=null batch=null
  TZ=UTC printf -v at '%(%Y-%m-%dT%H:%M:%SZ)T' -1
  [[ -n $REASON ]] && reason="\"$REASON\""
  [[ -n $1 ]] && batch="\"$1\""
  printf '{"metadata":{"annotations":{"%s":"%s","%s":"%s","%s":%s,"%s":%s}},"spec":{"suspend":true}}' \
    "$RECORD_BY" "$by" "$RECORD_AT" "$at" "$RECORD_REASON" "$reason" "$RECORD_BATCH" "$batch"
}

# The resume patch: spec.suspend=false and the record removed, in one request (flux resume then
# asks for the reconciliation and waits for it, as before).
readonly RESUME_PATCH='{"metadata":{"annotations":{"'$RECORD_BY'":null,"'$RECORD_AT'":null,"'$RECORD_REASON'":null,"'$RECORD_BATCH'":null}},"spec":{"suspend":false}}'

# new_batch: out: an id for one suspend-all or namespace-wide run (UTC time and this script's pid).
new_batch() {
  local now
  TZ=UTC printf -v now '%(%Y%m%dT%H%M%SZ)T' -1
  printf '%s-%s' "$now" "$$"
}
# shellcheck disable=SC2016 # jsonpath, not a shell expansion
readonly PATCHED_JSONPATH='{.kind}{"|"}{.metadata.namespace}{"|"}{.metadata.name}{"|"}{.spec.suspend}{"\n"}'
# spec.suspend|Ready status|Ready message of one object (the message may hold "|": it comes last)
# shellcheck disable=SC2016 # jsonpath, not a shell expansion
readonly STATE_JSONPATH='{.spec.suspend}{"|"}{.status.conditions[?(@.type=="Ready")].status}{"|"}{.status.conditions[?(@.type=="Ready")].message}'

# get_field <Kind> <ns> <name> <jsonpath>: out: the field of one object. exit: kubectl's.
get_field() {
  kc --request-timeout="$LIST_TIMEOUT" -n "$2" get "$(kind_res "$1")" "$3" -o "jsonpath=$4"
}

# read_state <Kind> <ns> <name>: one read of an object.
#   out: spec.suspend|Ready status|Ready message ("||" when unread); read it with
#   `IFS='|' read -r -d '' suspend ready message`, which keeps a message's "|" and newlines.
read_state() {
  local got
  got=$(get_field "$1" "$2" "$3" "$STATE_JSONPATH") || got=""
  [[ $got == *"|"*"|"* ]] || got="||"
  printf '%s' "$got"
}

# The write's kubectl patch, started before the list it will act on (patcher_start): its start-up,
# most of its time, overlaps the list. It reads its objects from stdin and writes nothing until
# patch_rows hands them over; when the script ends first, on_exit closes its stdin unfed.
# PATCHER_PATCH is the patch it applies (shown with the command).
PATCHER_OUT="" PATCHER_WAIT="" PATCHER_SHELL="" PATCHER_PATCH=""
# The batch of this run's suspend: set once, by cmd_act (a namespace) or cmd_bulk (suspend-all).
SUSPEND_BATCH=""

# patcher_start <suspend|resume>: starts the patch process of that write (a coprocess; its stderr
#   merged into its output). A suspend's patch carries the record (suspend_patch, in SUSPEND_BATCH).
patcher_start() {
  [[ -z $PATCHER_WAIT ]] || return 0
  PATCHER_PATCH=$RESUME_PATCH
  [[ $1 != suspend ]] || PATCHER_PATCH=$(suspend_patch "$SUSPEND_BATCH")
  coproc PATCHER { exec kubectl --context "$CLUSTER" patch --field-manager=flux --type=merge -p "$PATCHER_PATCH" -f - -o "jsonpath=$PATCHED_JSONPATH" 2>&1; }
  # bash drops the coprocess' variables when it ends: keep its output and pid.
  exec {PATCHER_OUT}<&"${PATCHER[0]}"
  PATCHER_WAIT=$PATCHER_PID
  PATCHER_SHELL=$BASHPID
}

# patcher_feed <objects> [<variable>]: hands the objects (a YAML stream) to the patch process, if
#   any, and ends its input; sets <variable> to everything it printed. By name, not by output: only
#   this shell holds the process' input, and a command substitution's copy would keep it open.
#   exit: 0.
patcher_feed() {
  local line input=${PATCHER[1]:-} printed_=""
  [[ -n $PATCHER_WAIT ]] || return 0
  if [[ -n $input ]]; then # (gone when the process ended early)
    printf '%s' "$1" 2>/dev/null 1>&"$input" || true
    exec {input}>&-
  fi
  while IFS= read -r line <&"$PATCHER_OUT"; do printed_+=$line$'\n'; done
  if [[ -n ${2:-} ]]; then
    local -n into_=$2
    # shellcheck disable=SC2034 # a nameref: sets the caller's variable
    into_=$printed_
  fi
  exec {PATCHER_OUT}<&-
  wait "$PATCHER_WAIT" 2>/dev/null || true
  PATCHER_WAIT=""
}

# patcher_stop: ends a patch process that got no objects (it writes nothing); only in the shell
#   that started it (a subshell cannot end its input). exit: 0.
patcher_stop() {
  [[ -z $PATCHER_WAIT || $PATCHER_SHELL != "$BASHPID" ]] || patcher_feed ""
}

# one_patch <action>: exit: 0 when the action is written with one patch for all its objects (suspend,
#   and resume with WAIT=false; a waiting resume goes object by object, each Ready before the next).
one_patch() { [[ $1 == suspend ]] || { [[ $1 == resume ]] && ! is_true "$WAIT"; }; }

# patch_rows <suspend|resume> <rows>: suspends (or, without waiting, resumes) them all with ONE
#   kubectl patch, in the rows' order, and judges each by the object the API server returned.
#   A resume's patch is `flux resume --wait=false`'s own (spec.suspend=false, a merge patch under
#   flux's field manager) with the record removed.
#   out: "✓ <Kind> <ns>/<name> suspended|resumed on <cluster>" per object; "✗ … is NOT …" and
#   kubectl's own errors on stderr.
#   exit: 0, or 1 when any is not as asked (a missing object, a rejected or reverted patch).
patch_rows() {
  local action=$1 kind ns name _s _r api refs="" names="" targets=() got line want=true done_=suspended
  [[ $action == resume ]] && want=false done_=resumed
  while IFS='|' read -r kind ns name _s _r; do
    [[ -z $kind ]] && continue
    api=$HR_API
    [[ $kind == Kustomization ]] && api=$KS_API
    refs+=$'---\n'"apiVersion: $api"$'\n'"kind: $kind"$'\n'"metadata: {name: \"$name\", namespace: \"$ns\"}"$'\n'
    names+="${names:+, }$kind $ns/$name"
    targets+=("$kind|$ns|$name")
  done <<<"$2"
  if ((${#targets[@]} == 0)); then
    patcher_stop
    say "nothing to $action on cluster $CLUSTER"
    return 0
  fi
  patcher_start "$action"
  printf '→ kubectl --context %s patch --field-manager=flux --type=merge -p %s -f - -o jsonpath=%s <<< %s\n' \
    "$CLUSTER" "$PATCHER_PATCH" "$PATCHED_JSONPATH" "$names" >&2
  local patched="" rc=0 t
  patcher_feed "$refs" patched
  while IFS= read -r line; do
    [[ -z $line || $line =~ ^(Kustomization|HelmRelease)\| ]] || printf '%s\n' "$line" >&2
  done <<<"$patched"
  for t in "${targets[@]}"; do
    got=""
    while IFS= read -r line; do
      [[ $line == "$t|"* ]] && got=${line#"$t|"}
    done <<<"$patched"
    kind=${t%%|*}
    t=${t#*|}
    if [[ $got == "$want" ]]; then
      say "✓ $kind ${t/|//} $done_ on $CLUSTER"
    else
      say "✗ $kind ${t/|//} is NOT $done_ on $CLUSTER (spec.suspend='$got')" >&2
      rc=1
    fi
  done
  return "$rc"
}

# resume_one <Kind> <ns> <name>: (WAIT=true) one merge patch that unsuspends and removes the record,
#   then flux resume, which waits for the reconciliation, then one read of the object.
#   exit: 0 when unsuspended and Ready, else 1.
resume_one() {
  local kind=$1 ns=$2 name=$3 ref="$1 $2/$3" suspend ready message
  run kubectl --context "$CLUSTER" -n "$ns" patch "$(kind_res "$kind")" "$name" --field-manager=flux --type=merge -p "$RESUME_PATCH" -o name >/dev/null || true
  run flux resume "$(kind_arg "$kind")" "$name" -n "$ns" --context "$CLUSTER" --timeout "$TIMEOUT" || true
  IFS='|' read -r -d '' suspend ready message < <(read_state "$kind" "$ns" "$name") || true
  [[ $suspend != true ]] || {
    say "✗ $ref is still suspended on $CLUSTER" >&2
    return 1
  }
  if [[ $ready != True ]]; then
    say "✗ $ref resumed on $CLUSTER but is not Ready (Ready=$ready): $message" >&2
    return 1
  fi
  say "✓ $ref resumed on $CLUSTER and Ready"
}

# reconcile_one <Kind> <ns> <name> [spec.suspend as just listed]: refuses a suspended object, else
#   flux reconcile --with-source (waits up to TIMEOUT), then one read of Ready.
#   The suspend state comes from the resolver's list when nothing was written since, else it is read.
#   exit: 0 when Ready, else 1.
reconcile_one() {
  local kind=$1 ns=$2 name=$3 ref="$1 $2/$3" suspend ready message
  if (($# > 3)); then suspend=$4; else suspend=$(get_field "$kind" "$ns" "$name" '{.spec.suspend}' || true); fi
  if [[ $suspend == true ]]; then
    say "✗ $ref is suspended on $CLUSTER — resume it first: task flux:resume APP=$name NAMESPACE=$ns CLUSTER=$CLUSTER" >&2
    return 1
  fi
  if ! run flux reconcile "$(kind_arg "$kind")" "$name" -n "$ns" --with-source --context "$CLUSTER" --timeout "$TIMEOUT"; then
    say "✗ $ref failed to reconcile on $CLUSTER — see: task flux:events APP=$name NAMESPACE=$ns CLUSTER=$CLUSTER" >&2
    return 1
  fi
  IFS='|' read -r -d '' suspend ready message < <(read_state "$kind" "$ns" "$name") || true
  [[ $ready == True ]] || {
    say "✗ $ref reconciled on $CLUSTER but is not Ready (Ready=$ready): $message" >&2
    return 1
  }
  say "✓ $ref reconciled on $CLUSTER: $message"
}

# act_rows <suspend|resume|reconcile> <rows>: the action on every row, in order.
#   out: one ✓/✗ line per object, or "nothing to <action>". exit: 0, or 1 if any failed.
act_rows() {
  local action=$1 kind ns name s _r rc=0 n=0
  if one_patch "$action"; then
    patch_rows "$action" "$2"
    return
  fi
  while IFS='|' read -r kind ns name s _r; do
    [[ -z $kind ]] && continue
    n=$((n + 1))
    if [[ $action == resume ]]; then
      resume_one "$kind" "$ns" "$name" </dev/null || rc=1
    elif ((n == 1)); then
      reconcile_one "$kind" "$ns" "$name" "$s" </dev/null || rc=1
    else
      reconcile_one "$kind" "$ns" "$name" </dev/null || rc=1
    fi
  done <<<"$2"
  ((n > 0)) || say "nothing to $action on cluster $CLUSTER"
  return "$rc"
}

# order_for <action>: out: the resolver order of the action (resume: HelmRelease first).
order_for() { [[ $1 == resume ]] && printf hr-first || printf ks-first; }

# bulk_filter <action>: out: which objects a bulk action touches (suspend-all: the unsuspended;
#   resume-all: the suspended; reconcile FAILED=true: the failed).
bulk_filter() {
  case $1 in
  suspend) printf unsuspended ;;
  resume) printf suspended ;;
  reconcile) printf failed ;;
  esac
}

# cmd_act <suspend|resume|reconcile>: APP or NAMESPACE (or FAILED=true for reconcile).
#   exit: act_rows', or the resolver's.
cmd_act() {
  local action=$1 targets
  # A whole namespace at once is one batch, as a suspend-all is; one app is a hold of its own.
  if [[ $action == suspend && -n $NAMESPACE && -z $APP ]]; then SUSPEND_BATCH=$(new_batch); fi
  if one_patch "$action"; then
    patcher_start "$action"
  fi
  if [[ $action == reconcile ]] && is_true "$FAILED"; then
    targets=$(resolve ks-first failed)
  else
    targets=$(resolve "$(order_for "$action")")
  fi
  if [[ $action == resume && -n $NAMESPACE && -z $APP ]]; then
    targets=$(depends_order "$targets") || exit $?
  fi
  act_rows "$action" "$targets"
}

# select_batch <rows>: which suspended rows resume-all acts on: those recorded with BATCH, else with
#   the newest batch among them; every row with ALL=true.
#   out: "batch <id>" ("" when none), then "keep <row>" per row to resume and "left <Kind ns/name>"
#   per row held on its own (read them with `selected`).
#   exit: 0; 1 when BATCH is recorded on none of them; 6 when the records could not be listed.
select_batch() {
  local kind ns name _rest by at reason b records picked=$BATCH kept=0
  local -A batch_of=()
  if is_true "$ALL"; then
    printf 'batch \n'
    while IFS= read -r b; do [[ -z $b ]] || printf 'keep %s\n' "$b"; done <<<"$1"
    return 0
  fi
  records=$(kc --request-timeout="$LIST_TIMEOUT" get "$KS_RES,$HR_RES" -A -o "jsonpath=$RECORD_JSONPATH") ||
    die 6 "listing the suspend records on cluster $CLUSTER failed — retry, or resume everything with ALL=true"
  while IFS='|' read -r kind ns name by at reason b; do
    [[ -n $kind ]] && batch_of["$kind|$ns|$name"]=$b
  done <<<"$records"
  if [[ -z $picked ]]; then
    while IFS='|' read -r kind ns name _rest; do
      [[ -z $kind ]] && continue
      b=${batch_of["$kind|$ns|$name"]:-}
      [[ $b > $picked ]] && picked=$b
    done <<<"$1"
  fi
  printf 'batch %s\n' "$picked"
  while IFS='|' read -r kind ns name _rest; do
    [[ -z $kind ]] && continue
    if [[ -n $picked && ${batch_of["$kind|$ns|$name"]:-} == "$picked" ]]; then
      printf 'keep %s\n' "$kind|$ns|$name|$_rest"
      kept=$((kept + 1))
    else
      printf 'left %s\n' "$kind $ns/$name"
    fi
  done <<<"$1"
  if [[ -n $BATCH ]] && ((kept == 0)); then
    die 1 "BATCH=$BATCH is recorded on no suspended object of cluster $CLUSTER — see task flux:list-suspended CLUSTER=$CLUSTER"
  fi
  return 0
}

# selected <tag> <lines>: out: the lines tagged "<tag> ", without the tag. exit: 0.
selected() {
  local line
  while IFS= read -r line; do
    [[ $line == "$1 "* ]] && printf '%s\n' "${line#"$1 "}"
  done <<<"$2"
  return 0
}

# The Kustomizations' dependencies: namespace|name|<ns>/<name> <ns>/<name> … (an empty <ns>: its own).
# shellcheck disable=SC2016 # jsonpath, not a shell expansion
readonly DEPENDS_JSONPATH='{range .items[*]}{.metadata.namespace}{"|"}{.metadata.name}{"|"}{range .spec.dependsOn[*]}{.namespace}{"/"}{.name}{" "}{end}{"\n"}{end}'

# depends_order <rows>: the rows of a bulk or namespace-wide resume in the order Flux needs them:
#   Kustomizations in dependsOn order (a dependency before what depends on it; only dependencies
#   among the rows count), then the HelmReleases they create. With WAIT=true each waits for its
#   reconciliation before the next starts, so a level is Ready before the next one resumes.
#   out: the rows. exit: 0; 1 (one line) on a dependsOn cycle among them; 6 when the list failed.
depends_order() {
  local kind ns name rest deps dep id ready progress left hrs=""
  local -a ks=()
  local -A row_of=() needs=() done_=()
  while IFS='|' read -r kind ns name rest; do
    [[ -z $kind ]] && continue
    if [[ $kind == Kustomization ]]; then
      ks+=("$ns/$name")
      row_of["$ns/$name"]="$kind|$ns|$name|$rest"
    else
      hrs+="$kind|$ns|$name|$rest"$'\n'
    fi
  done <<<"$1"
  if ((${#ks[@]} > 1)); then
    deps=$(kc --request-timeout="$LIST_TIMEOUT" get "$KS_RES" -A -o "jsonpath=$DEPENDS_JSONPATH") ||
      die 6 "listing the Kustomizations' dependsOn on cluster $CLUSTER failed — retry, or resume them one by one"
    while IFS='|' read -r ns name rest; do
      [[ -n ${row_of["$ns/$name"]:-} ]] || continue
      for dep in $rest; do
        [[ $dep == /* ]] && dep=$ns$dep
        [[ -n ${row_of[$dep]:-} ]] && needs["$ns/$name"]+="$dep "
      done
    done <<<"$deps"
  fi
  left=${#ks[@]}
  while ((left > 0)); do
    progress=false
    for id in "${ks[@]}"; do
      [[ -z ${done_[$id]:-} ]] || continue
      ready=true
      for dep in ${needs[$id]:-}; do [[ -n ${done_[$dep]:-} ]] || ready=false; done
      $ready || continue
      printf '%s\n' "${row_of[$id]}"
      done_[$id]=1
      left=$((left - 1))
      progress=true
    done
    if ! $progress; then
      local cycle=()
      for id in "${ks[@]}"; do [[ -n ${done_[$id]:-} ]] || cycle+=("$id"); done
      die 1 "the Kustomizations ${cycle[*]} depend on each other in a cycle (spec.dependsOn) — fix the cycle in Git, or resume them one by one: task flux:resume APP=<name>"
    fi
  done
  printf '%s' "$hrs"
}

# cmd_count <action>: run by the bulk tasks' prompt (a go-task `sh:` variable), before anything is
#   written. out: how many objects the bulk run would touch, "-" when the run is not a bulk one
#   (reconcile without FAILED=true), or "!<exit code>" after the preflight or the resolver failed
#   (their one error line is on stderr already): then there is no prompt, and cmd_bulk exits with
#   that code. exit: 0.
cmd_count() {
  local action=$1 rc=0 out
  # A subshell, so that its exit code becomes the answer (errexit is off in command substitutions);
  # its own temporary directory, if it needs one, goes with it (work_dir).
  out=$(
    preflight one
    if [[ $action == reconcile ]] && ! is_true "$FAILED"; then
      say -
      exit 0
    fi
    targets=$(resolve "$(order_for "$action")" "$(bulk_filter "$action")") || exit $?
    [[ -n $targets ]] || exit 0
    if [[ $action == resume ]]; then
      targets=$(select_batch "$targets") || exit $?
      targets=$(selected keep "$targets")
      [[ -n $targets ]] || exit 0
      # A dependsOn cycle is refused here, before the prompt.
      depends_order "$targets" >/dev/null
    fi
    mapfile -t lines <<<"$targets"
    say "${#lines[@]}"
  ) || rc=$?
  [[ -n $out ]] || out=0
  if ((rc != 0)); then say "!$rc"; else say "$out"; fi
}

# cmd_bulk <action> <count>: after the prompt, every matching object of the cluster (or NAMESPACE).
#   <count> is cmd_count's answer: "!<code>" ends here with that code (nothing written).
#   exit: act_rows', or the resolver's, or 2 when APP is combined with a bulk action.
cmd_bulk() {
  local action=$1 counted=${2:-} targets
  [[ $counted =~ ^!([0-9]+)$ ]] && exit "${BASH_REMATCH[1]}"
  preflight one
  if [[ $action == reconcile ]] && ! is_true "$FAILED"; then
    cmd_act reconcile
    return
  fi
  [[ -z $APP ]] || die 2 "APP cannot be combined with a bulk operation — use task flux:$action APP=$APP instead"
  [[ $action != suspend ]] || SUSPEND_BATCH=$(new_batch)
  if one_patch "$action"; then
    patcher_start "$action"
  fi
  targets=$(resolve "$(order_for "$action")" "$(bulk_filter "$action")")
  if [[ $action == resume && -n $targets ]]; then
    local selection picked held
    selection=$(select_batch "$targets") || exit $?
    picked=$(selected batch "$selection")
    if [[ -n $picked ]]; then
      say "resuming batch $picked on $CLUSTER"
    elif ! is_true "$ALL"; then
      say "no suspend-all batch is recorded on the suspended objects of $CLUSTER — ALL=true resumes them anyway"
    fi
    while IFS= read -r held; do
      [[ -z $held ]] || say "· $held left alone (held on its own: task flux:list-suspended says by whom)"
    done <<<"$(selected left "$selection")"
    targets=$(selected keep "$selection")
    targets=$(depends_order "$targets") || exit $?
  fi
  act_rows "$action" "$targets"
}

# cmd_reconcile_source: flux reconcile source, then the revision it fetched.
#   exit: 0, 1 when the source failed to reconcile, 4/5 preflight.
cmd_reconcile_source() {
  local ns=${NAMESPACE:-flux-system} got res=gitrepositories.v1.source.toolkit.fluxcd.io
  prove_clusters
  run flux reconcile source "$SOURCE_KIND" "$SOURCE" -n "$ns" --context "$CLUSTER" ||
    die 1 "source $SOURCE_KIND $ns/$SOURCE failed to reconcile on $CLUSTER — see: task flux:events CLUSTER=$CLUSTER NAMESPACE=$ns"
  case $SOURCE_KIND in
  oci) res=ocirepositories.v1.source.toolkit.fluxcd.io ;;
  helm) res=helmrepositories.v1.source.toolkit.fluxcd.io ;;
  bucket) res=buckets.v1.source.toolkit.fluxcd.io ;;
  chart) res=helmcharts.v1.source.toolkit.fluxcd.io ;;
  esac
  got=$(kc --request-timeout="$LIST_TIMEOUT" -n "$ns" get "$res" "$SOURCE" -o 'jsonpath={.status.artifact.revision}' || true)
  say "✓ source $SOURCE_KIND $ns/$SOURCE on $CLUSTER at revision ${got:-unknown}"
}
