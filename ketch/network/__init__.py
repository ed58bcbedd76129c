"""Container networking below the engine: what a container's network is made of, and who makes it.

`model` holds the data the engine and a network service exchange (NetworkRequest in, Attachment
out); `basic` is the first NetworkService: none, host, container:<x> and a private namespace
with loopback for the default network. The engine calls a NetworkService through the protocol
in ketch/engine/ports.py, so bridges and user networks plug in here without touching lifecycle.
"""
