"""Ketch: a container engine built on the Linux kernel."""

__version__ = "0.1.0"
OCI_VERSION = "1.1.0"
