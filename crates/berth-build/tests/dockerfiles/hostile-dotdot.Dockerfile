# check: [ "$(cat /got)" = a ]
FROM busybox:local
COPY ../../../../a.txt /got
