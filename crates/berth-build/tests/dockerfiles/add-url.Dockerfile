# error: ADD of remote URLs is not supported
FROM busybox:local
ADD https://example.com/x /x
