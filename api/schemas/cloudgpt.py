"""Answers of the account routes (api-reference 001's key management, and the users and
sessions behind it): keys, users, sign-in. The request bodies of the routes that read their
fields from JSON or a form (`_fields` in api/dialects/users.py) are here too."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from msgspec import UNSET, Meta, UnsetType

from api.schemas.discovery import ProviderState  # the overview shows what the discovery routes do
from storage.keys import KeyLimits
from storage.users import MAX_PASSWORD, MIN_PASSWORD


class Key(msgspec.Struct):
    """A key as listed: never its secret. Times are Unix seconds."""

    id: str
    name: str
    prefix: str
    created: int | None
    lastUsed: int | None  # noqa: N815 (api-reference 001 spells it so)
    status: Literal["active", "expired", "revoked"]
    expires_at: int | None
    limits: KeyLimits
    credits: int | None  # null: the key is not credit-metered
    models: list[str] | None  # null: every model
    allow_upstream_override: bool
    webhook_url: str | None


class NewKey(Key, kw_only=True):
    """A key just made: its secret (`key`) and webhook signing secret, shown this once."""

    key: str
    webhook_secret: str


class KeyList(msgspec.Struct):
    data: list[Key]


class KeyDeleted(msgspec.Struct):
    deleted: bool
    id: str


class CreditsAdded(msgspec.Struct):
    id: str
    added: int
    credits: int


class WebhookSecret(msgspec.Struct):
    id: str
    webhook_secret: str


class User(msgspec.Struct):
    id: str
    email: str
    role: str
    created: int
    disabled: bool


class UserList(msgspec.Struct):
    data: list[User]


class SignedIn(msgspec.Struct):
    """A session started: its cookie is in `Set-Cookie`; `csrf_token` goes in `X-CSRF-Token`
    on every state-changing request made with that cookie."""

    user: User
    csrf_token: str


class SignedOut(msgspec.Struct):
    signed_out: bool


class Usage(msgspec.Struct):
    requests: int
    tokens: int
    credits: int


class Me(msgspec.Struct):
    """The user, the session's CSRF token (null when called with an API key) and what their
    keys add up to."""

    user: User
    csrf_token: str | None
    keys: int
    credits: int | None  # null: none of their keys is credit-metered
    usage: Usage


class Invite(msgspec.Struct):
    code: str


Email = Annotated[str, Meta(max_length=320, description="an email address")]
Password = Annotated[str, Meta(min_length=MIN_PASSWORD, max_length=MAX_PASSWORD)]
NextPath = Annotated[str, Meta(description="a form's page to go to after (303); a path on this site")]


class SignUp(msgspec.Struct, forbid_unknown_fields=True):
    email: Email
    password: Password
    invite: str | UnsetType = UNSET  # required when SWITCHYARD_SIGNUP=invite
    next: NextPath | UnsetType = UNSET


class SignIn(msgspec.Struct, forbid_unknown_fields=True):
    email: Email
    password: Annotated[str, Meta(max_length=MAX_PASSWORD)]
    next: NextPath | UnsetType = UNSET


class UserCreate(msgspec.Struct, forbid_unknown_fields=True):
    email: Email
    password: Password
    role: Literal["admin", "user"] = "user"


class Model(msgspec.Struct):
    id: str
    name: str
    provider: str
    description: str
    context_window: int | UnsetType = UNSET
    maxDuration: float | None | UnsetType = UNSET  # noqa: N815 (video models, 001's spelling)


class ModelList(msgspec.Struct):
    object: Literal["list"]
    data: list[Model]


# --- the admin overview (GET /api/admin/overview: what /admin shows) -----------------------------
class QueueDepth(msgspec.Struct):
    queue: str
    waiting: int
    running: int
    oldest_age_s: float | None


class Worker(msgspec.Struct):
    """A worker seen lately, with what it last wrote of itself (missing until it has)."""

    id: str
    seen_s_ago: float
    host: str | UnsetType = UNSET
    pid: int | UnsetType = UNSET
    queues: str | UnsetType = UNSET  # comma-separated
    running: int | UnsetType = UNSET
    jobs_complete: int | UnsetType = UNSET
    jobs_failed: int | UnsetType = UNSET
    jobs_retried: int | UnsetType = UNSET
    started_ms: int | None | UnsetType = UNSET


class PersistBacklog(msgspec.Struct):
    set: str
    jobs: int
    oldest_age_s: float | None


class FailureError(msgspec.Struct):
    type: str | None
    message: str | None


class Failure(msgspec.Struct):
    id: str
    kind: str
    model: str | None
    key_id: str
    error: FailureError
    finished_at: str | None


class UserKey(msgspec.Struct):
    id: str
    name: str
    prefix: str
    status: Literal["active", "expired", "revoked"]
    credits: int | None
    lastUsed: int | None  # noqa: N815 (as in the key list)


class UserCredits(User, kw_only=True):
    credits: int | None  # what their live metered keys have left; null: none is metered
    keys: list[UserKey]


class AdminOverview(msgspec.Struct):
    generated_at: str | None
    queues: list[QueueDepth]
    workers: list[Worker]
    persist: list[PersistBacklog]
    dead_letters: int
    providers: dict[str, ProviderState]
    recent_failures: list[Failure]
    users: list[UserCredits]
