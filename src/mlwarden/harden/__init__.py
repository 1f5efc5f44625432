"""`mlwarden harden`: apply a defence, re-run the same audit, and compare before with after."""
