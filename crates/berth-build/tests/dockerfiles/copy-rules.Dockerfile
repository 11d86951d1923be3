# check: [ -f /excluded/a.txt ] && [ -f /excluded/dir/x.txt ] && [ ! -e /excluded/dir/sub ] && [ ! -e /excluded/keep.log ]
# check: [ "$(cat /d1/a.txt)" = a ]
# check: [ "$(cat /renamed)" = a ]
# check: [ -f /contents/x.txt ] && [ -f /contents/sub/y.txt ] && [ ! -e /contents/dir ]
# check: [ -f /multi/a.txt ] && [ -f /multi/b.txt ]
# check: [ -f /glob/a.txt ] && [ -f /glob/b.txt ] && [ ! -e /glob/keep.log ]
# check: [ -f /existing/a.txt ]
# check: [ "$(cat /w/rel/a.txt)" = a ]
# check: [ ! -L /lnk ] && [ "$(cat /lnk)" = a ]
# check: [ "$(cat /followed)" = a ]
# check: [ "$(stat -c %u:%g /d1/a.txt)" = 0:0 ]
FROM busybox:local
COPY a.txt /d1/
COPY a.txt /renamed
COPY dir /contents
COPY a.txt b.txt /multi/
COPY *.txt /glob/
RUN mkdir /existing
COPY a.txt /existing
WORKDIR /w
COPY a.txt rel/
COPY dir/../link /lnk
COPY link /followed-dir/
RUN cp /followed-dir/link /followed
COPY --exclude=dir/sub --exclude=*.log . /excluded/
