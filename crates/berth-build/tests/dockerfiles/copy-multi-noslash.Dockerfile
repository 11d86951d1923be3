# error: When using COPY with more than one source file, the destination must be a directory and end with a /
FROM busybox:local
COPY a.txt b.txt /notadir
