"""How the local library answers where Baidu's documentation is silent: one switch per behaviour.

The contract's UNKNOWN table lists behaviours nobody here can observe on Baidu. facesync must be correct
whichever way Baidu answers, so the local library (and ``facesync serve`` in front of it) can play each
behaviour both ways: ``lenient`` (the default, the kind answer) and ``harsh`` (the answer most dangerous
for a reconciler). The choices live here and nowhere else; the store only asks these switches.

``FACESYNC_UNKNOWNS=harsh`` makes every ``local:`` target opened by the command line harsh, so a whole
test run or a person's experiment can use the dangerous answers without changing a command.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from facesync.errors import ConfigError

LENIENT = "lenient"
HARSH = "harsh"
CHOICES = (LENIENT, HARSH)
ENV_VAR = "FACESYNC_UNKNOWNS"


@dataclass(frozen=True, slots=True)
class Unknowns:
    """Which answer the library gives to each undocumented behaviour (True: the dangerous one)."""

    name: str
    add_without_info_clears: bool  # user/add on an existing user with no user_info empties it
    update_without_info_clears: bool  # user/update with no user_info empties it
    face_token_needs_live_face: bool  # a FACE_TOKEN image works only while some face holds that token
    face_once_per_group: bool  # one face cannot be on two users of the same group
    add_creates_group: bool  # user/add into a missing group creates the group
    clamp_page_length: bool  # `length` above 1000 serves 1000 instead of 222003
    detect_token_differs: bool  # detect's face_token is not the token user/add stores for the image
    recreate_refused_while_deleting: bool  # group/add of an id still being deleted: 223101, not 222901

    @classmethod
    def lenient(cls) -> Unknowns:
        return cls(LENIENT, False, False, False, False, False, False, False, False)

    @classmethod
    def harsh(cls) -> Unknowns:
        return cls(HARSH, True, True, True, True, True, True, True, True)

    @classmethod
    def named(cls, name: str) -> Unknowns:
        """``lenient`` or ``harsh`` (case and surrounding blanks ignored); anything else is a ValueError."""
        chosen = name.strip().lower()
        if chosen == LENIENT:
            return cls.lenient()
        if chosen == HARSH:
            return cls.harsh()
        raise ValueError(f"unknowns must be one of {', '.join(CHOICES)}, not {name!r}")


def unknowns_from_environment() -> Unknowns:
    """The variant ``FACESYNC_UNKNOWNS`` asks for; lenient when it is unset or empty."""
    try:
        return Unknowns.named(os.environ.get(ENV_VAR) or LENIENT)
    except ValueError as error:
        raise ConfigError(f"{ENV_VAR}: {error}", hint=f"set {ENV_VAR} to {' or '.join(CHOICES)}, or unset it") from None
