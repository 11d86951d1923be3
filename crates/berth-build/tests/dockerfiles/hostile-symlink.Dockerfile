# error: file not found in build context
FROM busybox:local
COPY escape /stolen
