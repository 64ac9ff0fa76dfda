#!/usr/bin/env bash
# Fail before a long install when the disk cannot hold it: one line saying where, how much is
# free and how much is needed, instead of pip's "No space left on device" halfway through.
# Usage: scripts/check_disk.sh DIR NEEDED_GB   (NEEDED_GB=0 skips the check)
set -euo pipefail
dir=${1:?usage: check_disk.sh DIR NEEDED_GB}
needed_gb=${2:?usage: check_disk.sh DIR NEEDED_GB}
free_kb=$(df -Pk "$dir" | awk 'NR == 2 {print $4}')
mount=$(df -Pk "$dir" | awk 'NR == 2 {print $6}')
free_gb=$(awk -v kb="$free_kb" 'BEGIN {printf "%.1f", kb / 1048576}')
if awk -v kb="$free_kb" -v gb="$needed_gb" 'BEGIN {exit !(kb < gb * 1048576)}'; then
    echo "make venv: $free_gb GiB free on $mount, the virtual environment needs about" \
        "$needed_gb GiB (torch's CUDA build): free some space, or set VENV_GB to try anyway" >&2
    exit 1
fi
