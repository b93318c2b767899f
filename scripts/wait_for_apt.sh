#!/usr/bin/env bash
# Waits until no other apt/dpkg holds the package manager's locks, saying who holds which, so that
# set-up on a machine where unattended-upgrades or another apt-get runs waits instead of failing
# with exit code 100. Sourced by scripts/setup.sh (wait_for_apt_locks) or run on its own.
#   TRELLIS_APT_LOCKS   space-separated lock files (default: dpkg's and apt's own)
#   TRELLIS_APT_WAIT_S  give up after this many seconds (default 900)
# apt takes these locks with fcntl(F_SETLK); /proc/locks lists such locks by inode with the holder's pid.

apt_lock_holder() {  # prints "pid (command)" of the process holding a lock on file $1, or nothing
  local inode pid
  [ -e "$1" ] || return 0
  inode=$(stat -c %i "$1" 2>/dev/null) || return 0
  pid=$(awk -v ino="$inode" '{ n = split($6, id, ":"); if (id[n] == ino) { print $5; exit } }' /proc/locks 2>/dev/null)
  [ -n "$pid" ] || return 0
  echo "$pid ($(tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | cut -c1-80 || echo '?'))"
}

wait_for_apt_locks() {
  local locks=${TRELLIS_APT_LOCKS:-/var/lib/dpkg/lock-frontend /var/lib/dpkg/lock /var/lib/apt/lists/lock /var/cache/apt/archives/lock}
  local limit=${TRELLIS_APT_WAIT_S:-900} waited=0 busy lock holder
  while :; do
    busy=""
    for lock in $locks; do
      holder=$(apt_lock_holder "$lock")
      if [ -n "$holder" ]; then busy="$lock held by process $holder"; break; fi
    done
    [ -z "$busy" ] && return 0
    if [ "$waited" -ge "$limit" ]; then
      echo "[setup] gave up after ${waited}s: the package manager is still busy ($busy); let it finish and run setup again" >&2
      return 1
    fi
    if [ $((waited % 10)) -eq 0 ]; then
      echo "[setup] waiting for the package manager: $busy (${waited}s of at most ${limit}s)" >&2
    fi
    sleep 1
    waited=$((waited + 1))
  done
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  wait_for_apt_locks
fi
