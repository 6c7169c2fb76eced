#!/bin/sh
# The program fledge-init supervises in the http-service example (fledge-init has mounted /dev
# /proc /sys /tmp /run, brought up lo and, given `ip=`, the network). It starts the server and
# asks it for / once, printing the answer on the console. Booted with a network (`fledge run`
# passes `ip=`) it then keeps serving until the VM is shut down; without one it powers off.
export PATH=/sbin:/usr/sbin:/bin:/usr/bin

/usr/bin/http-service 0.0.0.0:8080 &
server=$!

# Wait for the server to listen (up to 20 s under emulation), then print its answer.
tries=0
until answer=$(wget -qO- http://127.0.0.1:8080/ 2>/dev/null); do
    tries=$((tries + 1))
    if [ "$tries" -ge 100 ]; then
        echo "http-service example: no answer from http://127.0.0.1:8080/"
        exit 1
    fi
    usleep 200000
done
echo "http-service example: GET / answered: $answer"

case " $(cat /proc/cmdline) " in
*" ip="*) ;;
*) poweroff -f ;;
esac
# fledge-init passes the shutdown signal on: stop the server and end with status 0.
trap 'kill "$server"; wait "$server"; echo "http-service example: stopped"; exit 0' INT TERM
echo "http-service example: serving on 0.0.0.0:8080"
wait "$server"
