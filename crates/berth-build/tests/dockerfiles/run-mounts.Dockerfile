# check: [ "$(cat /out)" = cached ] && [ "$(cat /out2)" = a ] && [ ! -e /cache/f ]
FROM busybox:local
RUN --mount=type=cache,target=/cache echo cached > /cache/f
RUN --mount=type=cache,target=/cache cat /cache/f > /out
RUN --mount=type=bind,source=a.txt,target=/m cat /m > /out2
RUN --mount=type=tmpfs,target=/t touch /t/x && [ -f /t/x ]
