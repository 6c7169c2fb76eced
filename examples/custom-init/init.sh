#!/bin/sh
# PID 1 of the example image: filesystems are already mounted by fledge-init.
echo "custom-init: pid $$, kernel $(uname -r)"
grep -E ' /(proc|sys|dev|tmp|run) ' /proc/mounts | cut -d' ' -f2 | tr '\n' ' '; echo
cat /srv/www/index.html
echo "custom-init: done, powering off"
poweroff -f
