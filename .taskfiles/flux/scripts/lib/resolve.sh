# shellcheck shell=bash
# lib/resolve.sh — THE resolver: APP / NAMESPACE / TYPE / bulk filter → the Kustomizations and
# HelmReleases to act on, as rows "Kind|namespace|name|spec.suspend|Ready status", from one
# server-side filtered list (which is also the command's preflight probe of its cluster).

# shellcheck source=common.sh
source "${BASH_SOURCE[0]%/*}/common.sh"

# resources_for_type: out: the resources TYPE selects (both kinds by default).
resources_for_type() {
  case $TYPE in
  ks | kustomization) printf '%s' "$KS_RES" ;;
  hr | helmrelease) printf '%s' "$HR_RES" ;;
  *) printf '%s' "$KS_RES,$HR_RES" ;;
  esac
}

# rows <variable> <scope args…>: sets <variable> to the rows of one list of $CLUSTER (by name, as
#   cluster_get). exit: kubectl's.
rows() {
  local into=$1
  shift
  cluster_get "$into" "$(resources_for_type)" "$@" -o "jsonpath=$ROW_JSONPATH"
}

# order_rows <ks-first|hr-first> <rows>: out: the rows of one kind, then those of the other.
order_rows() {
  local first=Kustomization second=HelmRelease kind line
  [[ $1 == hr-first ]] && first=HelmRelease second=Kustomization
  for kind in "$first" "$second"; do
    while IFS= read -r line; do
      [[ $line == "$kind|"* ]] && printf '%s\n' "$line"
    done <<<"$2"
  done
  return 0
}

# filter_rows <suspended|unsuspended|failed|""> <rows>: out: the rows a bulk command acts on.
filter_rows() {
  local kind ns name s r out=""
  if [[ -z $1 ]]; then
    printf '%s' "$2"
    return 0
  fi
  while IFS='|' read -r kind ns name s r; do
    [[ -z $kind ]] && continue
    case $1 in
    suspended) [[ $s == true ]] || continue ;;
    unsuspended) [[ $s != true ]] || continue ;;
    failed) [[ $s != true && $r != True ]] || continue ;;
    esac
    out+="$kind|$ns|$name|$s|$r"$'\n'
  done <<<"$2"
  printf '%s' "$out"
}

# close_names: out: up to five names close to $APP (substring or edit distance <= 2), one line.
close_names() {
  local res
  res=$(resources_for_type)
  kc --request-timeout="$LIST_TIMEOUT" get "$res" -A -o 'jsonpath={range .items[*]}{.metadata.name}{"\n"}{end}' 2>/dev/null |
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

# ambiguity <rows of APP>: exit 1 with one line when one kind of APP exists in two namespaces.
ambiguity() {
  local kind ns name _rest dup cands=""
  for dup in HelmRelease Kustomization; do
    cands=""
    while IFS='|' read -r kind ns name _rest; do
      [[ $kind == "$dup" ]] && cands+="${cands:+, }$ns/$name"
    done <<<"$1"
    [[ $cands == *", "* ]] &&
      die 1 "'$APP' is ambiguous on cluster $CLUSTER: $dup $cands — add NAMESPACE=<one of those namespaces>"
  done
  return 0
}

# resolve <ks-first|hr-first> [suspended|unsuspended|failed|any]: the rows to act on, ordered.
#   With APP: its objects (NAMESPACE narrows); else NAMESPACE's objects; with a bulk filter (then
#   neither is needed) the cluster's or NAMESPACE's objects that the filter keeps.
#   out: the rows, one per line. exit 1: APP not found (with close names) or ambiguous, NAMESPACE
#   empty; 2: neither APP nor NAMESPACE; 4/5: preflight (cluster_get); 6: the list failed.
resolve() {
  local order=$1 filter=${2:-} out scope=(-A) what
  [[ -n $NAMESPACE ]] && scope=(-n "$NAMESPACE")
  [[ $filter == any ]] && filter=""
  if [[ -n $APP ]]; then
    rows out "${scope[@]}" --field-selector "metadata.name=$APP" ||
      die 6 "listing Flux objects on cluster $CLUSTER failed — check: kubectl --context $CLUSTER get $KS_RES -A"
    if [[ -z $out ]]; then
      local near
      near=$(close_names || true)
      what="no Kustomization or HelmRelease named '$APP'${NAMESPACE:+ in namespace $NAMESPACE} on cluster $CLUSTER"
      die 1 "$what — ${near:+did you mean: $near? }list them with: task flux:status CLUSTER=$CLUSTER"
    fi
    ambiguity "$out"
  elif [[ -n $NAMESPACE || -n ${2:-} ]]; then
    rows out "${scope[@]}" ||
      die 6 "listing Flux objects on cluster $CLUSTER failed — check: kubectl --context $CLUSTER get $KS_RES -A"
    if [[ -z $out && -z ${2:-} ]]; then
      die 1 "no Kustomization or HelmRelease in namespace $NAMESPACE on cluster $CLUSTER — list them with: task flux:status CLUSTER=$CLUSTER"
    fi
  else
    die 2 "APP or NAMESPACE is required — e.g. APP=odoo or NAMESPACE=business"
  fi
  out=$(filter_rows "$filter" "$out")
  [[ -z $out ]] && return 0
  order_rows "$order" "$out"
}
