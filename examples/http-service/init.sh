#!/bin/sh
# PID 1 of the http-service example: fledge-init has mounted /dev /proc /sys /tmp /run.
# A real plugin would end with `exec /usr/bin/http-service 0.0.0.0:8080`; this example asks the
# server once, prints the answer on the console and powers off.
export PATH=/sbin:/usr/sbin:/bin:/usr/bin

# 127.0.0.1 needs the loopback interface up; nothing else configures it in this image.
ip link set lo up
/usr/bin/http-service 0.0.0.0:8080 &

# Wait for the server to listen (up to 20 s under emulation), then print its answer.
tries=0
until answer=$(wget -qO- http://127.0.0.1:8080/ 2>/dev/null); do
    tries=$((tries + 1))
    if [ "$tries" -ge 100 ]; then
        echo "http-service example: no answer from http://127.0.0.1:8080/"
        poweroff -f
    fi
    usleep 200000
done
echo "http-service example: GET / answered: $answer"
poweroff -f
