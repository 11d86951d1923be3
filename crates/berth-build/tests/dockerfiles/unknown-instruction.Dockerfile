# error: dockerfile parse error on line 4: unknown instruction: RUNN
FROM busybox:local
RUN true
RUNN false
