# error: outside of the repository
FROM busybox:local
# A git source's subdirectory may not climb out of the repository (refused before any fetch).
ADD https://git.invalid/repo.git#main:../../etc /src
