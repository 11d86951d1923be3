# dockerignore: *.log
# dockerignore: !keep.log
# dockerignore: docs
# dockerignore: !docs/README.md
# dockerignore: **/y.txt
# check: [ -f /ctx/keep.log ] && [ ! -e /ctx/skip.log ]
# check: [ -f /ctx/docs/README.md ] && [ ! -e /ctx/docs/other.md ]
# check: [ -f /ctx/dir/x.txt ] && [ ! -e /ctx/dir/sub/y.txt ]
FROM busybox:local
COPY . /ctx/
