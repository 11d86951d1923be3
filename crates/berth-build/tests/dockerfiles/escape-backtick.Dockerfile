# escape=`
# check: [ "$(cat /out)" = 'a\b c' ]
# check: [ "$(cat /dollar)" = '$HOME' ]
FROM busybox:local
RUN printf '%s' 'a\b' `
    > /tmp/x && `
    printf ' c' >> /tmp/x && cp /tmp/x /out
ENV LIT=`$HOME
RUN printf '%s' "$LIT" > /dollar
