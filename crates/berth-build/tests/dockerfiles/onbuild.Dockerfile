# stream: # Executing 1 build trigger
# check: [ -f /triggered ] && [ ! -f /not-in-base ]
# config: /config/OnBuild=null
FROM busybox:local AS base
ONBUILD RUN touch /triggered
FROM base
