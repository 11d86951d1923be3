# check: [ "$(cat /opt/hello/world.txt)" = world ]
# check: [ "$(cat /plain/a.txt)" = a ]
FROM busybox:local
ADD app.tar.gz /opt/
ADD a.txt /plain/
