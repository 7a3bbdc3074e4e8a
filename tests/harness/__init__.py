"""The specification harness: the assembled bot, a Discord-like test
transport, real or fast backends, and fault controls. See
docs/TESTING_GUIDE.md."""
