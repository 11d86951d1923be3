# target: second
# check: [ -f /second ] && [ ! -f /third ]
# stream: Step 2/2 : RUN touch /second
FROM busybox:local AS first
RUN touch /never-built
FROM busybox:local AS second
RUN touch /second
FROM second
RUN touch /third
