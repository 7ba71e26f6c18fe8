"""The admission webhook's serving certificate: pure decisions (certificates) and the I/O that applies them (keeper)."""
