"""The development setup: what a server started without a configuration file holds.

See docs/CONFIGURATION.md, "The development setup", in the Switchboard repository.
"""

APP_ID = "5b0d0000-0000-4000-8000-000000000a99"
TENANT_ID = "5b0d0000-0000-4000-8000-0000000000e1"
CLIENT_SECRET = "switchboard-dev-secret"

ALICE = "5b0d0000-0000-4000-8000-00000000a11c"
"""Answers after 1 s."""
BOB = "5b0d0000-0000-4000-8000-000000000b0b"
"""Answers after 3 s."""
CAROL = "5b0d0000-0000-4000-8000-00000000ca01"
"""Declines after 2 s (603/8538)."""
DAVE = "5b0d0000-0000-4000-8000-00000000da1e"
"""Busy (486/8539)."""
ERIN = "5b0d0000-0000-4000-8000-00000000e1e0"
"""Never answers (408/10057 after the ringing timeout)."""
FRANK = "5b0d0000-0000-4000-8000-00000000f00d"
"""Unreachable (480/10076)."""
FRONT_DESK_PHONE = "+15550100"
"""A phone that answers after 1 s."""
UNANSWERED_PHONE = "+15550199"
"""A phone that never answers."""

MEETING_ID = "1234567890"
"""The meeting's joinMeetingId; Alice and Bob are in it."""
MEETING_PASSCODE = "switchboard"
