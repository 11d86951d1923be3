# build-arg: NAME=world
# check: [ "$(cat /script-out)" = "line1 line2" ]
# check: [ "$(cat /greeting)" = "hello world" ]
# check: [ "$(cat /literal)" = 'hello $NAME' ]
# check: [ "$(cat /tabs)" = "indented" ]
# check: [ "$(cat /two)" = "1-2" ]
# check: [ "$(cat /shebang)" = "script /dev/pipes/SCRIPT" ]
FROM busybox:local
ARG NAME
RUN <<EOF
set -e
printf 'line1 ' > /script-out
echo line2 >> /script-out
EOF
COPY <<EOF /greeting
hello ${NAME}
EOF
COPY <<'EOT' /literal
hello $NAME
EOT
COPY <<-EOF /tabs
	indented
	EOF
RUN cat <<A > /a && cat <<B > /b && echo "$(cat /a)-$(cat /b)" > /two
1
A
2
B
RUN <<SCRIPT
#!/bin/sh
echo "script $0" > /shebang
SCRIPT
