"""Automatic HTTPS: the certificates the runtime obtains and renews itself.

manager.py (CertificateManager: which files serve each managed name; obtaining,
renewing, retrying), local_ca.py (the local CA, `tls internal`), acme.py (one ACME CA
and account, certbot's `acme` library), challenges.py (the ACME challenges out now,
which the listeners answer), storage.py (certmagic's storage layout and lock files).
"""
