"""Integration tests of the whole daemon against the real emulator process on loopback."""
