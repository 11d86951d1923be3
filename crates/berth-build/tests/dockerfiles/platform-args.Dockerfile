# check: [ "$TOS" = linux ] && [ -n "$TARCH" ] && [ "$TPLAT" = "linux/$TARCH" ] && [ "$BOS" = linux ]
# check: [ "$LEGACY" = "value with  spaces" ]
# config: /config/Healthcheck/Test=["NONE"]
FROM --platform=$BUILDPLATFORM busybox:local
ARG TARGETOS
ARG TARGETARCH
ARG TARGETPLATFORM
ARG BUILDOS
ENV TOS=$TARGETOS TARCH=$TARGETARCH TPLAT=$TARGETPLATFORM BOS=$BUILDOS
ENV LEGACY value with  spaces
HEALTHCHECK NONE
