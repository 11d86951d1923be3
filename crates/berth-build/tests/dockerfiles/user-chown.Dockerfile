# check: [ "$(cat /home/app/whoami)" = 1000:1000 ]
# check: [ "$(stat -c %u:%g /owned/a.txt)" = 1000:50 ]
# check: [ "$(stat -c %u:%g /owned)" = 1000:50 ]
# check: [ "$(stat -c %u:%g /numeric)" = 7:8 ]
# check: [ "$(stat -c %a /mode.txt)" = 751 ]
# check: [ "$(stat -c %u /plain.txt)" = 0 ]
# check: [ "$(id -u)" = 1000 ]
FROM busybox:local
USER app
RUN echo "$(id -u):$(id -g)" > /home/app/whoami
COPY --chown=app:staff a.txt /owned/
COPY --chown=7:8 a.txt /numeric
COPY --chmod=751 a.txt /mode.txt
COPY a.txt /plain.txt
