# check: [ "$def" = hello ] && [ "$ghi" = bye ] && [ "$abc" = bye ]
# build-arg: FROM_CLI=cli
# build-arg: UNUSED=x
# stream: [Warning] One or more build-args [UNUSED] were not consumed
# check: [ "$GLOBAL_SEEN" = "" ] && [ "$REDECLARED" = global ] && [ "$FROMCLI" = cli ]
# check: [ "$OVER" = env ] && [ -z "$ARGONLY" ]
# check: [ "$(cat /args)" = "arg-only-value|env" ]
# check: [ "$INHERITED" = from-first ]
# check: [ "$D1" = "def" ] && [ "$D2" = "" ] && [ "$D3" = "set" ] && [ "$D4" = "alt" ]
# history: |3 ARGONLY=arg-only-value FROM_CLI=cli GLOBAL=global /bin/sh -c echo "$ARGONLY|$OVER" > /args
ARG GLOBAL=global
FROM busybox:local AS first
ENV INHERITED=from-first
FROM first
ENV GLOBAL_SEEN=${GLOBAL}
ARG GLOBAL
ENV REDECLARED=$GLOBAL
ARG FROM_CLI=default
ENV FROMCLI=$FROM_CLI
ARG OVER=arg
ENV OVER=env
ARG ARGONLY=arg-only-value
RUN echo "$ARGONLY|$OVER" > /args
ENV EMPTY=
ENV D1=${NOPE:-def} D2=${EMPTY:+alt} D3=${EMPTY-x}set D4=${INHERITED:+alt}
ENV abc=hello
ENV abc=bye def=$abc
ENV ghi=$abc
