# shellcheck shell=bash
# lib/validate.sh — input validation: pure bash, no process, and nothing else runs before it passes.
# Every refusal is exit 2 with one line naming the variable and the fix.

# shellcheck source=common.sh
source "${BASH_SOURCE[0]%/*}/common.sh"

readonly DNS_LABEL='^[a-z0-9]([-a-z0-9]*[a-z0-9])?$'

# check_bool <VAR> <value>: exit 2 unless the value is true or false.
check_bool() {
  [[ $2 =~ ^(true|false)$ ]] || die 2 "$1='$2' is not a boolean — use $1=true or $1=false"
}

# check_name <VAR> <value> <maxlen>: empty, or a DNS-1123 name of at most maxlen. exit 2 otherwise.
check_name() {
  local var=$1 value=$2 max=$3
  [[ -z $value ]] && return 0
  if ((${#value} > max)); then
    die 2 "$var is ${#value} characters long — a Kubernetes name has at most $max"
  fi
  [[ $value =~ $DNS_LABEL ]] ||
    die 2 "$var='${value//[^[:print:]]/?}' is not a valid Kubernetes name — use lowercase letters, digits and '-' (e.g. $var=odoo)"
}

# check_text <VAR> <value>: empty, or one line of at most 200 printable characters without '"',
#   '\' or '|' (it goes into a JSON patch and into '|'-separated rows). exit 2 otherwise.
check_text() {
  local var=$1 value=$2
  [[ -z $value ]] && return 0
  ((${#value} <= 200)) || die 2 "$var is ${#value} characters long — keep it to one line of at most 200"
  [[ $value =~ ^[[:print:]]+$ && $value != *[\\\"\|]* ]] ||
    die 2 "$var='${value//[^[:print:]]/?}' has a character it cannot hold — use one line of text without \", \\ or |"
}

# status_kinds: status' own TYPE (ks, hr, source, all) → KINDS, TYPE emptied. exit 2 on others.
status_kinds() {
  case $TYPE in
  '' | all) KINDS=all ;;
  ks | kustomization) KINDS=ks ;;
  hr | helmrelease) KINDS=hr ;;
  source | sources) KINDS=source ;;
  *) die 2 "TYPE='${TYPE//[^[:print:]]/?}' is not supported by status — use TYPE=ks, hr, source or all" ;;
  esac
  TYPE=
}

# validate <one|all>: every input at once; "all" also accepts CLUSTER=all (read-only commands).
#   out: CONTROLLER normalised to its full name, TARGETS set. exit: 0, or 2 with one line.
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
  check_text REASON "$REASON"
  [[ -z $BATCH || $BATCH =~ ^[0-9]{8}T[0-9]{6}Z-[0-9]{1,10}$ ]] ||
    die 2 "BATCH='${BATCH//[^[:print:]]/?}' is not a suspend batch id — copy one from task flux:list-suspended (e.g. BATCH=20261207T005213Z-16487)"
  check_bool ALL "$ALL"
  check_text SUSPENDED_BY "$SUSPENDED_BY"
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
  set_targets
}
