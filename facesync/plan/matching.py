"""Which users a plan replaces faces of on the strength of ``detect`` alone, and the refusal when that is wrong.

facesync matches a manifest image to a live face by face_token. The token it knows for an image comes
either from a user/add answer (the token the library stored) or, for an image it never uploaded, from
``detect``. Baidu's documents do not promise that the two are the same (the contract's UNKNOWN table).
Where they differ, an image known only by ``detect`` matches none of the library's faces, and the plan
deletes the user's faces and re-adds the same pictures: nothing is lost, since the re-adds come from
the manifest's images, but the plan says something false and a reviewer sees deletes that are not real.

So resolve marks an image whose token only ``detect`` gave (``DesiredImage.detected``; never once the
token cache knows the service's tokens agree), the planner names each user that gets such an image while
losing faces it could not match (``Plan.replaced_by_detect``), and the session keeps of those only the
users that lose a face the token cache cannot name (``unexplained``: a face it knows as the upload of
another image is certainly not one of the new pictures). What happens then depends on what is known of
the service (``TokenCache.detect_agreement``):

- tokens agree: no image is marked, no user named;
- they differ: the plan is refused with ``UnmatchedFacesError`` (exit 3), unless it is made with
  ``--reupload``, which accepts the re-adds; the planner then replaces those users' faces by the update
  form (user/update with one image, then re-adds), since an add first would meet the very face it
  replaces (223105 where one face may not be on a user twice);
- not known yet: the plan says so, and apply finds out with one upload to a scratch group before its
  first write (apply/probe.py), then refuses or goes on.

Once facesync has uploaded the images, it knows their stored tokens and plans match again. Users of a
group that does not prune keep their unmatched faces: they are named, but ``--reupload`` only adds.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from facesync.errors import UnmatchedFacesError
from facesync.model import ImageKind
from facesync.plan.effects import structure, user_effect
from facesync.plan.ops import FaceSource, OpKind, Plan
from facesync.words import counted

SHOWN_USERS = 10


def probe_uploads(plan: Plan) -> tuple[FaceSource, ...]:
    """The files and URLs the plan uploads to the users it names, each once, in plan order: detected, then
    sent once to a scratch group, one shows whether the service stores the token ``detect`` answers for it
    (apply/probe.py)."""
    named = set(plan.replaced_by_detect)
    faces: dict[str, FaceSource] = {}
    for op in plan.operations:
        face = op.face
        if ((op.group_id, op.user_id) in named and op.kind in (OpKind.ADD_FACE, OpKind.UPDATE_USER)
                and face is not None and face.kind is not ImageKind.FACE_TOKEN):
            faces.setdefault(face.sha256 or face.source, face)
    return tuple(faces.values())


def unexplained(plan: Plan, stored_tokens: Callable[[Iterable[str]], set[str]]) -> tuple[tuple[str, str], ...]:
    """The users of ``plan.replaced_by_detect`` that lose a face ``stored_tokens`` cannot name: a face the
    token cache knows as another image's upload is certainly not one of the new pictures."""
    named = set(plan.replaced_by_detect)
    removed: dict[tuple[str, str], tuple[str, ...]] = {}
    for group_id, by_user in structure(plan).items():
        for user_id, ops in by_user.items():
            if (group_id, user_id) in named:
                removed[(group_id, user_id)] = user_effect(ops).removed
    known = stored_tokens({token for tokens in removed.values() for token in tokens})
    return tuple(user for user in plan.replaced_by_detect if not set(removed.get(user, ())) <= known)


def describe_users(users: tuple[tuple[str, str], ...]) -> str:
    """``2 users (staff/alice, staff/bob)``, the first ``SHOWN_USERS`` named."""
    shown = ", ".join(f"{group_id}/{user_id}" for group_id, user_id in users[:SHOWN_USERS])
    more = f" and {len(users) - SHOWN_USERS} more" if len(users) > SHOWN_USERS else ""
    return f"{counted(len(users), 'user')} ({shown}{more})"


def unmatched_faces_error(users: tuple[tuple[str, str], ...], seen: str, cache_path: str) -> UnmatchedFacesError:
    """The refusal: which users, why their faces look replaced, and what the user can do."""
    return UnmatchedFacesError(
        f"facesync cannot match the manifest's images to the faces of {describe_users(users)}: on this "
        "service detect gives an image another face_token than the one user/add stored for it "
        f"(seen {seen}), so the plan would delete their faces and re-add what are probably the same pictures",
        hint="facesync learns stored tokens from its own uploads and keeps them in its token cache "
             f"({cache_path}); these faces were not uploaded through it (another machine, a cleared cache, "
             "another tool). To replace them once from the manifest's images, plan or apply with --reupload; "
             "later plans match them")
