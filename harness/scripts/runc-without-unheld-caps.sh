#!/bin/sh
# runc for a Docker engine whose host root lacks some capabilities (this project's VMs lack
# CAP_SYS_RESOURCE): Docker 20.10 grants every capability it knows to a privileged container and
# ignores --cap-drop, so runc fails with "unable to apply caps: operation not permitted". This
# wrapper deletes every capability missing from its own bounding set from the OCI files runc reads
# (the bundle's config.json for create/run, the --process file for exec), then runs the real runc
# with the same arguments. harness/src/provider/containers/engine.rs registers it as dockerd's default runtime only
# where a privileged probe container fails without it.
set -eu

# Capability names by number (linux/capability.h), CAP_ prefix dropped.
names="CHOWN DAC_OVERRIDE DAC_READ_SEARCH FOWNER FSETID KILL SETGID SETUID SETPCAP
LINUX_IMMUTABLE NET_BIND_SERVICE NET_BROADCAST NET_ADMIN NET_RAW IPC_LOCK IPC_OWNER SYS_MODULE
SYS_RAWIO SYS_CHROOT SYS_PTRACE SYS_PACCT SYS_ADMIN SYS_BOOT SYS_NICE SYS_RESOURCE SYS_TIME
SYS_TTY_CONFIG MKNOD LEASE AUDIT_WRITE AUDIT_CONTROL SETFCAP MAC_OVERRIDE MAC_ADMIN SYSLOG
WAKE_ALARM BLOCK_SUSPEND AUDIT_READ PERFMON BPF CHECKPOINT_RESTORE"

held=$(sed -n 's/^CapBnd:[[:space:]]*//p' /proc/self/status)

# One sed script deleting each unheld capability from a JSON array, wherever it stands in it.
script=""
bit=0
for name in $names; do
  if [ $(((0x$held >> bit) & 1)) -eq 0 ]; then
    cap="\"CAP_$name\""
    script="$script;s/${cap}[[:space:]]*,[[:space:]]*//g;s/[[:space:]]*,[[:space:]]*${cap}//g;s/${cap}//g"
  fi
  bit=$((bit + 1))
done

edit() {
  if [ -n "$script" ] && [ -f "$1" ]; then
    sed -i "${script#;}" "$1"
  fi
}

previous=""
for arg in "$@"; do
  case "$previous" in
  --bundle | -b) edit "$arg/config.json" ;;
  --process | -p) edit "$arg" ;;
  esac
  case "$arg" in
  --bundle=*) edit "${arg#--bundle=}/config.json" ;;
  --process=*) edit "${arg#--process=}" ;;
  esac
  previous=$arg
done

for runc in /usr/sbin/runc /usr/bin/runc /usr/local/sbin/runc /usr/local/bin/runc; do
  if [ -x "$runc" ]; then
    exec "$runc" "$@"
  fi
done
echo "runc-without-unheld-caps: no runc in /usr/sbin, /usr/bin, /usr/local/sbin or /usr/local/bin" >&2
exit 127
