# config: /rootfs/diff_ids/0
# config: /history/0/created_by="/bin/sh -c #(nop) COPY file:HASH in / "
# config: /config/Env=["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin","A=b"]
FROM scratch
COPY a.txt /
ENV A=b
