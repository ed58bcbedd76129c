"""ketchd, the Ketch daemon (see ketch.daemon.main)."""
