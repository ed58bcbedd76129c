"""The `ketch` command. ketch/cli/main.py holds the command table; each command lives in a
module (images.py, registry.py, system.py, ...) imported only when that command runs."""
