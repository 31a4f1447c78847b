"""Before apply's first write: does this service store the face_token ``detect`` answers? (plan/matching.py)

Asked only when a plan replaces faces on the strength of detected tokens and nothing is known of the
service yet. One image the plan uploads is detected and uploaded to a scratch group
``_facesync_probe_<nonce>`` (detect, group/add, user/add, group/delete: four calls, once per library and
token cache), the two tokens are compared, and the group is removed whatever happens (scratch.py). The
image is detected here rather than trusting the plan's token: a saved plan may come from another machine.
The answer is kept in the token cache, with the image's stored token, so no later plan or apply asks again.

An image the service refuses (no face, quality, liveness) is no answer: the next of the plan's images is
tried, up to ``MOST_IMAGES``. If none is accepted the question stays open and apply goes on: the executor
adds before it deletes, so on a service that refuses a face twice on a user it stops before any delete
(223105), and on one that accepts it the faces end re-uploaded; either way no face is lost.
"""

from __future__ import annotations

import logging
import secrets

from facesync.api.errors import ImageRejectedError
from facesync.api.protocol import FaceLibrary
from facesync.cache import DetectAgreement, TokenCache
from facesync.model import PROBE_GROUP_PREFIX
from facesync.plan.matching import probe_uploads
from facesync.plan.ops import FaceSource, Plan
from facesync.plan.uploads import load_upload
from facesync.scratch import remove_groups

log = logging.getLogger(__name__)

PROBE_USER = "probe"
SEEN_BY = "apply's probe"
MOST_IMAGES = 3


def probe_detect_agreement(library: FaceLibrary, plan: Plan, cache: TokenCache) -> DetectAgreement | None:
    """Detect an image the plan uploads to a user it names in ``replaced_by_detect``, upload it to a scratch
    group, compare the two tokens and record the answer in ``cache``; None when no image was accepted."""
    for face in probe_uploads(plan)[:MOST_IMAGES]:
        try:
            return _probe(library, face, cache)
        except ImageRejectedError as error:
            log.info("the probe's image %s was refused (Baidu error %s, log_id %s)", face.source,
                     error.error_code, error.log_id)
    log.warning("could not find out whether detect answers the stored face_token: the service refused the "
                "images tried; going on (adds run before deletes, so no face is lost)")
    return None


def _probe(library: FaceLibrary, face: FaceSource, cache: TokenCache) -> DetectAgreement:
    image, digest = load_upload(face)
    detected = library.detect(image).faces
    if not detected:
        raise ImageRejectedError(222202, "pic not has face", None)
    group_id = PROBE_GROUP_PREFIX + secrets.token_hex(6)
    try:
        library.group_add(group_id)
        stored = library.user_add(group_id, PROBE_USER, image).face_token
    finally:
        if not remove_groups(library, (group_id,)):
            log.warning("the scratch group %s holds one copy of %s: delete it by hand", group_id, face.source)
    agreement = DetectAgreement.of(stored == detected[0].face_token)
    cache.record_detect_agreement(agreement, SEEN_BY)
    cache.record_upload(digest or face.source, stored, face.path or face.source if digest else None)
    log.info("detect and user/add %s on this service (one upload of %s to a scratch group)",
             "agree" if agreement is DetectAgreement.EQUAL else "disagree", face.source)
    return agreement

