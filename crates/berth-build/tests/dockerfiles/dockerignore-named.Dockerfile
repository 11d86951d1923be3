# error: COPY failed: file not found in build context or excluded by .dockerignore: stat skip.log
# dockerignore: *.log
FROM busybox:local
COPY skip.log /
