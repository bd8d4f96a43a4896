"""The Redis layout of streaming state: key names, tile fields, the atomic update scripts, and reads."""
