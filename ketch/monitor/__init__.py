"""What keeps a container's stdio, logs and exit code while the daemon restarts.

Ketch does not run a Python process per container. Each container (and each exec
session) is watched by conmon, podman's small C monitor from Debian: ketchd spawns it
with plain ``subprocess`` (no ``preexec_fn``), conmon double-forks away from ketchd,
runs ``<runtime> create``, holds the container's stdio (pipes or the pty master),
writes the log file (k8s-file format), serves an attach socket and a control fifo in
the bundle directory, and writes the exit code to an exit file when the container
ends. ketchd can die and come back: it finds each conmon by its pid file, watches it
through a pidfd, and reads the exit file of containers that ended meanwhile.
"""
