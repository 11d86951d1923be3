# history: /bin/sh -c #(nop)  WORKDIR /a/b/c
# check: [ "$(pwd)" = /a/b/c ] && [ -d /a/b/c ]
# check: [ "$(cat /a/b/c/here)" = yes ]
# check: [ -d /var/from-env ]
# config: /config/WorkingDir="/a/b/c"
FROM busybox:local
ENV DIR=/var/from-env
WORKDIR $DIR
WORKDIR /a
WORKDIR b
WORKDIR c
RUN echo yes > here
