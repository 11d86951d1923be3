# config: /config/Cmd=["/bin/sh","-c","echo shell form"]
# config: /config/Entrypoint=["/bin/echo"]
# history: /bin/sh -c #(nop)  CMD ["/bin/sh" "-c" "echo shell form"]
FROM busybox:local
ENTRYPOINT ["/bin/echo"]
CMD echo shell form
