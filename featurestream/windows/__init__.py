"""The pure semantics of DESIGN.md "Semantics": tile math, mergeable partials, event-time sessions.

No I/O and no services: the stream materializer, the serving API and the tests
all compute windows and sessions with these functions, so they cannot disagree.
"""
