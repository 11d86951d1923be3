# error: ADD of git repositories is not supported
FROM busybox:local
ADD git@github.com:moby/moby.git /src
