# check: [ "$SHELLVAR" = "" ]
# config: /config/Labels/version="1.0 beta"
# config: /config/Labels/multi="a b"
# config: /config/ExposedPorts/80~1tcp={}
# config: /config/ExposedPorts/53~1udp={}
# config: /config/ExposedPorts/8001~1tcp={}
# config: /config/Volumes/~1data={}
# config: /config/StopSignal="SIGINT"
# config: /config/Healthcheck/Test=["CMD-SHELL","true"]
# config: /config/Healthcheck/Interval=5000000000
# config: /config/Healthcheck/Retries=3
# config: /config/Shell=["/bin/sh","-ec"]
# config: /config/Entrypoint=["/bin/sh","-ec","echo entry"]
# config: /config/Cmd=["old"]
# config: /config/OnBuild=["RUN echo triggered"]
# config: /author="someone"
# history: /bin/sh -c #(nop)  LABEL version=1.0 beta multi=a b
# history: /bin/sh -c #(nop)  EXPOSE 53/udp 80/tcp 8000/tcp 8001/tcp
# history: /bin/sh -c #(nop)  VOLUME [/data]
FROM busybox:local
LABEL version="1.0 beta" multi=a\ b
EXPOSE 80 53/udp 8000-8001
VOLUME ["/data"]
STOPSIGNAL SIGINT
HEALTHCHECK --interval=5s --retries=3 CMD true
MAINTAINER someone
CMD ["old"]
SHELL ["/bin/sh", "-ec"]
ENTRYPOINT echo entry
ONBUILD RUN echo triggered
