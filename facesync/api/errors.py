"""Errors of the face-library API: one table of every error code in the contract, and its kinds.

Every target (the HTTP client, the local library, the server in front of it) raises these, so a caller
catches by kind (``except RetryableError``) and never compares codes by hand. Each error keeps the
three facts Baidu support asks for: ``error_code``, ``error_msg`` and ``log_id``.
"""

from __future__ import annotations

from facesync.errors import FacesyncError


class FaceApiError(FacesyncError):
    """An answer of the face-library API with a non-zero error_code (or no usable answer at all)."""

    def __init__(self, error_code: int, error_msg: str, log_id: int | None = None, *, hint: str | None = None):
        self.error_code = error_code
        self.error_msg = error_msg
        self.log_id = log_id
        where = f", log_id {log_id}" if log_id is not None else ""
        super().__init__(f"Baidu error {error_code}: {error_msg}{where}", hint=hint)

    def __reduce__(self):  # keep errors picklable across processes despite the keyword-only hint
        return (_rebuild, (type(self), self.error_code, self.error_msg, self.log_id, self.hint))


def _rebuild(cls, error_code, error_msg, log_id, hint):
    return cls(error_code, error_msg, log_id, hint=hint)


class RetryableError(FaceApiError):
    """Transient: the same call may succeed later (server busy, network failure)."""


class QpsLimitError(RetryableError):
    """Error 18: above the app's QPS; the rate limiter slows down and the call is retried."""


class TransportError(RetryableError):
    """No usable answer: timeout, reset connection, HTTP 5xx, a body that is not JSON. error_code is 0."""

    def __init__(self, error_msg: str, log_id: int | None = None):
        super().__init__(0, error_msg, log_id)
        self.message = f"no usable answer: {error_msg}"  # not "Baidu error 0": Baidu never answered
        self.args = (self.message,)

    def __reduce__(self):
        return (type(self), (self.error_msg, self.log_id))


class AnswerLostError(TransportError):
    """The request was sent but no answer came (read timeout, connection broken after sending): the service
    may have carried it out, or may still carry it out later. A call that is not safe to repeat
    (``retry.NOT_REPEATABLE``) is not re-sent after this; the caller reads the library to decide."""


class QuotaExhaustedError(FaceApiError):
    """17 (daily) or 19 (total) request limit: retrying cannot help; the run stops."""


class AuthError(FaceApiError):
    """Credentials, permission or app problems (6, 13, 14, 15, invalid_client)."""


class TokenError(AuthError):
    """100, 110, 111: the access_token is missing, invalid or expired; fetch a new one once and retry."""


class NotFoundError(FaceApiError):
    """A group, user, face or face_token does not exist; the subclasses say which."""


class GroupNotFoundError(NotFoundError):
    """223100 (the group), 223111 (a copy's destination group): the group does not exist."""


class UserNotFoundError(NotFoundError):
    """223103: the user is not in the group (or, with ``@ALL``, in no group)."""


class FaceNotFoundError(NotFoundError):
    """223106: the user holds no face with that face_token."""


class FaceTokenNotFoundError(NotFoundError):
    """222209: a face_token given as an image is unknown to the service (not "this user lacks the face")."""


class AlreadyExistsError(FaceApiError):
    """A group, user or face already exists; the subclasses say which."""


class GroupExistsError(AlreadyExistsError):
    """223101: the group already exists."""


class UserExistsError(AlreadyExistsError):
    """223102: the user is already in the group (a copy's destination)."""


class FaceExistsError(AlreadyExistsError):
    """223105: the face is already there (on this user; harsh unknowns: on another user of the group)."""


class InvalidInputError(FaceApiError):
    """A parameter is missing or malformed; the same call will always fail."""


class ImageRejectedError(FaceApiError):
    """The image itself was refused: no face, undecodable, download failed, quality or liveness."""


# code -> (kind, Baidu's error_msg). The messages are the ones Baidu's servers send.
ERROR_CODES: dict[int, tuple[type[FaceApiError], str]] = {
    1: (RetryableError, "Unknown error"),
    2: (RetryableError, "Service temporarily unavailable"),
    3: (InvalidInputError, "Unsupported openapi method"),
    4: (RetryableError, "Open api request limit reached"),
    6: (AuthError, "No permission to access data"),
    13: (AuthError, "Get service token failed"),
    14: (AuthError, "IAM Certification failed"),
    15: (AuthError, "app not exists or create failed"),
    17: (QuotaExhaustedError, "Open api daily request limit reached"),
    18: (QpsLimitError, "Open api qps request limit reached"),
    19: (QuotaExhaustedError, "Open api total request limit reached"),
    100: (TokenError, "Invalid parameter"),
    110: (TokenError, "Access token invalid or no longer valid"),
    111: (TokenError, "Access token expired"),
    222001: (InvalidInputError, "param[{param}] is null"),
    222002: (InvalidInputError, "param[start] format error"),
    222003: (InvalidInputError, "param[length] format error"),
    222006: (InvalidInputError, "param[group_id] format error"),
    222007: (InvalidInputError, "param[uid] format error"),
    222008: (InvalidInputError, "param[face_id] format error"),
    222009: (InvalidInputError, "param[quality_conf] format error"),
    222010: (InvalidInputError, "param[user_info] format error"),
    222013: (InvalidInputError, "param[image] format error"),
    222015: (InvalidInputError, "param[image_type] format error"),
    222018: (InvalidInputError, "param[user_id] format error"),
    222019: (InvalidInputError, "param[quality_control] format error"),
    222020: (InvalidInputError, "param[liveness_control] format error"),
    222025: (InvalidInputError, "param[face_token] format error"),
    222201: (RetryableError, "network not available"),
    222202: (ImageRejectedError, "pic not has face"),
    222203: (ImageRejectedError, "image check fail"),
    222204: (ImageRejectedError, "image_url_download_fail"),
    222205: (RetryableError, "network not available"),
    222206: (RetryableError, "rtse service return fail"),
    222207: (NotFoundError, "match user is not found"),
    222208: (InvalidInputError, "the number of image is incorrect"),
    222209: (FaceTokenNotFoundError, "face token not exist"),
    222300: (RetryableError, "add face fail"),
    222301: (RetryableError, "get face fail"),
    222302: (RetryableError, "system error"),
    222303: (RetryableError, "get face fail"),
    222361: (RetryableError, "network not available"),
    **{code: (RetryableError, "system busy") for code in range(222901, 222917)},
    223100: (GroupNotFoundError, "group is not exist"),
    223101: (GroupExistsError, "group is already exist"),
    223102: (UserExistsError, "user is already exist"),
    223103: (UserNotFoundError, "user is not exist"),
    223104: (InvalidInputError, "group_list is too large"),
    223105: (FaceExistsError, "face is already exist"),
    223106: (FaceNotFoundError, "face is not exist"),
    223110: (InvalidInputError, "uid_list is too large"),
    223111: (GroupNotFoundError, "dst group is not exist"),
    223112: (InvalidInputError, "quality_conf format error"),
    223113: (ImageRejectedError, "face is covered"),
    223114: (ImageRejectedError, "face is fuzzy"),
    223115: (ImageRejectedError, "face light is not good"),
    223116: (ImageRejectedError, "incomplete face"),
    223117: (InvalidInputError, "app_list is too large"),
    223118: (InvalidInputError, "quality control error"),
    223119: (InvalidInputError, "liveness control item error"),
    223120: (ImageRejectedError, "liveness check fail"),
    223121: (ImageRejectedError, "left eye is occlusion"),
    223122: (ImageRejectedError, "right eye is occlusion"),
    223123: (ImageRejectedError, "left cheek is occlusion"),
    223124: (ImageRejectedError, "right cheek is occlusion"),
    223125: (ImageRejectedError, "chin contour is occlusion"),
    223126: (ImageRejectedError, "nose is occlusion"),
    223127: (ImageRejectedError, "mouth is occlusion"),
}

# Cases the contract documents but Baidu publishes no code for: the codes the local library answers with
# (ASSUMPTION each; `facesync doctor` observes the real ones on a user's own app).
ACTION_TYPE_CODE = 222001  # an action_type other than APPEND/REPLACE (add) or UPDATE/REPLACE (update)
FACE_CAP_CODE = 222208  # a user already has the most faces allowed in a group: "the number of image is incorrect"
FACE_ON_OTHER_USER_CODE = 223105  # harsh: the face is already on another user of the group
GROUP_BEING_DELETED_ADD_CODE = 223100  # a face added to a group id still being deleted in the background
GROUP_BEING_DELETED_RECREATE_CODE = 222901  # group/add of that id, lenient: "system busy", retry later
GROUP_BEING_DELETED_RECREATE_HARSH_CODE = 223101  # harsh: "already exists", though no read shows the group

# What a user can do about the codes met most often; shown under the error.
HINTS: dict[int, str] = {
    6: "the app has no permission for Face V3: enable the face service for this app, and use V3 keys",
    17: "the app's daily request quota is used up: wait until tomorrow or raise the quota in the console",
    18: "above the app's QPS: lower --qps (a free-tier app allows 2)",
    19: "the app's total request quota is used up: buy more in the console",
    110: "the access token is no longer valid: check BAIDU_API_KEY and BAIDU_SECRET_KEY",
    111: "the access token expired: facesync renews it once; if this persists check the system clock",
    222202: "the image shows no face Baidu can find: use a clearer, frontal photo",
    223105: "this face is already on this user",
    223120: "the liveness check refused the photo: use a live photo, or lower liveness_control",
}


def kind_of(error_code: int) -> type[FaceApiError]:
    """The kind of error ``error_code`` is, for a code kept in a record (a report) rather than raised:
    ``issubclass(kind_of(code), AuthError)``; unknown codes are a plain ``FaceApiError``."""
    return ERROR_CODES.get(error_code, (FaceApiError, ""))[0]


def error_for(error_code: int, error_msg: str | None = None, log_id: int | None = None) -> FaceApiError:
    """The typed error for ``error_code``; unknown codes are kept as a plain ``FaceApiError``."""
    kind, default_msg = ERROR_CODES.get(error_code, (FaceApiError, "unknown error code"))
    return kind(error_code, error_msg or default_msg, log_id, hint=HINTS.get(error_code))


def message_for(error_code: int, **params: str) -> str:
    """Baidu's error_msg for ``error_code`` (used by the local library and the emulator)."""
    msg = ERROR_CODES[error_code][1]
    return msg.format(**params) if params else msg
