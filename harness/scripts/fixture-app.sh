#!/bin/sh
# The container of every fixture app on the kind provider (image k8s-ops.local/fixture-app, built by
# harness/src/provider/containers/images.rs from Debian's busybox-static, run by busybox sh): says which app it is, with
# its arguments and the config files they name, then serves HTTP on PORT, logging every request.
set -eu
app=${APP_NAME:-fixture-app}
port=${PORT:-8080}
echo "${app}: fixture app starting, HTTP on :${port}, arguments: $*"
for arg in "$@"; do
  case "$arg" in
  --config=*)
    echo "${app}: config ${arg#--config=}:"
    cat "${arg#--config=}"
    ;;
  esac
done
mkdir -p /tmp/www
echo "${app} ok" >/tmp/www/index.html
exec httpd -f -v -p "$port" -h /tmp/www
